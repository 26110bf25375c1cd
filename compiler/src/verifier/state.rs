//! The abstract state: per register a type set with offsets and numeric intervals, a byte-precise stack with
//! spilled values, the packet bounds proven so far, and per-loop register deltas for the termination proof.
//!
//! A [`Value`] denotes the set of concrete 64-bit values `v` such that, for some type `t` in `types`:
//! `t = number` and `v ∈ num`; or `t` is a pointer kind and `v = base(t) + o` with `o ∈ off`. Packet pointers
//! may additionally carry a relational fact `pkt = (id, d)`: `v = data + base_id + d` where every holder of
//! `id` shares the same (unknown) `base_id`, and `State::packet_ranges[id] = r` means `base_id + r` is at most
//! the packet length. Id 0 is `data` itself (`base_0 = 0`), so its range is a lower bound on the packet size.

use std::collections::BTreeMap;
use std::fmt;

use super::num::{Num, Thresholds};

/// Bits of a [`Value`]'s type set.
pub mod ty {
    pub const UNINIT: u16 = 1 << 0;
    pub const NUMBER: u16 = 1 << 1;
    pub const CTX: u16 = 1 << 2;
    pub const STACK: u16 = 1 << 3;
    pub const PACKET: u16 = 1 << 4;
    pub const PACKET_END: u16 = 1 << 5;
    /// A map value or global-data section ("shared" memory in PREVAIL's terms).
    pub const SHARED: u16 = 1 << 6;
    pub const MAP_FD: u16 = 1 << 7;
    pub const MAP_FD_PROGRAMS: u16 = 1 << 8;
    pub const POINTERS: u16 = CTX | STACK | PACKET | PACKET_END | SHARED | MAP_FD | MAP_FD_PROGRAMS;
    pub const MEMORY: u16 = CTX | STACK | PACKET | SHARED;

    pub const NAMES: [(u16, &str); 9] = [
        (UNINIT, "uninit"),
        (NUMBER, "number"),
        (CTX, "ctx"),
        (STACK, "stack"),
        (PACKET, "packet"),
        (PACKET_END, "packet_end"),
        (SHARED, "shared"),
        (MAP_FD, "map_fd"),
        (MAP_FD_PROGRAMS, "map_fd_programs"),
    ];
}

/// Bytes of stack per frame ([`crate::isa::STACK_FRAME_SIZE`], contract §5.1).
pub const STACK_FRAME_SIZE: i64 = crate::isa::STACK_FRAME_SIZE as i64;
/// Distance between the `r10`s of consecutive frames in the abstract stack: frame `k` has `r10 = -1024·k` and
/// owns `[-1024k - 512, -1024k)`. The 512-byte gap between frames is never accessible, so an access must stay
/// inside the frame its pointer came from — sound whether the code generator lays frames out contiguously or
/// not (the reference interpreter maps each frame as its own region).
pub const FRAME_STRIDE: i64 = 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub types: u16,
    /// The value when it is a number.
    pub num: Num,
    /// The offset from the region base when it is a pointer (signed view is authoritative).
    pub off: Num,
    /// For `SHARED`: a lower bound on the region size in bytes.
    pub shared_size: u64,
    /// For `SHARED`: the region may be read-only (`.rodata`).
    pub shared_readonly: bool,
    /// For `MAP_FD`, `MAP_FD_PROGRAMS`, `SHARED`: the module map index, when known.
    pub map: Option<u32>,
    /// For `PACKET`: relational fact `(id, delta)` (module doc).
    pub pkt: Option<(u32, i64)>,
}

impl Value {
    pub fn uninit() -> Value {
        Value {
            types: ty::UNINIT,
            num: Num::TOP,
            off: Num::TOP,
            shared_size: 0,
            shared_readonly: false,
            map: None,
            pkt: None,
        }
    }

    pub fn number(num: Num) -> Value {
        Value { types: ty::NUMBER, num, ..Value::uninit() }
    }

    pub fn pointer(types: u16, off: Num) -> Value {
        Value { types, off, ..Value::uninit() }
    }

    pub fn is(&self, t: u16) -> bool {
        self.types == t
    }

    pub fn may_be(&self, t: u16) -> bool {
        self.types & t != 0
    }

    pub fn is_number(&self) -> bool {
        self.types == ty::NUMBER
    }

    pub fn join(&self, o: &Value) -> Value {
        self.combine(o, |a, b| a.join(b))
    }

    pub fn widen(&self, o: &Value, t: &Thresholds) -> Value {
        self.combine(o, |a, b| a.widen(b, t))
    }

    fn combine(&self, o: &Value, f: impl Fn(&Num, &Num) -> Num) -> Value {
        let pick = |mask: u16, a: &Num, b: &Num| match (self.may_be(mask), o.may_be(mask)) {
            (true, true) => f(a, b),
            (true, false) => *a,
            (false, true) => *b,
            (false, false) => Num::TOP,
        };
        let shared_size = match (self.may_be(ty::SHARED), o.may_be(ty::SHARED)) {
            (true, true) => self.shared_size.min(o.shared_size),
            (true, false) => self.shared_size,
            (false, true) => o.shared_size,
            _ => 0,
        };
        let has_map = ty::MAP_FD | ty::MAP_FD_PROGRAMS | ty::SHARED;
        let map = match (self.may_be(has_map), o.may_be(has_map)) {
            (true, true) => (self.map == o.map).then_some(self.map).flatten(),
            (true, false) => self.map,
            (false, true) => o.map,
            _ => None,
        };
        let pkt = match (self.may_be(ty::PACKET), o.may_be(ty::PACKET)) {
            (true, true) => (self.pkt == o.pkt).then_some(self.pkt).flatten(),
            (true, false) => self.pkt,
            (false, true) => o.pkt,
            _ => None,
        };
        Value {
            types: self.types | o.types,
            num: pick(ty::NUMBER, &self.num, &o.num),
            off: pick(ty::POINTERS, &self.off, &o.off),
            shared_size,
            shared_readonly: self.shared_readonly || o.shared_readonly,
            map,
            pkt,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = ty::NAMES.iter().filter(|(b, _)| self.types & b != 0).map(|(_, n)| *n).collect();
        if names.len() == 1 {
            write!(f, "{}", names[0])?;
        } else {
            write!(f, "{{{}}}", names.join(", "))?;
        }
        if self.may_be(ty::NUMBER) {
            write!(f, " value={}", self.num)?;
        }
        if self.may_be(ty::POINTERS & !(ty::MAP_FD | ty::MAP_FD_PROGRAMS | ty::PACKET_END)) {
            write!(f, " offset={}", OffsetDisplay(&self.off))?;
        }
        if self.may_be(ty::SHARED) {
            write!(f, " region_size={}{}", self.shared_size, if self.shared_readonly { " read-only" } else { "" })?;
        }
        if let (true, Some(m)) = (self.may_be(ty::MAP_FD | ty::MAP_FD_PROGRAMS | ty::SHARED), self.map) {
            write!(f, " map={m}")?;
        }
        if let (true, Some((id, d))) = (self.may_be(ty::PACKET), self.pkt) {
            if id != 0 {
                write!(f, " packet_base#{id}+{d}")?;
            }
        }
        Ok(())
    }
}

struct OffsetDisplay<'a>(&'a Num);
impl fmt::Display for OffsetDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.smin == self.0.smax {
            write!(f, "{}", self.0.smin)
        } else {
            write!(f, "[{}, {}]", self.0.smin, self.0.smax)
        }
    }
}

/// The stack of all live frames: per-byte initialisation and values spilled by aligned 8-byte stores.
/// Byte at (negative) offset `o` has index `-o - 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct Stack {
    init: Vec<u64>,
    /// Aligned 8-byte slots (key = offset of the slot's lowest byte) holding a known value.
    pub spills: BTreeMap<i64, Value>,
}

impl Stack {
    pub fn new(frames: usize) -> Stack {
        Stack { init: vec![0; frames * FRAME_STRIDE as usize / 64], spills: BTreeMap::new() }
    }

    /// Lowest offset of the deepest frame.
    pub fn bottom(&self) -> i64 {
        -(self.init.len() as i64 * 64) + (FRAME_STRIDE - STACK_FRAME_SIZE)
    }

    /// Whether `[lo, hi)` lies inside one live frame.
    pub fn in_one_frame(&self, lo: i128, hi: i128) -> bool {
        if lo >= hi || hi > 0 || lo < self.bottom() as i128 {
            return false;
        }
        let k = (-lo - 1) / FRAME_STRIDE as i128;
        lo >= -FRAME_STRIDE as i128 * k - STACK_FRAME_SIZE as i128 && hi <= -FRAME_STRIDE as i128 * k
    }

    fn index(o: i64) -> usize {
        (-o - 1) as usize
    }

    pub fn is_init(&self, o: i64) -> bool {
        let i = Stack::index(o);
        self.init[i / 64] >> (i % 64) & 1 == 1
    }

    pub fn set_init(&mut self, o: i64, v: bool) {
        let i = Stack::index(o);
        if v {
            self.init[i / 64] |= 1 << (i % 64);
        } else {
            self.init[i / 64] &= !(1 << (i % 64));
        }
    }

    /// Whether every byte in `[lo, hi)` is initialised.
    pub fn all_init(&self, lo: i64, hi: i64) -> bool {
        (lo..hi).all(|o| self.is_init(o))
    }

    /// Spills whose slot overlaps `[lo, hi)`.
    pub fn overlapping(&self, lo: i64, hi: i64) -> impl Iterator<Item = (&i64, &Value)> {
        self.spills.range(lo - 7..hi).filter(move |(k, _)| **k + 8 > lo)
    }

    /// Forgets spills overlapping `[lo, hi)`; a partially overwritten pointer's other bytes become
    /// uninitialised so that no part of an address can be read back as a number.
    pub fn clobber(&mut self, lo: i64, hi: i64) {
        let keys: Vec<i64> = self.overlapping(lo, hi).map(|(k, _)| *k).collect();
        for k in keys {
            let v = self.spills.remove(&k).expect("present");
            if v.may_be(ty::POINTERS) {
                for o in k..k + 8 {
                    if o < lo || o >= hi {
                        self.set_init(o, false);
                    }
                }
            }
        }
    }

    pub fn push_frame(&mut self) {
        self.init.extend(std::iter::repeat_n(0, FRAME_STRIDE as usize / 64));
    }

    pub fn pop_frame(&mut self) {
        let n = self.init.len() - FRAME_STRIDE as usize / 64;
        self.init.truncate(n);
        let bottom = self.bottom();
        self.spills.retain(|k, _| *k >= bottom);
    }

    fn combine(&self, o: &Stack, f: impl Fn(&Value, &Value) -> Value) -> Stack {
        let init = self.init.iter().zip(&o.init).map(|(a, b)| a & b).collect();
        let spills = self
            .spills
            .iter()
            .filter_map(|(k, v)| o.spills.get(k).map(|w| (*k, f(v, w))))
            .filter(|(_, v)| !v.may_be(ty::UNINIT))
            .collect();
        let mut s = Stack { init, spills };
        // Bytes of a pointer spill dropped by the join must not stay readable as numbers.
        for (k, v) in self.spills.iter().chain(&o.spills) {
            if v.may_be(ty::POINTERS) && !s.spills.contains_key(k) {
                for b in *k..*k + 8 {
                    s.set_init(b, false);
                }
            }
        }
        s
    }
}

/// A caller's registers saved across a local call (r6..r9 and their loop deltas).
#[derive(Clone, Debug, PartialEq)]
pub struct SavedFrame {
    pub regs: [Value; 4],
    pub deltas: BTreeMap<u64, [Option<(i64, i64)>; 4]>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub regs: [Value; 11],
    pub stack: Stack,
    /// Saved caller frames, outermost first.
    pub frames: Vec<SavedFrame>,
    /// Packet ranges proven by comparisons with `data_end` (module doc). Absent = 0.
    pub packet_ranges: BTreeMap<u32, i64>,
    /// For each loop head (a node key): how much each register changed since the last visit of the head, when
    /// it changed only by constant additions that cannot wrap. `None` = unknown.
    pub deltas: BTreeMap<u64, [Option<(i64, i64)>; 11]>,
}

impl State {
    /// The state where nothing is initialised and one frame exists.
    pub fn empty() -> State {
        State {
            regs: std::array::from_fn(|_| Value::uninit()),
            stack: Stack::new(1),
            frames: Vec::new(),
            packet_ranges: BTreeMap::new(),
            deltas: BTreeMap::new(),
        }
    }

    pub fn packet_range(&self, id: u32) -> i64 {
        self.packet_ranges.get(&id).copied().unwrap_or(0)
    }

    pub fn join(&self, o: &State) -> State {
        self.combine(o, |a, b| a.join(b), |a, b| a.join(b))
    }

    pub fn widen(&self, o: &State, t: &Thresholds) -> State {
        self.combine(o, |a, b| a.widen(b, t), |a, b| a.widen(b, t))
    }

    fn combine(&self, o: &State, f: impl Fn(&Value, &Value) -> Value, g: impl Fn(&Num, &Num) -> Num) -> State {
        let regs = std::array::from_fn(|i| f(&self.regs[i], &o.regs[i]));
        let frames = self
            .frames
            .iter()
            .zip(&o.frames)
            .map(|(a, b)| SavedFrame {
                regs: std::array::from_fn(|i| f(&a.regs[i], &b.regs[i])),
                deltas: join_deltas(&a.deltas, &b.deltas, &g),
            })
            .collect();
        let packet_ranges =
            self.packet_ranges.iter().filter_map(|(k, v)| o.packet_ranges.get(k).map(|w| (*k, (*v).min(*w)))).collect();
        State {
            regs,
            stack: self.stack.combine(&o.stack, &f),
            frames,
            packet_ranges,
            deltas: join_deltas(&self.deltas, &o.deltas, &g),
        }
    }

    /// Removes packet pointers everywhere (a helper that may move the packet was called).
    pub fn invalidate_packet(&mut self) {
        for r in self.regs.iter_mut().chain(self.frames.iter_mut().flat_map(|f| f.regs.iter_mut())) {
            if r.may_be(ty::PACKET | ty::PACKET_END) {
                *r = Value::uninit();
            }
        }
        let keys: Vec<i64> =
            self.stack.spills.iter().filter(|(_, v)| v.may_be(ty::PACKET | ty::PACKET_END)).map(|(k, _)| *k).collect();
        for k in keys {
            self.stack.spills.remove(&k);
            for b in k..k + 8 {
                self.stack.set_init(b, false);
            }
        }
        self.packet_ranges.clear();
    }

    /// Forgets the ranges of packet ids no register or spill carries any more (id 0, the packet size, stays).
    pub fn gc_packet_ranges(&mut self) {
        let mut live: Vec<u32> = vec![0];
        let held =
            self.regs.iter().chain(self.frames.iter().flat_map(|f| f.regs.iter())).chain(self.stack.spills.values());
        live.extend(held.filter_map(|v| v.pkt.map(|(id, _)| id)));
        self.packet_ranges.retain(|id, _| live.contains(id));
    }

    /// Strips relational packet id `id` from every holder (the id is about to denote a new base).
    pub fn forget_packet_id(&mut self, id: u32) {
        let strip = |v: &mut Value| {
            if matches!(v.pkt, Some((i, _)) if i == id) {
                v.pkt = None;
            }
        };
        self.regs.iter_mut().for_each(strip);
        self.frames.iter_mut().flat_map(|f| f.regs.iter_mut()).for_each(strip);
        self.stack.spills.values_mut().for_each(strip);
        self.packet_ranges.remove(&id);
    }
}

fn join_deltas<const N: usize>(
    a: &BTreeMap<u64, [Option<(i64, i64)>; N]>,
    b: &BTreeMap<u64, [Option<(i64, i64)>; N]>,
    g: &impl Fn(&Num, &Num) -> Num,
) -> BTreeMap<u64, [Option<(i64, i64)>; N]> {
    a.iter()
        .filter_map(|(k, x)| {
            let y = b.get(k)?;
            Some((
                *k,
                std::array::from_fn(|i| match (x[i], y[i]) {
                    (Some((a0, a1)), Some((b0, b1))) => {
                        let n = g(&Num::signed(a0, a1)?, &Num::signed(b0, b1)?);
                        Some((n.smin, n.smax))
                    }
                    _ => None,
                }),
            ))
        })
        .collect()
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.regs.iter().enumerate() {
            if !r.is(ty::UNINIT) {
                write!(f, "r{i}: {r}; ")?;
            }
        }
        let (bottom, mut o) = (self.stack.bottom(), self.stack.bottom());
        let _ = bottom;
        let mut runs = Vec::new();
        while o < 0 {
            if self.stack.is_init(o) {
                let start = o;
                while o < 0 && self.stack.is_init(o) {
                    o += 1;
                }
                runs.push(format!("[{start}, {o})"));
            } else {
                o += 1;
            }
        }
        if !runs.is_empty() {
            write!(f, "stack init {}; ", runs.join(" "))?;
        }
        for (k, v) in &self.stack.spills {
            write!(f, "stack[{k}]: {v}; ")?;
        }
        for (id, r) in &self.packet_ranges {
            if *id == 0 {
                write!(f, "packet_size >= {r}; ")?;
            } else {
                write!(f, "packet_base#{id} + {r} <= packet_size; ")?;
            }
        }
        Ok(())
    }
}
