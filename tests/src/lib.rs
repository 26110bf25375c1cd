//! placeholder crate root (filled by its stage)
pub mod conformance;
pub mod generate;
pub mod native;
