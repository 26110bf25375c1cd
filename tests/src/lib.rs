//! Integration-test support: the bpf_conformance runner and the PREVAIL suite runner.
pub mod conformance;
pub mod prevail;
pub mod soundness;
