//! kfunc pass: extern functions that the runtime resolves through BTF (coverage §2; contract §5.3).
//!
//! In: the parsed object. Out: the module's kfunc table — each extern `FUNC` (linkage extern) that DATASEC
//! `.ksyms` lists or that carries a top-level `btf_decl_tag("module_id:{GUID}")`, numbered 1..n in ascending
//! BTF type id (the Windows verifier's `cache_btf_resolved_functions` numbering). The program pass rewrites a
//! `call` relocated against such a symbol into `call src=2, imm=<id>` (PREVAIL's `rewrite_extern_kfunc_call`).
//!
//! Refusals name the function: a module_id tag that is not a GUID, two different GUIDs on one function, one
//! name under two GUIDs.

use std::collections::{BTreeMap, HashMap, HashSet};

use object::elf;

use super::btf::{BtfKind, FUNC_LINKAGE_EXTERN};
use super::{ElfError, Object};
use crate::platform::Guid;
use crate::program::Kfunc;

/// Prefix of the declaration tag that names a kfunc's provider module.
const MODULE_ID_TAG: &str = "module_id:";

/// A kfunc as the program pass needs it.
pub(crate) struct DeclaredKfunc {
    pub kfunc: Kfunc,
}

fn kfunc_error(name: &str, what: String) -> ElfError {
    ElfError::Symbol { symbol: name.to_string(), what: format!("kfunc: {what}") }
}

/// The module's kfuncs, by ascending BTF type id.
pub(crate) fn discover(object: &Object) -> Result<Vec<DeclaredKfunc>, ElfError> {
    let Some(btf) = &object.btf else { return Ok(Vec::new()) };
    // FUNC type id → GUIDs named by its top-level module_id tags.
    let mut tags: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut in_ksyms: Vec<u32> = Vec::new();
    for (_, t) in btf.types() {
        match t.kind {
            // component_idx -1: the tag applies to the declaration itself, not to a parameter.
            BtfKind::DeclTag if t.extra == u32::MAX => {
                let text = btf.name(t.name_offset);
                if let Some(rest) = text.strip_prefix(MODULE_ID_TAG) {
                    tags.entry(t.size_or_type).or_default().push(rest.to_string());
                }
            }
            BtfKind::DataSec if btf.str_bytes(t.name_offset)? == b".ksyms" => {
                in_ksyms.extend(t.sec_infos.iter().map(|i| i.type_id));
            }
            _ => {}
        }
    }
    let mut candidates: Vec<u32> = tags.keys().copied().chain(in_ksyms).collect();
    candidates.sort_unstable();
    candidates.dedup();
    let weak_externs: HashSet<&str> =
        object.symbols.iter().filter(|s| s.section.is_none() && s.binding == elf::STB_WEAK).map(|s| s.name).collect();
    let mut out = Vec::new();
    let mut guid_of_name: HashMap<String, Option<Guid>> = HashMap::new();
    for type_id in candidates {
        let t = btf.get(type_id)?;
        if t.kind != BtfKind::Func || t.vlen != FUNC_LINKAGE_EXTERN {
            // `.ksyms` also lists extern variables (`__ksym` data), and tags may sit on other declarations.
            continue;
        }
        let name = btf.name(t.name_offset).into_owned();
        let mut module_guid: Option<Guid> = None;
        for text in tags.get(&type_id).into_iter().flatten() {
            // The runtime drops the first and last character (the braces) before `UuidFromString`.
            let inner = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or("");
            let guid = Guid::parse(inner)
                .ok_or_else(|| kfunc_error(&name, format!("tag '{MODULE_ID_TAG}{text}' does not hold a {{GUID}}")))?;
            match module_guid {
                Some(old) if old != guid => {
                    return Err(kfunc_error(&name, format!("tagged with two module ids, {old} and {guid}")))
                }
                _ => module_guid = Some(guid),
            }
        }
        if let Some(old) = guid_of_name.insert(name.clone(), module_guid) {
            if old != module_guid {
                return Err(kfunc_error(&name, "declared for two different modules".into()));
            }
            continue;
        }
        let weak = weak_externs.contains(name.as_str());
        out.push(DeclaredKfunc { kfunc: Kfunc { id: out.len() as u32 + 1, name, module_guid, weak } });
    }
    Ok(out)
}
