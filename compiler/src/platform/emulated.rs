//! The platform as the emulated eBPF for Windows runtime sees it: the extensions' registrations (program types,
//! helper and BTF-resolved function prototypes, contract §3.2) the emulator hashes and binds against, taken from
//! the platform tables.

use bpf2sys_emulator::{Extensions, Guid as EmulatorGuid, ProgramTypeInfo, PrototypeInfo};

use super::{Guid, HelperPrototype, Platform};

/// A platform's tables, offered to the emulated runtime as its loaded extensions.
#[derive(Clone, Copy, Debug)]
pub struct PlatformExtensions(pub &'static Platform);

fn guid(g: &EmulatorGuid) -> Guid {
    Guid::from_bytes(&g.to_bytes())
}

fn prototype(h: &HelperPrototype) -> PrototypeInfo {
    PrototypeInfo {
        name: h.name.to_string(),
        ret: h.ret as u32,
        args: h.args.map(|a| a as u32),
        reallocate_packet: h.reallocate_packet,
    }
}

impl Extensions for PlatformExtensions {
    fn program_type(&self, g: &EmulatorGuid) -> Option<ProgramTypeInfo> {
        let pt = self.0.program_types.iter().find(|t| t.guid == guid(g))?;
        let c = pt.context;
        Some(ProgramTypeInfo {
            name: pt.name.to_string(),
            guid: *g,
            context: [c.size, c.data, c.end, c.meta],
            bpf_prog_type: pt.bpf_prog_type,
            is_privileged: pt.is_privileged,
        })
    }

    fn helper(&self, program_type: &EmulatorGuid, id: u32) -> Option<PrototypeInfo> {
        let pt = self.0.program_types.iter().find(|t| t.guid == guid(program_type))?;
        self.0.helper(pt, id).map(prototype)
    }

    fn kfunc(&self, module: &EmulatorGuid, name: &str) -> Option<PrototypeInfo> {
        self.0.kfunc(guid(module), name).map(|k| prototype(&k.proto))
    }
}

#[cfg(all(test, target_arch = "x86_64", unix))]
mod tests {
    use bpf2sys_emulator::helpers::{host_helper, why_unimplemented};

    use crate::platform::windows::{MAP_TYPES, WINDOWS};

    /// Every helper a program of each Windows program type may call (the general ones and its extension's)
    /// has a host implementation in the emulator, but `bpf_redirect_map` where no extension overrides it:
    /// EbpfCore has no implementation of 35, so such a program fails to load there and in the emulator.
    #[test]
    fn the_emulator_implements_every_helper_of_the_windows_table() {
        for pt in WINDOWS.program_types {
            let ids = WINDOWS.global_helpers.iter().chain(pt.specific_helpers).map(|h| h.id);
            for id in ids {
                let implemented = host_helper(pt.name, id).is_some();
                if id == 35 && pt.name != "sample" {
                    assert!(!implemented && why_unimplemented(pt.name, id).contains("EbpfCore"));
                } else {
                    assert!(implemented, "helper {id} of program type `{}`", pt.name);
                }
            }
        }
    }

    /// Every map type the Windows front end accepts is created by the emulator, but XSKMAP, whose provider
    /// (XDP for Windows) is not part of eBPF for Windows; the refusal names it.
    #[test]
    fn the_emulator_creates_every_map_type_of_the_windows_table_but_xskmap() {
        use bpf2sys_emulator::maps::{creation_error, is_supported, MAP_XSKMAP};
        for t in MAP_TYPES {
            assert_eq!(is_supported(t.number), t.number != MAP_XSKMAP, "{}", t.name);
        }
        let xsk = bpf2sys_emulator::MapDefinition { map_type: MAP_XSKMAP, key_size: 4, value_size: 4, max_entries: 1 };
        assert!(creation_error(&xsk).unwrap().contains("XDP for Windows"));
    }
}
