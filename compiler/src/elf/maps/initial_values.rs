//! Initial values of map-in-maps and program arrays (contract §6, coverage §4.5, §5): which map or program each
//! slot holds when the runtime creates the map.

use std::collections::{HashMap, HashSet};

use super::{map_error, MapLayout, ValuesOf};
use crate::elf::{ElfError, Object, ObjectConventions, R_BPF_64_64, R_BPF_64_ABS64};
use crate::program::{MapInitialValues, Program};

/// The initial values of map-in-maps and program arrays: BTF `values` initialisers, then iproute2's slot placement.
pub(crate) fn initial_values(
    object: &Object,
    layout: &MapLayout,
    programs: &[Program],
    conventions: ObjectConventions,
) -> Result<Vec<MapInitialValues>, ElfError> {
    let mut out = btf_initial_values(object, layout, programs)?;
    place_inner_maps_by_slot(layout, conventions, &mut out)?;
    Ok(out)
}

/// iproute2's slot placement (`bpf_elf_map.inner_idx`, coverage §5): a map with `id` ≠ 0 and `inner_idx` ≠ −1 is
/// the initial value of slot `inner_idx` of every map-in-map whose `inner_id` is that `id` (iproute2 inserts it
/// with a `u32` key after creating both maps).
fn place_inner_maps_by_slot(
    layout: &MapLayout,
    conventions: ObjectConventions,
    out: &mut Vec<MapInitialValues>,
) -> Result<(), ElfError> {
    for record in &layout.legacy_records {
        let Some(slot) = record.inner_slot else { continue };
        let inner = &layout.maps[record.map_index];
        for (outer_index, outer) in layout.maps.iter().enumerate() {
            let names_it = outer.inner_id == inner.id && conventions.is_map_of_maps(outer.map_type);
            if outer_index == record.map_index || !names_it {
                continue;
            }
            let bad = |what: String| map_error(&outer.name, what);
            if outer.key_size != 4 {
                return Err(bad(format!(
                    "map '{}' goes into slot {slot} (its inner_idx), which needs 4-byte keys, not {}",
                    inner.name, outer.key_size
                )));
            }
            if slot >= outer.max_entries {
                return Err(bad(format!(
                    "map '{}' goes into slot {slot} (its inner_idx), past max_entries {}",
                    inner.name, outer.max_entries
                )));
            }
            let init = match out.iter().position(|v| v.map_index == outer_index) {
                Some(i) => &mut out[i],
                None => {
                    out.push(MapInitialValues { map_index: outer_index, values: Vec::new() });
                    out.last_mut().expect("just pushed")
                }
            };
            let slot = slot as usize;
            if init.values.len() <= slot {
                init.values.resize(slot + 1, None);
            }
            if let Some(other) = &init.values[slot] {
                return Err(bad(format!("slot {slot} is claimed by both '{other}' and '{}' (inner_idx)", inner.name)));
            }
            init.values[slot] = Some(inner.name.clone());
        }
    }
    Ok(())
}

/// `values` initialisers from `.rel.maps` (contract §6): slot `i` of the map's `values` array names a map (map-in-map)
/// or a program (program array).
fn btf_initial_values(
    object: &Object,
    layout: &MapLayout,
    programs: &[Program],
) -> Result<Vec<MapInitialValues>, ElfError> {
    let Some(section) = layout.maps_section else { return Ok(Vec::new()) };
    let mut out: Vec<MapInitialValues> = Vec::new();
    let program_names: HashSet<&str> = programs.iter().map(|p| p.name.as_str()).collect();
    // Map index → index in `out`.
    let mut init_of: HashMap<usize, usize> = HashMap::new();
    for m in &layout.btf_maps {
        if let Some((values_offset, _)) = m.values {
            let def = &layout.maps[m.map_index];
            // Without an initialiser the symbol ends at `values`, which only declares the inner type: any key
            // size then (libbpf needs 4-byte keys only for maps with slots, coverage §4.5).
            let count = m.size.saturating_sub(values_offset) / 8;
            if count == 0 {
                continue;
            }
            if def.key_size != 4 {
                return Err(map_error(
                    &def.name,
                    format!("a map with 'values' initialisers needs 4-byte keys, not {}", def.key_size),
                ));
            }
            if count > u64::from(def.max_entries) {
                return Err(map_error(
                    &def.name,
                    format!("{count} initial values exceed max_entries {}", def.max_entries),
                ));
            }
            init_of.insert(m.map_index, out.len());
            out.push(MapInitialValues { map_index: m.map_index, values: vec![None; count as usize] });
        }
    }
    for reloc in &object.relocations[section] {
        let err = |what: String| ElfError::Relocation { section: ".maps".into(), offset: reloc.offset, what };
        let Some(m) = layout.btf_map_containing(reloc.offset) else {
            return Err(err("relocation lies outside every map definition".into()));
        };
        let def = &layout.maps[m.map_index];
        let Some((values_offset, values_of)) = m.values else {
            return Err(err(format!("relocation inside map '{}', which has no 'values' member", def.name)));
        };
        let rel = reloc.offset - m.offset;
        if rel < values_offset || (rel - values_offset) % 8 != 0 {
            return Err(err(format!("relocation inside map '{}' is not on a 'values' slot", def.name)));
        }
        // Clang before LLVM 13 writes 64-bit data relocations as R_BPF_64_64, later ones as R_BPF_64_ABS64
        // (coverage §4.2); libbpf accepts either in `.maps`.
        if !matches!(reloc.kind, R_BPF_64_ABS64 | R_BPF_64_64) {
            return Err(err(format!(
                "'values' relocation has type {}, expected R_BPF_64_ABS64 (2) or R_BPF_64_64 (1)",
                reloc.kind
            )));
        }
        let slot = ((rel - values_offset) / 8) as usize;
        let symbol = object.symbol(reloc.symbol, ".maps", reloc.offset)?;
        let value = match values_of {
            ValuesOf::Maps => {
                let target = (symbol.section == Some(section))
                    .then(|| layout.btf_map_by_offset(symbol.value))
                    .flatten()
                    .ok_or_else(|| {
                        err(format!("'{}' in the values of map '{}' is not a map", symbol.name, def.name))
                    })?;
                layout.maps[target.map_index].name.clone()
            }
            ValuesOf::Programs => {
                let is_program = symbol.starts_function()
                    && program_names.contains(symbol.name)
                    && symbol.section.and_then(|s| object.sections.get(s)).is_some_and(|s| s.is_executable());
                if !is_program {
                    return Err(err(format!("'{}' in the values of map '{}' is not a program", symbol.name, def.name)));
                }
                symbol.name.to_string()
            }
        };
        let Some(init) = init_of.get(&m.map_index).map(|&i| &mut out[i]) else {
            return Err(err(format!("map '{}' has no initial values", def.name)));
        };
        match init.values.get_mut(slot) {
            Some(v) => *v = Some(value),
            None => return Err(err(format!("'values' slot {slot} of map '{}' is past its end", def.name))),
        }
    }
    out.retain(|v| !v.values.is_empty());
    Ok(out)
}
