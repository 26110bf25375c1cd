//! PE section names for program code (native-module-contract.md §4.1).
//!
//! bpf2c puts each entry program in a code section named after its ELF section; PE names hold at most 8 bytes,
//! so a longer ELF name becomes `<prefix>~<n>`, the prefix `8 - 2 - floor(log10(n))` characters long and `n` a
//! per-file counter over the distinct long names (`sample_ext` → `sample~1`). User mode matches programs to code
//! by this name (§4.3 pass 3), so programs sharing an ELF section share a PE section.

/// The PE section name of each ELF section name in `section_names`, in the same order.
pub fn pe_section_names<'a>(section_names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut assigned: Vec<(String, String)> = Vec::new();
    let mut counter = 0u32;
    let mut out = Vec::new();
    for elf in section_names {
        if let Some((_, pe)) = assigned.iter().find(|(e, _)| e == elf) {
            out.push(pe.clone());
            continue;
        }
        let pe = if elf.len() <= 8 {
            elf.to_string()
        } else {
            counter += 1;
            let digits = counter.ilog10() as usize;
            let prefix_len = 8 - 2 - digits;
            let prefix: String = elf.chars().take(prefix_len).collect();
            format!("{prefix}~{counter}")
        };
        assigned.push((elf.to_string(), pe.clone()));
        out.push(pe);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_and_long_names_are_numbered() {
        let names = pe_section_names(["xdp", "sample_ext", "cgroup/connect4", "bind/1", "sample_ext"]);
        assert_eq!(names, ["xdp", "sample~1", "cgroup~2", "bind/1", "sample~1"]);
    }

    #[test]
    fn the_prefix_shrinks_when_the_counter_gains_digits() {
        let long: Vec<String> = (0..12).map(|i| format!("cgroup/connect{i:02}")).collect();
        let names = pe_section_names(long.iter().map(String::as_str));
        assert_eq!(names[8], "cgroup~9");
        assert_eq!(names[9], "cgrou~10");
        assert!(names.iter().all(|n| n.len() <= 8));
    }
}
