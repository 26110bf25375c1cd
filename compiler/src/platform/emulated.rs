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
