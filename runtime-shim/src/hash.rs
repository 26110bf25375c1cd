//! The program-info hash (native-module-contract.md §3.2), byte stream exactly as bpf2c and the runtime build it.

use sha2::{Digest, Sha256};

/// One helper as hashed: its prototype from the program-info provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashedHelper {
    pub id: u32,
    /// The prototype name (not the helper table entry's name).
    pub name: String,
    pub return_type: u32,
    pub arguments: [u32; 5],
    pub reallocate_packet: bool,
}

/// One BTF-resolved function as hashed: its provider's prototype (`ebpf_btf_resolved_function_prototype_t`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashedBtfFunction {
    pub module_guid: [u8; 16],
    pub name: String,
    pub return_type: u32,
    pub arguments: [u32; 5],
    pub flags: u32,
}

/// The program type information and the helpers a program uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramInfoHashInput {
    /// Program type descriptor name, e.g. `"xdp"`.
    pub type_name: String,
    /// `ebpf_ctx_descriptor_t {size, data, end, meta}`.
    pub context_descriptor: [i32; 4],
    pub program_type: [u8; 16],
    pub bpf_prog_type: u32,
    pub is_privileged: bool,
    /// The distinct helpers used (any order; hashed in ascending id order).
    pub helpers: Vec<HashedHelper>,
    /// The BTF-resolved functions used (any order; hashed by module GUID bytes, then name).
    pub btf_functions: Vec<HashedBtfFunction>,
}

/// The bytes hashed (§3.2 steps 1–8; step 8's block only when the program uses BTF-resolved functions).
pub fn program_info_hash_stream(input: &ProgramInfoHashInput) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(input.type_name.as_bytes());
    for v in input.context_descriptor {
        s.extend_from_slice(&v.to_le_bytes());
    }
    s.extend_from_slice(&input.program_type);
    s.extend_from_slice(&input.bpf_prog_type.to_le_bytes());
    s.push(input.is_privileged as u8);
    let mut helpers: Vec<&HashedHelper> = input.helpers.iter().collect();
    helpers.sort_by_key(|h| h.id);
    helpers.dedup_by_key(|h| h.id);
    s.extend_from_slice(&(helpers.len() as u64).to_le_bytes());
    for h in helpers {
        s.extend_from_slice(&h.id.to_le_bytes());
        s.extend_from_slice(h.name.as_bytes());
        s.extend_from_slice(&h.return_type.to_le_bytes());
        for a in h.arguments {
            s.extend_from_slice(&a.to_le_bytes());
        }
        if h.reallocate_packet {
            s.push(1);
        }
    }
    if !input.btf_functions.is_empty() {
        let mut functions: Vec<&HashedBtfFunction> = input.btf_functions.iter().collect();
        functions.sort_by(|a, b| (a.module_guid, a.name.as_bytes()).cmp(&(b.module_guid, b.name.as_bytes())));
        s.extend_from_slice(&(functions.len() as u64).to_le_bytes());
        for f in functions {
            s.extend_from_slice(&f.module_guid);
            s.extend_from_slice(f.name.as_bytes());
            s.extend_from_slice(&f.return_type.to_le_bytes());
            for a in f.arguments {
                s.extend_from_slice(&a.to_le_bytes());
            }
            s.extend_from_slice(&f.flags.to_le_bytes());
        }
    }
    s
}

/// SHA-256 of [`program_info_hash_stream`].
pub fn program_info_hash(input: &ProgramInfoHashInput) -> [u8; 32] {
    Sha256::digest(program_info_hash_stream(input)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_follows_the_contract_field_order() {
        let input = ProgramInfoHashInput {
            type_name: "xdp".into(),
            context_descriptor: [32, 0, 8, 16],
            program_type: [0xaa; 16],
            bpf_prog_type: 1,
            is_privileged: false,
            helpers: vec![
                HashedHelper {
                    id: 65536,
                    name: "bpf_xdp_adjust_head".into(),
                    return_type: 0,
                    arguments: [4, 1, 0, 0, 0],
                    reallocate_packet: true,
                },
                HashedHelper {
                    id: 1,
                    name: "m".into(),
                    return_type: 1,
                    arguments: [5, 7, 0, 0, 0],
                    reallocate_packet: false,
                },
            ],
            btf_functions: vec![],
        };
        let s = program_info_hash_stream(&input);
        let mut expect = b"xdp".to_vec();
        for v in [32i32, 0, 8, 16] {
            expect.extend_from_slice(&v.to_le_bytes());
        }
        expect.extend_from_slice(&[0xaa; 16]);
        expect.extend_from_slice(&1u32.to_le_bytes());
        expect.push(0);
        expect.extend_from_slice(&2u64.to_le_bytes());
        // Ascending ids: 1 first.
        expect.extend_from_slice(&1u32.to_le_bytes());
        expect.extend_from_slice(b"m");
        for v in [1u32, 5, 7, 0, 0, 0] {
            expect.extend_from_slice(&v.to_le_bytes());
        }
        expect.extend_from_slice(&65536u32.to_le_bytes());
        expect.extend_from_slice(b"bpf_xdp_adjust_head");
        for v in [0u32, 4, 1, 0, 0, 0] {
            expect.extend_from_slice(&v.to_le_bytes());
        }
        expect.push(1);
        assert_eq!(s, expect);
        assert_eq!(program_info_hash(&input), <[u8; 32]>::from(Sha256::digest(&expect)));

        // Step 8: count, then per function (ordered by GUID bytes, then name) GUID, name, return, args, flags.
        let f = |guid: u8, name: &str| HashedBtfFunction {
            module_guid: [guid; 16],
            name: name.into(),
            return_type: 0,
            arguments: [1, 11, 2, 0, 0],
            flags: 0,
        };
        let with_btf = ProgramInfoHashInput { btf_functions: vec![f(2, "a"), f(1, "z"), f(1, "b")], ..input };
        let s8 = program_info_hash_stream(&with_btf);
        let mut tail = 3u64.to_le_bytes().to_vec();
        for (guid, name) in [(1u8, "b"), (1, "z"), (2, "a")] {
            tail.extend_from_slice(&[guid; 16]);
            tail.extend_from_slice(name.as_bytes());
            for v in [0u32, 1, 11, 2, 0, 0, 0] {
                tail.extend_from_slice(&v.to_le_bytes());
            }
        }
        assert_eq!(s8[..expect.len()], expect[..]);
        assert_eq!(s8[expect.len()..], tail[..]);
    }
}
