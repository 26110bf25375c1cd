//! Signature lint rules S1–S7 of driver-image-and-signing.md §5.2, for `bpf2sys check`.
//!
//! Input: the bytes of a (signed) driver image. Output: one [`RuleOutcome`] per rule. The checks are those of
//! [`crate::verify::verify_pe`] without trust anchors (a lint cannot know which root the user trusts); each
//! problem it finds is attributed to its rule.

use crate::verify::{verify_pe, Rule, VerifyOptions};

/// Verdict of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleStatus {
    Pass,
    /// The rule holds but something deserves attention.
    Warn(Vec<String>),
    Fail(Vec<String>),
    /// The rule could not be evaluated (e.g. the image is unsigned); the string says why.
    NotApplicable(String),
}

/// One rule's identifier, summary and verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOutcome {
    /// One of [`Rule::S1`]..[`Rule::S7`].
    pub rule: Rule,
    pub summary: &'static str,
    pub status: RuleStatus,
}

const RULES: [(Rule, &str); 7] = [
    (Rule::S1, "certificate table: 8-aligned at EOF, one WIN_CERTIFICATE rev 2.0 PKCS#7, size consistent"),
    (Rule::S2, "content is SpcIndirectDataContent/SpcPeImageData and its digest equals the image hash"),
    (Rule::S3, "contentType present and messageDigest equals the hash of SpcIndirectDataContent"),
    (Rule::S4, "RSA signer key (2048-4096 bits), SHA-256 digests, signature verifies"),
    (Rule::S5, "page hashes, if present, recompute (V2/SHA-256)"),
    (Rule::S6, "signer chain included in the signature; leaf has the Code Signing EKU"),
    (Rule::S7, "file checksum recomputed after signing"),
];

/// True when the image carries a certificate table (S1–S6 apply only then).
pub fn is_signed(pe_bytes: &[u8]) -> bool {
    crate::pe::PeLayout::parse(pe_bytes).is_ok_and(|layout| layout.is_signed())
}

/// Evaluates S1–S7 on a PE image. On an unsigned image S1–S6 are [`RuleStatus::NotApplicable`] and only S7
/// (the checksum) is evaluated.
pub fn check(pe_bytes: &[u8]) -> Vec<RuleOutcome> {
    let report = verify_pe(pe_bytes, &VerifyOptions::default());
    let structure: Vec<String> =
        report.problems.iter().filter(|p| p.rule == Rule::Structure).map(|p| p.message.clone()).collect();
    RULES
        .iter()
        .map(|&(rule, summary)| {
            let failures: Vec<String> = report
                .problems
                .iter()
                .filter(|p| p.rule == rule && (report.signed || rule == Rule::S7))
                .map(|p| p.message.clone())
                .collect();
            let warnings: Vec<String> =
                report.warnings.iter().filter(|(r, _)| *r == rule).map(|(_, m)| m.clone()).collect();
            let status = if !structure.is_empty() {
                RuleStatus::NotApplicable(format!("PE headers do not parse: {}", structure.join("; ")))
            } else if !failures.is_empty() {
                RuleStatus::Fail(failures)
            } else if !report.signed && rule != Rule::S7 {
                // An unsigned image has no certificate table to lint; that it will not load on Windows is
                // reported by the caller (`bpf2sys check`), which knows whether unsigned output was asked for.
                RuleStatus::NotApplicable("the image is not signed".into())
            } else if rule == Rule::S5 && report.page_hash_entries.is_none() {
                RuleStatus::NotApplicable("the signature carries no page hashes".into())
            } else if !warnings.is_empty() {
                RuleStatus::Warn(warnings)
            } else {
                RuleStatus::Pass
            };
            RuleOutcome { rule, summary, status }
        })
        .collect()
}
