//! Static lint of a driver image: the HVCI rules H1–H7 and the PE-structure rules P1–P11 of
//! driver-image-and-signing.md §5.2.
//!
//! In: the bytes of a `.sys`. Out: a [`LintReport`] with one [`RuleResult`] per rule (pass, or the findings that
//! break it). The image is parsed here with a deliberately small, bounds-checked reader rather than a PE crate,
//! so that a broken image fails the rule it breaks instead of failing to parse.
//!
//! The rule list is data ([`RULES`]; the checks are in `hvci` (H1–H7) and `structure` (P1–P11), over the
//! bounds-checked reader in `pe_view`). [`lint_driver`] is the whole lint as `bpf2sys check` and `build` apply it:
//! it refuses a file that is not a PE32+ image at all, then adds the signature rules S1–S7 of the signing crate,
//! whose verification runs once for all seven. Every rule is named by one [`RuleId`].

mod hvci;
mod pe_view;
mod structure;

use hvci::{h1, h2, h3, h4, h5, h6, h7};
use pe_view::Image;
use structure::{p1, p10, p11, p2, p3, p4, p5, p6, p7, p8, p9};

/// Import modules a kernel driver may use (rule P9).
pub const ALLOWED_IMPORT_MODULES: &[&str] = &["ntoskrnl.exe", "NETIO.SYS", "HAL.dll"];

/// Kernel functions bpf2sys drivers are allowed to import (rule H7). Everything the runtime shim calls is here;
/// none of them allocates or maps executable memory (implement-hvci-compatible-code.md's DDI list).
pub const ALLOWED_IMPORTS: &[&str] = &[
    "RtlQueryRegistryValues",
    "memcpy",
    "memset",
    "memmove",
    "NmrRegisterClient",
    "NmrDeregisterClient",
    "NmrWaitForClientDeregisterComplete",
    "NmrClientAttachProvider",
];

/// The identifier of a lint rule of driver-image-and-signing.md §5.2: HVCI (H), PE structure (P), signature (S).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleId {
    H1,
    H2,
    H3,
    H4,
    H5,
    H6,
    H7,
    P1,
    P2,
    P3,
    P4,
    P5,
    P6,
    P7,
    P8,
    P9,
    P10,
    P11,
    S1,
    S2,
    S3,
    S4,
    S5,
    S6,
    S7,
}

impl RuleId {
    /// The rule id of a signature rule of the signing crate; None for its non-lint categories (chain trust,
    /// timestamp, structure), which `check` does not report as rules.
    pub fn from_signature_rule(rule: bpf2sys_signing::verify::Rule) -> Option<RuleId> {
        use bpf2sys_signing::verify::Rule;
        Some(match rule {
            Rule::S1 => RuleId::S1,
            Rule::S2 => RuleId::S2,
            Rule::S3 => RuleId::S3,
            Rule::S4 => RuleId::S4,
            Rule::S5 => RuleId::S5,
            Rule::S6 => RuleId::S6,
            Rule::S7 => RuleId::S7,
            _ => return None,
        })
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Padding applies to the name ("{:<4}" in the report).
        f.pad(&format!("{self:?}"))
    }
}

impl PartialEq<&str> for RuleId {
    fn eq(&self, other: &&str) -> bool {
        format!("{self:?}") == *other
    }
}

/// One lint rule.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub id: RuleId,
    pub title: &'static str,
    check: fn(&Image) -> Vec<String>,
}

/// The built-in rules, in report order.
pub static RULES: &[Rule] = &[
    Rule { id: RuleId::H1, title: "no section is both writable and executable", check: h1 },
    Rule { id: RuleId::H2, title: "section alignment and section addresses are page multiples", check: h2 },
    Rule { id: RuleId::H3, title: "the import address table is not in an executable section", check: h3 },
    Rule { id: RuleId::H4, title: "no base relocation crosses a 4 KiB page", check: h4 },
    Rule { id: RuleId::H5, title: "NX_COMPAT is set", check: h5 },
    Rule { id: RuleId::H6, title: "discardable code sections (INIT) are not writable", check: h6 },
    Rule { id: RuleId::H7, title: "imports are limited to an allow-list (no executable-memory DDIs)", check: h7 },
    Rule { id: RuleId::P1, title: "machine, magic and file characteristics are those of a driver", check: p1 },
    Rule {
        id: RuleId::P2,
        title: "subsystem NATIVE, DYNAMIC_BASE, and a valid .reloc with DIR64 entries only",
        check: p2,
    },
    Rule { id: RuleId::P3, title: "section table, alignments and header sizes are consistent", check: p3 },
    Rule { id: RuleId::P4, title: "every section is readable, typed, and non-paged unless PAGE*", check: p4 },
    Rule { id: RuleId::P5, title: "with FORCE_INTEGRITY, uninitialized sections have no raw data", check: p5 },
    Rule { id: RuleId::P6, title: "the entry point lies in an executable section", check: p6 },
    Rule { id: RuleId::P7, title: ".pdata is sorted, inside code, with well-formed unwind data", check: p7 },
    Rule {
        id: RuleId::P8,
        title: "GUARD_CF only with a load-config function table; cookie in writable data",
        check: p8,
    },
    Rule { id: RuleId::P9, title: "imports only from kernel modules; no delay-load or TLS directory", check: p9 },
    Rule { id: RuleId::P10, title: "linker version ≥ 14 and no TERMINAL_SERVER_AWARE", check: p10 },
    Rule { id: RuleId::P11, title: "the CheckSum field equals the recomputed checksum", check: p11 },
];

/// The outcome of one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleResult {
    pub id: RuleId,
    pub title: &'static str,
    /// Empty when the rule passes.
    pub findings: Vec<String>,
}

/// The outcome of all rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LintReport {
    pub results: Vec<RuleResult>,
}

impl LintReport {
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.findings.is_empty())
    }

    /// Ids of the failing rules.
    pub fn failed_rules(&self) -> Vec<RuleId> {
        self.results.iter().filter(|r| !r.findings.is_empty()).map(|r| r.id).collect()
    }
}

impl std::fmt::Display for LintReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.results {
            if r.findings.is_empty() {
                writeln!(f, "{:<4} pass  {}", r.id, r.title)?;
            } else {
                writeln!(f, "{:<4} FAIL  {}", r.id, r.title)?;
                for finding in &r.findings {
                    writeln!(f, "            {finding}")?;
                }
            }
        }
        let failed = self.failed_rules();
        if failed.is_empty() {
            write!(f, "all {} rules pass", self.results.len())
        } else {
            let names: Vec<String> = failed.iter().map(RuleId::to_string).collect();
            write!(f, "{} of {} rules fail: {}", failed.len(), self.results.len(), names.join(", "))
        }
    }
}

/// The file is not a PE32+ image at all, so no rule can be evaluated.
#[derive(Debug, thiserror::Error)]
#[error("not a PE32+ image: {0}")]
pub struct NotAnImage(String);

/// The whole lint: the PE headers must parse, then H1–H7, P1–P11 and S1–S7 (the signature is verified once).
pub fn lint_driver(bytes: &[u8]) -> Result<LintReport, NotAnImage> {
    let image = Image::parse(bytes).map_err(NotAnImage)?;
    let mut results: Vec<RuleResult> = RULES
        .iter()
        .map(|rule| RuleResult { id: rule.id, title: rule.title, findings: (rule.check)(&image) })
        .collect();
    for outcome in bpf2sys_signing::lint::check(bytes) {
        let Some(id) = RuleId::from_signature_rule(outcome.rule) else { continue };
        let findings = match outcome.status {
            bpf2sys_signing::lint::RuleStatus::Fail(messages) => messages,
            _ => Vec::new(),
        };
        results.push(RuleResult { id, title: outcome.summary, findings });
    }
    Ok(LintReport { results })
}

/// Runs the built-in rules H1–H7 and P1–P11; an image whose headers do not parse fails P1 and P3.
pub fn lint_image(bytes: &[u8]) -> LintReport {
    let results = match Image::parse(bytes) {
        Ok(image) => RULES
            .iter()
            .map(|rule| RuleResult { id: rule.id, title: rule.title, findings: (rule.check)(&image) })
            .collect(),
        // Nothing else can be checked without headers: report it under the structure rules.
        Err(e) => RULES
            .iter()
            .map(|rule| {
                let findings = if matches!(rule.id, RuleId::P1 | RuleId::P3) {
                    vec![format!("cannot parse headers: {e}")]
                } else {
                    vec![]
                };
                RuleResult { id: rule.id, title: rule.title, findings }
            })
            .collect(),
    };
    LintReport { results }
}
