//! Integration-test support: the PREVAIL suite runner.

pub mod prevail;
