//! placeholder crate root (filled by its stage)

pub mod native;
