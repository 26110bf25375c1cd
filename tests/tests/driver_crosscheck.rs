//! Independent views of every sample driver agree with each other: llvm-readobj (when installed), goblin and
//! the `object` crate report the same imports, base relocations and unwind entries, and the emulator's loader
//! resolves exactly the imports the image declares.

use std::path::{Path, PathBuf};
use std::process::Command;

use bpf2sys::compiled::Target;
use bpf2sys::driver::{build_driver, default_runtime_version, SessionOptions};
use object::read::pe::PeFile64;
use object::LittleEndian as LE;

fn samples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("samples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    v.sort();
    v
}

fn build(object: &Path, target: Target) -> Vec<u8> {
    let bytes = std::fs::read(object).unwrap();
    let name = object.file_name().unwrap().to_string_lossy().into_owned();
    let runtime_version = default_runtime_version(&bytes, &name);
    build_driver(&bytes, &name, &SessionOptions { target, runtime_version, ..SessionOptions::default() }).unwrap()
}

/// `dll!name` imports, DIR64 relocation RVAs and `.pdata` start addresses as goblin sees them.
fn goblin_view(image: &[u8]) -> (Vec<String>, Vec<u32>, Vec<u32>) {
    let pe = goblin::pe::PE::parse(image).unwrap();
    let mut imports: Vec<String> = pe.imports.iter().map(|i| format!("{}!{}", i.dll, i.name)).collect();
    imports.sort();
    let mut relocs = Vec::new();
    if let Some(data) = &pe.relocation_data {
        for block in data.blocks() {
            let block = block.unwrap();
            for word in block.words() {
                let word = word.unwrap();
                if word.reloc_type() == 10 {
                    relocs.push(block.rva + word.offset() as u32);
                }
            }
        }
    }
    let mut starts = Vec::new();
    if let Some(ex) = &pe.exception_data {
        if pe.header.coff_header.machine == 0x8664 {
            starts.extend(ex.functions().map(|f| f.unwrap().begin_address));
        }
    }
    (imports, relocs, starts)
}

/// The same from the `object` crate.
fn object_view(image: &[u8]) -> (Vec<String>, Vec<u32>) {
    let file = PeFile64::parse(image).unwrap();
    let mut imports = Vec::new();
    let table = file.import_table().unwrap().unwrap();
    let mut descriptors = table.descriptors().unwrap();
    while let Some(d) = descriptors.next().unwrap() {
        let dll = String::from_utf8_lossy(table.name(d.name.get(LE)).unwrap()).into_owned();
        let mut thunks = table.thunks(d.original_first_thunk.get(LE)).unwrap();
        while let Some(t) = thunks.next::<object::pe::ImageNtHeaders64>().unwrap() {
            if let object::read::pe::Import::Name(_, name) = table.import::<object::pe::ImageNtHeaders64>(t).unwrap() {
                imports.push(format!("{dll}!{}", String::from_utf8_lossy(name)));
            }
        }
    }
    imports.sort();
    let sections = file.section_table();
    let mut relocs = Vec::new();
    let mut blocks = file.data_directories().relocation_blocks(image, &sections).unwrap().unwrap();
    while let Some(block) = blocks.next().unwrap() {
        relocs.extend(block.filter(|r| r.typ == 10).map(|r| r.virtual_address));
    }
    (imports, relocs)
}

fn llvm_readobj_view(path: &Path) -> Option<(Vec<String>, Vec<u32>, Vec<u32>)> {
    let out = Command::new("llvm-readobj")
        .args(["--coff-imports", "--coff-basereloc", "--unwind"])
        .arg(path)
        .output()
        .ok()?;
    assert!(out.status.success(), "llvm-readobj failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut imports = Vec::new();
    let mut relocs = Vec::new();
    let mut starts = Vec::new();
    let mut dll = String::new();
    let mut dir64 = false;
    let hex = |s: &str| {
        u64::from_str_radix(s.trim().trim_start_matches("(").trim_end_matches(")").trim_start_matches("0x"), 16)
            .unwrap()
    };
    for line in text.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("Name: ") {
            dll = n.to_string();
        } else if let Some(s) = line.strip_prefix("Symbol: ") {
            imports.push(format!("{dll}!{}", s.split(' ').next().unwrap()));
        } else if let Some(t) = line.strip_prefix("Type: ") {
            dir64 = t == "DIR64";
        } else if let Some(a) = line.strip_prefix("Address: ") {
            if dir64 {
                relocs.push(hex(a) as u32);
            }
        } else if let Some(a) = line.strip_prefix("StartAddress: ") {
            starts.push((hex(a) - 0x1_4000_0000) as u32);
        }
    }
    imports.sort();
    Some((imports, relocs, starts))
}

#[test]
fn goblin_object_and_llvm_readobj_agree_on_imports_relocations_and_unwind_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut llvm_checked = 0;
    for object in samples() {
        for target in [Target::X64, Target::Arm64] {
            let image = build(&object, target);
            let (g_imports, g_relocs, g_starts) = goblin_view(&image);
            let (o_imports, o_relocs) = object_view(&image);
            assert_eq!(g_imports, o_imports, "{object:?}");
            assert_eq!(g_relocs, o_relocs, "{object:?}");
            assert!(!g_relocs.is_empty(), "metadata pointers need base relocations");
            let path = dir.path().join("image.sys");
            std::fs::write(&path, &image).unwrap();
            if let Some((l_imports, l_relocs, l_starts)) = llvm_readobj_view(&path) {
                assert_eq!(l_imports, g_imports, "{object:?} {target:?}: imports");
                assert_eq!(l_relocs, g_relocs, "{object:?} {target:?}: base relocations");
                if target == Target::X64 {
                    assert_eq!(l_starts, g_starts, "{object:?}: unwind entries");
                }
                llvm_checked += 1;
            }
        }
    }
    if llvm_checked == 0 {
        eprintln!("llvm-readobj not installed: compared goblin and object only");
    }
}

#[test]
fn llvm_readobj_decodes_arm64_unwind_data_for_every_function() {
    let Ok(out) = Command::new("llvm-readobj").arg("--version").output() else {
        eprintln!("llvm-readobj not installed: skipped");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    for object in samples() {
        let image = build(&object, Target::Arm64);
        let path = dir.path().join("image.sys");
        std::fs::write(&path, &image).unwrap();
        let out = Command::new("llvm-readobj").arg("--unwind").arg(&path).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let pe = goblin::pe::PE::parse(&image).unwrap();
        let pdata = pe.header.optional_header.unwrap().data_directories.get_exception_table().unwrap().size / 8;
        assert_eq!(text.matches("RuntimeFunction {").count() as u32, pdata, "{object:?}");
        assert!(text.matches("0xe4                ; end").count() as u32 >= pdata, "{object:?}: every .xdata ends");
        assert!(!text.contains("error"), "{object:?}: {text}");
    }
}

/// ARM64 relocations (ADRP page + ADD low 12 bits) as llvm-objdump decodes them land on real symbols: every
/// IAT slot is addressed, and every computed address lies inside a section.
#[test]
fn llvm_objdump_sees_arm64_adrp_add_pairs_resolve_to_iat_slots_and_sections() {
    if Command::new("llvm-objdump").arg("--version").output().is_err() {
        eprintln!("llvm-objdump not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for object in samples() {
        let image = build(&object, Target::Arm64);
        let path = dir.path().join("image.sys");
        std::fs::write(&path, &image).unwrap();
        let out = Command::new("llvm-objdump").arg("-d").arg(&path).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        // Cranelift emits the pair back to back (`adrp xN, page; add xN, xN, #lo12`): pair only adjacent ones.
        let mut targets = std::collections::BTreeSet::new();
        let mut previous_adrp: Option<(String, u64)> = None;
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
            if fields.len() < 3 {
                continue;
            }
            let operands: Vec<&str> = fields[2].split(", ").collect();
            let adrp = previous_adrp.take();
            match fields[1] {
                "adrp" => {
                    let page = operands[1].split(' ').next().unwrap().trim_start_matches("0x");
                    previous_adrp = Some((operands[0].to_string(), u64::from_str_radix(page, 16).unwrap()));
                }
                "add" if operands.len() == 3 && operands[2].starts_with('#') => {
                    if let Some((_, page)) = adrp.filter(|(r, _)| r == operands[0] && r == operands[1]) {
                        let imm: u64 = operands[2].trim_start_matches('#').parse().unwrap();
                        targets.insert((page + imm - 0x1_4000_0000) as u32);
                    }
                }
                _ => {}
            }
        }
        let pe = goblin::pe::PE::parse(&image).unwrap();
        for import in &pe.imports {
            // goblin: `offset` is the IAT slot's RVA.
            assert!(
                targets.contains(&(import.offset as u32)),
                "{object:?}: IAT slot of {} is never addressed",
                import.name
            );
        }
        for t in &targets {
            assert!(
                pe.sections.iter().any(|s| *t >= s.virtual_address && *t < s.virtual_address + s.virtual_size),
                "{object:?}: ADRP/ADD target {t:#x} is outside every section"
            );
        }
    }
}
