//! The benchmark inputs and helper #1, ported exactly from `host_common.h` (a copy of
//! `../shared/bench/host_common.h` next to this file).
//!
//! Every engine must see byte-identical inputs and the same helper table as the native C build, or the results
//! cannot be compared with the expected r0 values; `tests/bench_inputs.rs` checks the port byte for byte against
//! the C `gen_inputs` built with `cc`.

/// The RNG seed `make_input()` resets to before building every input.
const RNG_SEED: u64 = 0x243f_6a88_85a3_08d3;

/// Slots of the helper's open-addressing table (`MAP_SLOTS`).
const MAP_SLOTS: usize = 512;

/// Room the C host allocates for one input (`8 + 70000`); `parse` writes frames into it past the final length.
const INPUT_CAPACITY: usize = 8 + 70000;

/// xorshift64* as in `host_common.h`: `rnd()` returns the upper 32 bits of `state * 2685821657736338717`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(2_685_821_657_736_338_717) >> 32) as u32
    }
}

/// The `branchy` alphabet: letters, digits, four spaces, tab, newline, punctuation and two high-bit bytes.
const BRANCHY_ALPHABET: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789    \t\n;;,.(){}\x80\xc3";

/// Error for a program name `make_input` does not know.
#[derive(Debug, thiserror::Error)]
#[error("no benchmark input is defined for program `{0}` (known: csum, parse, branchy, maplookup, sieve, unrolled, pktwalk, flowtrack, tailchain, bindpolicy)")]
pub struct UnknownProgram(pub String);

/// Builds the input buffer of benchmark `program`: `u32 len; u32 pad; u8 data[len]`, exactly as `make_input()`.
///
/// For `maplookup` the C host also fills the helper's table here; in this port the table is a process-wide
/// constant ([`helper_table`]) built by the same insertions, so nothing needs to run first.
pub fn make_input(program: &str) -> Result<Vec<u8>, UnknownProgram> {
    let mut rng = Rng(RNG_SEED);
    let mut buf = vec![0u8; INPUT_CAPACITY];
    let d = &mut buf[8..];
    let mut len: usize = 0;
    match program {
        "csum" | "unrolled" | "sieve" => {
            len = if program == "sieve" { 480 } else { 1500 };
            for byte in &mut d[..len] {
                *byte = rng.next() as u8;
            }
        }
        "branchy" => {
            len = 4096;
            for byte in &mut d[..len] {
                *byte = BRANCHY_ALPHABET[rng.next() as usize % BRANCHY_ALPHABET.len()];
            }
        }
        "maplookup" => {
            len = 4096;
            for i in 0..1024 {
                // C evaluates the condition's rnd() first, then the chosen arm's.
                let key = if rng.next() & 1 != 0 { (rng.next() % 256).wrapping_mul(2_654_435_761) } else { rng.next() };
                d[4 * i..4 * i + 4].copy_from_slice(&key.to_le_bytes());
            }
        }
        "parse" => {
            while len < 60000 {
                let kind = rng.next() % 8;
                let mut plen = 64 + rng.next() % 65;
                let p = &mut d[len + 2..];
                for byte in &mut p[..plen as usize] {
                    *byte = rng.next() as u8;
                }
                let mut o = 12;
                if kind == 1 || kind == 5 {
                    p[o] = 0x81;
                    p[o + 1] = 0x00;
                    o += 4;
                }
                if kind <= 3 || kind == 5 {
                    p[o] = 0x08;
                    p[o + 1] = 0x00;
                    p[o + 2] = 0x45 + u8::from(kind == 3);
                    p[o + 2 + 9] = if kind & 1 != 0 { 6 } else { 17 };
                } else if kind <= 6 {
                    p[o] = 0x86;
                    p[o + 1] = 0xdd;
                    p[o + 2 + 6] = if kind == 4 { 6 } else { 17 };
                }
                if kind == 7 {
                    // Truncated packets.
                    plen = 10 + rng.next() % 20;
                }
                d[len] = (plen >> 8) as u8;
                d[len + 1] = plen as u8;
                len += 2 + plen as usize;
            }
        }
        "pktwalk" => {
            const EXTENSION_HEADERS: [u8; 4] = [0, 60, 43, 44];
            const TCP_OPTIONS: [u8; 20] = [2, 4, 5, 0xb4, 1, 3, 3, 7, 1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0];
            while len < 60000 {
                let kind = rng.next() % 16;
                let mut plen = (96 + rng.next() % 97) as usize;
                let p = &mut d[len + 2..];
                for byte in &mut p[..plen] {
                    *byte = rng.next() as u8;
                }
                let (mut o, tags, l4) = (12, kind % 3, if kind & 4 != 0 { 6u8 } else { 17 });
                let mut l4o = 0;
                for t in 0..tags {
                    // 802.1ad outer tag, 802.1Q inner.
                    (p[o], p[o + 1]) = if t + 1 < tags { (0x88, 0xa8) } else { (0x81, 0x00) };
                    o += 4;
                }
                if kind < 8 {
                    let ihl = 5 + rng.next() % 4;
                    (p[o], p[o + 1]) = (0x08, 0x00);
                    o += 2;
                    p[o] = 0x40 | ihl as u8;
                    p[o + 6] = if kind == 3 { 0x01 } else { 0x40 };
                    p[o + 7] = 0;
                    p[o + 9] = l4;
                    l4o = o + ihl as usize * 4;
                } else if kind < 15 {
                    let n = rng.next() % 5;
                    (p[o], p[o + 1]) = (0x86, 0xdd);
                    o += 2;
                    p[o] = 0x60;
                    let mut nh = o + 6;
                    o += 40;
                    for &t in &EXTENSION_HEADERS[..n as usize] {
                        p[nh] = t;
                        nh = o;
                        p[o + 1] = u8::from(t == 60);
                        if t == 44 {
                            p[o + 2] = 0;
                            p[o + 3] &= 1;
                        }
                        o += if t == 60 { 16 } else { 8 };
                    }
                    p[nh] = l4;
                    l4o = o;
                } else {
                    // Truncated packets.
                    plen = (10 + rng.next() % 20) as usize;
                }
                if kind < 15 && l4 == 6 && l4o + 40 <= plen {
                    let doff = 5 + rng.next() % 6;
                    p[l4o + 12] = (doff << 4) as u8;
                    let words = (doff as usize - 5) * 4;
                    p[l4o + 20..l4o + 20 + words].copy_from_slice(&TCP_OPTIONS[..words]);
                }
                d[len] = (plen >> 8) as u8;
                d[len + 1] = plen as u8;
                len += 2 + plen;
            }
        }
        "flowtrack" => len = flowtrack_input(&mut rng, d),
        "tailchain" => {
            // One frame: Ethernet, 802.1ad and 802.1Q tags, IPv6, TCP, 26 bytes of payload.
            len = 108;
            for byte in &mut d[..len] {
                *byte = rng.next() as u8;
            }
            for (i, v) in [(12, 0x88), (13, 0xa8), (16, 0x81), (17, 0x00), (20, 0x86), (21, 0xdd), (22, 0x60), (28, 6)]
            {
                d[i] = v;
            }
        }
        "bindpolicy" => len = bindpolicy_input(&mut rng, d),
        other => return Err(UnknownProgram(other.to_string())),
    }
    buf[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    buf.truncate(8 + len);
    Ok(buf)
}

/// `flowtrack`: groups of 8 TCP/IPv4 flows of 2-9 packets each, sent round-robin (SYN first, FIN last, ACK
/// between); every 16th packet is a stray (an ACK of no known flow, or every 32nd an ARP frame). Returns the length.
fn flowtrack_input(rng: &mut Rng, d: &mut [u8]) -> usize {
    let mut len = 0;
    let mut n = 0u32;
    while len < 50000 {
        let (mut saddr, mut daddr, mut ports, mut left, mut sent) =
            ([0u32; 8], [0u32; 8], [0u32; 8], [0u32; 8], [0u32; 8]);
        for f in 0..8 {
            saddr[f] = rng.next();
            daddr[f] = rng.next();
            ports[f] = rng.next();
            left[f] = 2 + rng.next() % 8;
        }
        let mut active = 8;
        while active > 0 {
            for f in 0..8 {
                if left[f] == 0 {
                    continue;
                }
                let plen = 54 + rng.next() as usize % 64;
                let p = &mut d[len + 2..];
                for byte in &mut p[..plen] {
                    *byte = rng.next() as u8;
                }
                (p[12], p[13], p[14], p[23]) = (0x08, 0x00, 0x45, 6);
                p[26..30].copy_from_slice(&saddr[f].to_be_bytes());
                p[30..34].copy_from_slice(&daddr[f].to_be_bytes());
                p[34..38].copy_from_slice(&ports[f].to_be_bytes());
                p[47] = if sent[f] == 0 {
                    0x02
                } else if left[f] == 1 {
                    0x11
                } else {
                    0x10
                };
                (d[len], d[len + 1]) = ((plen >> 8) as u8, plen as u8);
                len += 2 + plen;
                sent[f] += 1;
                left[f] -= 1;
                if left[f] == 0 {
                    active -= 1;
                }
                n += 1;
                if n.is_multiple_of(16) {
                    let plen = 54;
                    let p = &mut d[len + 2..];
                    for byte in &mut p[..plen] {
                        *byte = rng.next() as u8;
                    }
                    (p[12], p[13], p[14], p[23], p[47]) =
                        (0x08, if n.is_multiple_of(32) { 0x06 } else { 0x00 }, 0x45, 6, 0x10);
                    (d[len], d[len + 1]) = (0, plen as u8);
                    len += 2 + plen;
                }
            }
        }
    }
    len
}

/// `bindpolicy`: a `bind_md_t` (64 bytes: a TCP bind of 127.0.0.1:8080), then 1024 port rules `{protocols, flags}`
/// and 64 process rules `{allowed port bands, max binds, 0}`, set so that the bind passes every check.
fn bindpolicy_input(rng: &mut Rng, d: &mut [u8]) -> usize {
    let pid = rng.next();
    let port: u32 = 8080;
    d[16..24].copy_from_slice(&u64::from(pid).to_le_bytes());
    (d[24], d[26], d[27], d[28], d[31], d[40], d[48]) = (2, (port >> 8) as u8, port as u8, 127, 1, 16, 6);
    let rules = 64;
    for i in 0..1024 {
        let protocols = rng.next();
        let flags = rng.next() % 4;
        d[rules + 8 * i..rules + 8 * i + 4].copy_from_slice(&protocols.to_le_bytes());
        d[rules + 8 * i + 4..rules + 8 * i + 8].copy_from_slice(&flags.to_le_bytes());
    }
    let forced = rules + 8 * (port as usize % 1024);
    d[forced..forced + 4].copy_from_slice(&(1u32 << 6).to_le_bytes());
    d[forced + 4..forced + 8].copy_from_slice(&3u32.to_le_bytes());
    let classes = rules + 8 * 1024;
    for i in 0..64 {
        let words = [rng.next(), rng.next(), rng.next() % 4, 0];
        for (w, v) in words.iter().enumerate() {
            d[classes + 16 * i + 4 * w..classes + 16 * i + 4 * w + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    d[classes + 16 * (pid as usize % 64)] |= 1 << ((port - 1024) / 1024 % 64);
    classes + 16 * 64
}

/// Helper #1's hash table: 512 slots, linear probing, 256 keys `i * 2654435761` with values `i * 1000 + 7`.
/// Laid out like the C host's `map_used`, `map_keys`, `map_vals` one after the other, because [`machine_code`]'s
/// helpers address the fields by offset.
#[repr(C, align(64))]
pub struct HelperTable {
    used: [bool; MAP_SLOTS],
    keys: [u32; MAP_SLOTS],
    values: [u64; MAP_SLOTS],
}

/// The `map_hash()` finaliser.
pub(crate) const fn map_hash(mut k: u32) -> u32 {
    k ^= k >> 16;
    k = k.wrapping_mul(0x7feb_352d);
    k ^= k >> 15;
    k = k.wrapping_mul(0x846c_a68b);
    k ^= k >> 16;
    k
}

impl HelperTable {
    /// Built at compile time, so a lookup costs what the C `bench_lookup` costs (no lazy initialisation check).
    const fn build() -> HelperTable {
        let mut table = HelperTable { used: [false; MAP_SLOTS], keys: [0; MAP_SLOTS], values: [0; MAP_SLOTS] };
        let mut i = 0u32;
        while i < 256 {
            table.insert(i.wrapping_mul(2_654_435_761), i as u64 * 1000 + 7);
            i += 1;
        }
        table
    }

    const fn insert(&mut self, key: u32, value: u64) {
        let mut h = map_hash(key) as usize & (MAP_SLOTS - 1);
        while self.used[h] && self.keys[h] != key {
            h = (h + 1) & (MAP_SLOTS - 1);
        }
        self.used[h] = true;
        self.keys[h] = key;
        self.values[h] = value;
    }

    #[inline]
    /// `bench_lookup`: the value slot of `key`, or `None` on a miss.
    pub fn lookup(&self, key: u32) -> Option<&u64> {
        let mut h = map_hash(key) as usize & (MAP_SLOTS - 1);
        while self.used[h] {
            if self.keys[h] == key {
                return Some(&self.values[h]);
            }
            h = (h + 1) & (MAP_SLOTS - 1);
        }
        None
    }

    /// `bench_lookup` as a slot index: the value is `values()[slot]`.
    pub fn lookup_slot(&self, key: u32) -> Option<usize> {
        let mut h = map_hash(key) as usize & (MAP_SLOTS - 1);
        while self.used[h] {
            if self.keys[h] == key {
                return Some(h);
            }
            h = (h + 1) & (MAP_SLOTS - 1);
        }
        None
    }

    /// The value slots.
    pub fn values(&self) -> &[u64] {
        &self.values
    }

    /// The address range of the value slots: engines that check memory accesses (interpreters) must allow
    /// reads of the pointers [`HelperTable::lookup`] hands out.
    pub fn value_range(&self) -> std::ops::Range<u64> {
        let start = self.values.as_ptr() as u64;
        start..start + std::mem::size_of_val(&self.values) as u64
    }
}

/// The process-wide helper table (a `static`, like the C host's arrays): its value slots never move, so the
/// pointers helper #1 returns stay valid.
pub fn helper_table() -> &'static HelperTable {
    &HELPER_TABLE
}

static HELPER_TABLE: HelperTable = HelperTable::build();

/// Helper #1 as machine code at a fixed alignment, for the engines that call it from generated code.
///
/// Why not a Rust function: the helper is most of `maplookup`'s time, and where the linker put a Rust helper inside
/// its 64-byte line changed with every unrelated edit of this crate; on the benchmark machine that alone moved
/// `maplookup` by 12%, in either direction, and differently for each engine's wrapper. These are the instructions
/// clang -O2 makes of the C host's `bench_lookup` (the native baseline's helper), with the function and its probe
/// loop aligned as clang aligns them, so every engine and every build runs the same helper code the same way. The
/// two entry points differ only in where the key pointer arrives and in using registers both conventions let a
/// callee clobber.
pub mod machine_code {
    use std::ffi::c_void;

    /// One copy of the helper named `$name`, with the key pointer in register `$key`.
    macro_rules! lookup_helper {
        ($name:literal, $key:literal) => {
            std::arch::global_asm!(
                concat!(".pushsection .text.", $name, ",\"ax\",@progbits"),
                ".p2align 6",
                concat!(".globl ", $name),
                concat!(".type ", $name, ",@function"),
                concat!($name, ":"),
                concat!("mov ecx, dword ptr [", $key, "]"),
                // map_hash(key) & (MAP_SLOTS - 1)
                "mov eax, ecx",
                "shr eax, 16",
                "xor eax, ecx",
                "imul eax, eax, 0x7feb352d",
                "mov edx, eax",
                "shr edx, 15",
                "xor edx, eax",
                "imul eax, edx, 0x846ca68b",
                "mov edx, eax",
                "shr edx, 16",
                "xor edx, eax",
                "and edx, 0x1ff",
                "lea r8, [rip + {table}]",
                "cmp byte ptr [r8 + rdx], 0",
                "je 2f",
                ".p2align 4",
                "1:",
                "cmp dword ptr [r8 + 4 * rdx + 0x200], ecx",
                "je 3f",
                "add edx, 1",
                "and edx, 0x1ff",
                "cmp byte ptr [r8 + rdx], 0",
                "jne 1b",
                "2:",
                "xor eax, eax",
                "ret",
                "3:",
                "lea rax, [r8 + 8 * rdx + 0xa00]",
                "ret",
                ".popsection",
                table = sym super::HELPER_TABLE,
            );
        };
    }

    lookup_helper!("bpf2sys_bench_lookup_win64", "rdx");
    lookup_helper!("bpf2sys_bench_lookup_sysv", "rsi");

    // Declared `safe` so that they fit the safe helper-pointer types the engines store, like every helper the
    // harness provides: `key` must still point to 4 readable bytes, which the benchmark programs guarantee.
    unsafe extern "win64" {
        /// Helper #1 in the eBPF for Windows helper shape (`helper_function_t`): r2 = pointer to the key.
        pub safe fn bpf2sys_bench_lookup_win64(
            map: u64,
            key: u64,
            r3: u64,
            r4: u64,
            r5: u64,
            context: *mut c_void,
        ) -> u64;
    }

    unsafe extern "C" {
        /// Helper #1 with the eBPF registers r1..r5 as System V arguments, as rbpf's JITs call helpers.
        pub safe fn bpf2sys_bench_lookup_sysv(map: u64, key: u64, r3: u64, r4: u64, r5: u64) -> u64;
    }
}

/// Helper #1 with eBPF register arguments: r1 = map (ignored, 0), r2 = pointer to a u32 key. Returns the host
/// address of the value, or 0 on a miss.
///
/// # Safety
/// `key_ptr` must point to 4 readable bytes.
#[inline]
pub unsafe fn lookup_helper(key_ptr: u64) -> u64 {
    // SAFETY: the caller guarantees 4 readable bytes; eBPF stack keys need not be aligned.
    let key = unsafe { std::ptr::read_unaligned(key_ptr as *const u32) };
    helper_table().lookup(key).map_or(0, |v| v as *const u64 as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_have_the_documented_sizes() {
        // ../shared/bench/README.md "Deterministic inputs": file sizes.
        for (program, size) in [
            ("csum", 1508),
            ("unrolled", 1508),
            ("sieve", 488),
            ("branchy", 4104),
            ("maplookup", 4104),
            ("parse", 60071),
        ] {
            assert_eq!(make_input(program).unwrap().len(), size, "{program}");
        }
    }

    #[test]
    fn helper_table_finds_every_inserted_key_and_misses_others() {
        let table = helper_table();
        for i in 0..256u32 {
            assert_eq!(table.lookup(i.wrapping_mul(2_654_435_761)), Some(&(u64::from(i) * 1000 + 7)));
        }
        assert_eq!(table.lookup(1), None);
    }

    #[test]
    fn machine_code_helpers_agree_with_the_rust_lookup() {
        use super::machine_code::{bpf2sys_bench_lookup_sysv, bpf2sys_bench_lookup_win64};
        let keys = (0..256u32).map(|i| i.wrapping_mul(2_654_435_761)).chain([1, 2, 0xdead_beef, u32::MAX]);
        for key in keys {
            let key_ptr = &key as *const u32 as u64;
            // SAFETY: `key_ptr` points to 4 readable bytes.
            let expected = unsafe { lookup_helper(key_ptr) };
            assert_eq!(bpf2sys_bench_lookup_win64(0, key_ptr, 0, 0, 0, std::ptr::null_mut()), expected, "{key:#x}");
            assert_eq!(bpf2sys_bench_lookup_sysv(0, key_ptr, 0, 0, 0), expected, "{key:#x}");
        }
        let entry: extern "C" fn(u64, u64, u64, u64, u64) -> u64 = bpf2sys_bench_lookup_sysv;
        assert_eq!(entry as usize % 64, 0, "aligned like clang's helper");
    }

    #[test]
    fn unknown_program_is_an_error() {
        assert!(make_input("nope").is_err());
    }
}
