//! placeholder crate root (filled by its stage)
