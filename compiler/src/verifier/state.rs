//! The abstract state: per register a type set with offsets and numeric intervals, a byte-precise stack with
//! spilled values, the packet bounds proven so far, and per-loop register deltas for the termination proof.
//!
//! A [`Value`] denotes the set of concrete 64-bit values `v` such that, for some type `t` in `types`:
//! `t = number` and `v ∈ num`; or `t` is a pointer kind and `v = base(t) + o` with `o ∈ off`. Packet pointers
//! may additionally carry a relational fact `pkt = (id, d)`: `v = data + base_id + d` where every holder of
//! `id` shares the same (unknown) `base_id`, and `State::packet_ranges[id] = r` means `base_id + r` is at most
//! the packet length. Id 0 is `data` itself (`base_0 = 0`), so its range is a lower bound on the packet size.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use super::num::{Num, Thresholds};
use super::relations::SameKind;

pub use super::deltas::{combine_delta, Change, Delta, Loc, LoopDeltas};

/// Builds a `BTreeMap` by inserting the entries one by one, instead of `BTreeMap::from_iter`'s buffer, sort and
/// bulk build: the maps of a join are small and their entries mostly arrive in ascending order (a walk of
/// another map), where an insert appends. Same result for any order (a later duplicate key replaces the
/// earlier entry, as with `from_iter`).
pub(super) struct SortedMap<K, V>(pub(super) BTreeMap<K, V>);

impl<K: Ord, V> FromIterator<(K, V)> for SortedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut map = BTreeMap::new();
        for (k, v) in entries {
            map.insert(k, v);
        }
        SortedMap(map)
    }
}

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
    /// A read-only socket (`bpf_skc_lookup_tcp`); loads follow the platform's `sock_common_fields`.
    pub const SOCKET: u16 = 1 << 9;
    pub const POINTERS: u16 = CTX | STACK | PACKET | PACKET_END | SHARED | MAP_FD | MAP_FD_PROGRAMS | SOCKET;
    pub const MEMORY: u16 = CTX | STACK | PACKET | SHARED;

    pub const NAMES: [(u16, &str); 10] = [
        (UNINIT, "uninit"),
        (NUMBER, "number"),
        (CTX, "ctx"),
        (STACK, "stack"),
        (PACKET, "packet"),
        (PACKET_END, "packet_end"),
        (SHARED, "shared"),
        (MAP_FD, "map_fd"),
        (MAP_FD_PROGRAMS, "map_fd_programs"),
        (SOCKET, "socket"),
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
    /// For `MAP_FD`, `MAP_FD_PROGRAMS`, `SHARED`: the module map indices it may refer to (a map chosen on a
    /// branch has several candidates), or unknown.
    pub maps: MapSet,
    /// For `PACKET`: relational fact `(id, delta)` (module doc).
    pub pkt: Option<(u32, i64)>,
    /// Copy identity: every holder (register, saved register, spill) with the same id holds the same concrete
    /// value, so a null check on one refines all of them. Given to map-lookup results (docs/verifier.md §3).
    pub copy_id: Option<u32>,
    /// For `NUMBER`: `Some((id, d))` means the value is at most the distance from the packet pointer
    /// `data + base_id + d` to `data_end` (`v ≤ packet_len - base_id - d`, signed), e.g. `len = data_end - p`.
    pub len_bound: Option<(u32, i64)>,
    /// For `NUMBER`: the value shifted right by 32 satisfies the length bound `(id, d)` — the first half of
    /// clang's zero-extension `r <<= 32; r >>= 32` of a length below 2^32; the second half turns it back into
    /// `len_bound`.
    pub len_bound_shl32: Option<(u32, i64)>,
    /// For `NUMBER`: `Some((lo, hi))` means the stack bytes `[lo, hi + v)` are initialised for the value `v`
    /// (a size matching the extent each path wrote; created by joins, docs/verifier.md §3).
    pub init_extent: Option<(i64, i64)>,
    /// Per-kind offsets of a pointer that may point into two or more memory regions (a stack buffer or a map
    /// value chosen on a branch): when the value is a pointer of kind `MEMORY_KINDS[i]`, its offset is in
    /// `kind_off[i]`. `off` stays a sound hull of all of them. `None` for values with at most one memory kind,
    /// where `off` is the offset (docs/verifier.md §3, mixed pointers).
    pub kind_off: Option<Box<[Num; 4]>>,
    /// The reference (the acquiring call's slot) this value is a pointer of, or null for (docs/verifier.md §2,
    /// "References"; `refs.rs`). On an undefined value: the reference it held was released.
    pub ref_id: Option<u32>,
}

/// The memory kinds that carry their own offset in [`Value::kind_off`], in index order.
pub const MEMORY_KINDS: [u16; 4] = [ty::CTX, ty::STACK, ty::PACKET, ty::SHARED];

impl Value {
    pub fn uninit() -> Value {
        Value {
            types: ty::UNINIT,
            num: Num::TOP,
            off: Num::TOP,
            shared_size: 0,
            shared_readonly: false,
            maps: MapSet::UNKNOWN,
            pkt: None,
            copy_id: None,
            len_bound: None,
            len_bound_shl32: None,
            init_extent: None,
            kind_off: None,
            ref_id: None,
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
        let maps = match (self.may_be(has_map), o.may_be(has_map)) {
            (true, true) => self.maps.union(&o.maps),
            (true, false) => self.maps,
            (false, true) => o.maps,
            _ => MapSet::UNKNOWN,
        };
        let pkt = match (self.may_be(ty::PACKET), o.may_be(ty::PACKET)) {
            (true, true) => (self.pkt == o.pkt).then_some(self.pkt).flatten(),
            (true, false) => self.pkt,
            (false, true) => o.pkt,
            _ => None,
        };
        let same = |a: Option<u32>, b: Option<u32>| (a == b).then_some(a).flatten();
        let both_numbers = self.is_number() && o.is_number();
        let len_bound = (both_numbers && self.len_bound == o.len_bound).then_some(self.len_bound).flatten();
        let len_bound_shl32 =
            (both_numbers && self.len_bound_shl32 == o.len_bound_shl32).then_some(self.len_bound_shl32).flatten();
        let types = self.types | o.types;
        // Two or more memory kinds: each kind's offsets are joined with that kind's only.
        let kind_off = ((types & ty::MEMORY).count_ones() >= 2).then(|| {
            Box::new(std::array::from_fn(|i| {
                let k = MEMORY_KINDS[i];
                pick(k, &self.off_of(k), &o.off_of(k))
            }))
        });
        Value {
            types,
            num: pick(ty::NUMBER, &self.num, &o.num),
            off: pick(ty::POINTERS, &self.off, &o.off),
            shared_size,
            shared_readonly: self.shared_readonly || o.shared_readonly,
            maps,
            pkt,
            copy_id: same(self.copy_id, o.copy_id),
            len_bound,
            len_bound_shl32,
            // Re-derived for registers by `State::join_init_extents`, which checks both sides' stacks.
            init_extent: None,
            kind_off,
            // Kept when both sides agree; `refs::join_holder` settles disagreements with both states' references.
            ref_id: same(self.ref_id, o.ref_id),
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
        if self.kind_off.is_some() {
            let per_kind: Vec<String> = ty::NAMES
                .iter()
                .filter(|(b, _)| self.may_be(*b) && MEMORY_KINDS.contains(b))
                .map(|(b, n)| format!("{n}: {}", OffsetDisplay(&self.off_of(*b))))
                .collect();
            write!(f, " offset={{{}}}", per_kind.join(", "))?;
        } else if self.may_be(ty::POINTERS & !(ty::MAP_FD | ty::MAP_FD_PROGRAMS | ty::PACKET_END)) {
            write!(f, " offset={}", OffsetDisplay(&self.off))?;
        }
        if self.may_be(ty::SHARED) {
            write!(f, " region_size={}{}", self.shared_size, if self.shared_readonly { " read-only" } else { "" })?;
        }
        if self.may_be(ty::MAP_FD | ty::MAP_FD_PROGRAMS | ty::SHARED) && self.maps.is_known() {
            let list: Vec<String> = self.maps.iter().map(|m| m.to_string()).collect();
            if list.len() == 1 {
                write!(f, " map={}", list[0])?;
            } else {
                write!(f, " map∈{{{}}}", list.join(", "))?;
            }
        }
        if let (true, Some((id, d))) = (self.may_be(ty::PACKET), self.pkt) {
            if id != 0 {
                write!(f, " {}+{d}", super::relations::packet_base_name(id))?;
            }
        }
        match self.ref_id {
            Some(k) if self.may_be(ty::UNINIT) => write!(f, " (released reference acquired at instruction {k})"),
            Some(k) => write!(f, " reference acquired at instruction {k}"),
            None => Ok(()),
        }
    }
}

/// A set of candidate map indices inside one aligned window of 64 indices; empty means unknown. Sets from
/// different windows do not combine (the union is unknown), which only costs precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MapSet {
    base: u32,
    bits: u64,
}

impl MapSet {
    pub const UNKNOWN: MapSet = MapSet { base: 0, bits: 0 };

    pub fn one(map: u32) -> MapSet {
        MapSet { base: map & !63, bits: 1 << (map & 63) }
    }

    pub fn is_known(&self) -> bool {
        self.bits != 0
    }

    /// The map, when there is exactly one candidate.
    pub fn single(&self) -> Option<u32> {
        (self.bits.count_ones() == 1).then(|| self.base + self.bits.trailing_zeros())
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..64).filter(|i| self.bits >> i & 1 == 1).map(|i| self.base + i)
    }

    pub fn union(&self, o: &MapSet) -> MapSet {
        if self.is_known() && o.is_known() && self.base == o.base {
            MapSet { base: self.base, bits: self.bits | o.bits }
        } else {
            MapSet::UNKNOWN
        }
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
    /// Aligned 8-byte slots (key = offset of the slot's lowest byte) holding a known value. Shared between
    /// copies of a state until one of them changes it ([`Stack::spills_mut`]): a conditional jump copies the
    /// state, and a join of two copies that did not store keeps the shared map (docs/verifier.md §7).
    pub spills: Arc<BTreeMap<i64, Value>>,
    /// Aligned 4-byte slots holding a known number below 2^32 (an `int` local kept on the stack, e.g. a loop
    /// counter at `-O0` or a `volatile` one). Never overlaps a spill: every store clobbers what it overlaps.
    pub narrow: BTreeMap<i64, Value>,
}

impl Stack {
    pub fn new(frames: usize) -> Stack {
        Stack { init: vec![0; frames * FRAME_STRIDE as usize / 64], spills: Arc::default(), narrow: BTreeMap::new() }
    }

    /// The spills for writing: unshared first if another state holds them too.
    pub fn spills_mut(&mut self) -> &mut BTreeMap<i64, Value> {
        Arc::make_mut(&mut self.spills)
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

    /// The value of the 8-byte spill or 4-byte number slot starting at `k`.
    pub fn slot(&self, k: i64) -> Option<&Value> {
        self.spills.get(&k).or_else(|| self.narrow.get(&k))
    }

    pub fn slot_mut(&mut self, k: i64) -> Option<&mut Value> {
        if self.spills.contains_key(&k) {
            self.spills_mut().get_mut(&k)
        } else {
            self.narrow.get_mut(&k)
        }
    }

    /// Whether both stacks have the same bytes initialised.
    pub fn same_init(&self, o: &Stack) -> bool {
        self.init == o.init
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
        let narrow: Vec<i64> = self.narrow.range(lo - 3..hi).filter(|(k, _)| **k + 4 > lo).map(|(k, _)| *k).collect();
        for k in narrow {
            self.narrow.remove(&k);
        }
        let keys: Vec<i64> = self.overlapping(lo, hi).map(|(k, _)| *k).collect();
        for k in keys {
            let v = self.spills_mut().remove(&k).expect("present");
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
        if self.spills.keys().next().is_some_and(|k| *k < bottom) {
            self.spills_mut().retain(|k, _| *k >= bottom);
        }
        self.narrow.retain(|k, _| *k >= bottom);
    }

    /// The join (or widening) of two stacks: `f` combines two 4-byte number slots, `spill` two spills.
    fn combine(
        &self,
        o: &Stack,
        f: impl Fn(&Value, &Value) -> Value,
        spill: impl Fn(&Value, &Value) -> Value,
    ) -> Stack {
        let init = self.init.iter().zip(&o.init).map(|(a, b)| a & b).collect();
        // Two copies of one map join to the same map when every spill joined with itself is itself and kept:
        // then the shared map is the join, and it stays shared.
        let unchanged = |v: &Value| {
            let w = spill(v, v);
            !w.may_be(ty::UNINIT) && w == *v
        };
        let spills = if Arc::ptr_eq(&self.spills, &o.spills) && self.spills.values().all(unchanged) {
            Arc::clone(&self.spills)
        } else {
            Arc::new(
                self.spills
                    .iter()
                    .filter_map(|(k, v)| o.spills.get(k).map(|w| (*k, spill(v, w))))
                    .filter(|(_, v)| !v.may_be(ty::UNINIT))
                    .collect::<SortedMap<_, _>>()
                    .0,
            )
        };
        let narrow = self
            .narrow
            .iter()
            .filter_map(|(k, v)| o.narrow.get(k).map(|w| (*k, f(v, w))))
            .filter(|(_, v)| v.is_number())
            .collect::<SortedMap<_, _>>()
            .0;
        let mut s = Stack { init, spills, narrow };
        // Bytes of a pointer spill dropped by the join must not stay readable as numbers.
        for (k, v) in self.spills.iter().chain(o.spills.iter()) {
            if v.may_be(ty::POINTERS) && !s.spills.contains_key(k) {
                for b in *k..*k + 8 {
                    s.set_init(b, false);
                }
            }
        }
        s
    }
}

/// Where a copied value lives: a register index or the stack offset of a spill slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyHolder {
    Reg(usize),
    Spill(i64),
}

/// First copy identity of register/spill copies (`mov`, spill reloads); identities below it belong to
/// map-lookup results (helper call slot + 1).
pub const COPY_ID_LINKS: u32 = 1 << 31;

/// A caller's registers saved across a local call (r6..r9 and their loop deltas).
#[derive(Clone, Debug, PartialEq)]
pub struct SavedFrame {
    pub regs: [Value; 4],
    pub deltas: BTreeMap<u64, [Option<Delta>; 4]>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub regs: [Value; 11],
    pub stack: Stack,
    /// Saved caller frames, outermost first.
    pub frames: Vec<SavedFrame>,
    /// Packet ranges proven by comparisons with `data_end` (module doc). Absent = 0.
    pub packet_ranges: BTreeMap<u32, i64>,
    /// For each loop head (a node key): how much each register and stack slot changed since the last visit of
    /// the head, when it changed only by copies and constant additions that cannot wrap.
    pub deltas: BTreeMap<u64, LoopDeltas>,
    /// Pairs of registers that hold values of the same kind in one region (docs/verifier.md §3).
    pub same_kind: SameKind,
    /// The references the program may hold (the acquiring calls' slots; docs/verifier.md §2, "References").
    pub refs: BTreeSet<u32>,
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
            same_kind: SameKind::default(),
            refs: BTreeSet::new(),
        }
    }

    /// What is left in a state a conditional jump moved into its successors ([`super::transfer::Successors::Split`]):
    /// no frame, nothing allocated. Never analysed.
    pub fn spent() -> State {
        State {
            regs: std::array::from_fn(|_| Value::uninit()),
            stack: Stack { init: Vec::new(), spills: Arc::default(), narrow: BTreeMap::new() },
            frames: Vec::new(),
            packet_ranges: BTreeMap::new(),
            deltas: BTreeMap::new(),
            same_kind: SameKind::default(),
            refs: BTreeSet::new(),
        }
    }

    pub fn packet_range(&self, id: u32) -> i64 {
        self.packet_ranges.get(&id).copied().unwrap_or(0)
    }

    pub fn join(&self, o: &State) -> State {
        self.combine(o, |a, b| a.join(b), |a, b| a.join(b), true)
    }

    /// Widening derives no new initialised extents (they only shrink), so chains of widenings stabilise.
    pub fn widen(&self, o: &State, t: &Thresholds) -> State {
        self.combine(o, |a, b| a.widen(b, t), |a, b| a.widen(b, t), false)
    }

    fn combine(
        &self,
        o: &State,
        f: impl Fn(&Value, &Value) -> Value,
        g: impl Fn(&Num, &Num) -> Num,
        derive: bool,
    ) -> State {
        // A holder whose sides disagree about its reference is settled against both sides' references.
        let f = |a: &Value, b: &Value| super::refs::join_holder(a, b, &self.refs, &o.refs, f(a, b));
        let regs = std::array::from_fn(|i| f(&self.regs[i], &o.regs[i]));
        let frames = self
            .frames
            .iter()
            .zip(&o.frames)
            .map(|(a, b)| SavedFrame {
                regs: std::array::from_fn(|i| f(&a.regs[i], &b.regs[i])),
                deltas: join_saved_deltas(&a.deltas, &b.deltas, &g),
            })
            .collect();
        let packet_ranges = self
            .packet_ranges
            .iter()
            .filter_map(|(k, v)| o.packet_ranges.get(k).map(|w| (*k, (*v).min(*w))))
            .collect::<SortedMap<_, _>>()
            .0;
        let mut regs: [Value; 11] = regs;
        for (i, r) in regs.iter_mut().enumerate() {
            r.len_bound = self.joined_len_bound(&self.regs[i], o, &o.regs[i]);
        }
        let stack =
            self.stack.combine(&o.stack, f, |a, b| Value { len_bound: self.joined_len_bound(a, o, b), ..f(a, b) });
        self.join_init_extents(o, &mut regs, &stack, derive);
        let deltas = self
            .deltas
            .iter()
            .filter_map(|(k, a)| o.deltas.get(k).map(|b| (*k, a.combine(b, &g))))
            .collect::<SortedMap<_, _>>()
            .0;
        let same_kind = SameKind::joined(self, o);
        // May-hold: a reference held on one side only is still held (a leak unless released later).
        let refs = self.refs.union(&o.refs).copied().collect();
        State { regs, stack, frames, packet_ranges, deltas, same_kind, refs }
    }

    /// Removes packet pointers everywhere (a helper that may move the packet was called).
    pub fn invalidate_packet(&mut self) {
        for r in self.regs.iter_mut().chain(self.frames.iter_mut().flat_map(|f| f.regs.iter_mut())) {
            if r.may_be(ty::PACKET | ty::PACKET_END) {
                *r = Value::uninit();
            }
        }
        for v in self.values_mut() {
            v.len_bound = None;
            v.len_bound_shl32 = None;
            // Packet spills removed below leave uninitialised bytes.
            v.init_extent = None;
        }
        let keys: Vec<i64> =
            self.stack.spills.iter().filter(|(_, v)| v.may_be(ty::PACKET | ty::PACKET_END)).map(|(k, _)| *k).collect();
        for k in keys {
            self.stack.spills_mut().remove(&k);
            for b in k..k + 8 {
                self.stack.set_init(b, false);
            }
        }
        self.packet_ranges.clear();
    }

    /// Forgets the ranges of packet ids no register or spill carries any more (id 0, the packet size, stays).
    pub fn gc_packet_ranges(&mut self) {
        let mut live: Vec<u32> = vec![0, super::relations::META_ROOM];
        let held = self
            .regs
            .iter()
            .chain(self.frames.iter().flat_map(|f| f.regs.iter()))
            .chain(self.stack.spills.values())
            .chain(self.stack.narrow.values());
        let ids = |v: &Value| [v.pkt, v.len_bound, v.len_bound_shl32].map(|f| f.map(|(id, _)| id));
        live.extend(held.flat_map(ids).flatten());
        self.packet_ranges.retain(|id, _| live.contains(id));
    }

    /// Strips relational packet id `id` from every holder (the id is about to denote a new base).
    pub fn forget_packet_id(&mut self, id: u32) {
        let strip = |v: &mut Value| {
            if matches!(v.pkt, Some((i, _)) if i == id) {
                v.pkt = None;
            }
            if matches!(v.len_bound, Some((i, _)) if i == id) {
                v.len_bound = None;
            }
            if matches!(v.len_bound_shl32, Some((i, _)) if i == id) {
                v.len_bound_shl32 = None;
            }
        };
        // Every holder, 4-byte number slots included: a stale bound would relate a number to the new base.
        self.values_mut().for_each(strip);
        self.packet_ranges.remove(&id);
    }
}

impl State {
    /// Every value in the state: registers, saved caller registers, spills.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Value> {
        self.regs
            .iter_mut()
            .chain(self.frames.iter_mut().flat_map(|f| f.regs.iter_mut()))
            .chain(Arc::make_mut(&mut self.stack.spills).values_mut())
            .chain(self.stack.narrow.values_mut())
    }

    /// Records how a write changed `target` in the deltas of every loop head.
    pub fn record_change(&mut self, target: Loc, change: Change) {
        for d in self.deltas.values_mut() {
            d.apply(target, change);
        }
    }

    /// Strips copy identity `id` from every holder (a new value is about to get it).
    pub fn forget_copy_id(&mut self, id: u32) {
        for v in self.values_mut() {
            if v.copy_id == Some(id) {
                v.copy_id = None;
            }
        }
    }

    /// Narrows every number holding copy identity `id` to `n` (a branch learnt `n` about one of the equal copies);
    /// false if some copy cannot have a value in `n`, i.e. the branch is infeasible.
    pub fn refine_copies_num(&mut self, id: u32, n: &Num) -> bool {
        for v in self.values_mut() {
            if v.copy_id == Some(id) && v.is_number() {
                match v.num.meet(n) {
                    Some(m) => v.num = m,
                    None => return false,
                }
            }
        }
        true
    }

    /// Links `dst` to the value in `src` by a shared copy identity (reusing `src`'s, or `fresh` after taking it
    /// from every other holder): both hold the same concrete value.
    pub fn link_copy(&mut self, src: CopyHolder, fresh: u32) -> u32 {
        let existing = match src {
            CopyHolder::Reg(r) => self.regs[r].copy_id,
            CopyHolder::Spill(k) => self.stack.slot(k).and_then(|v| v.copy_id),
        };
        if let Some(id) = existing {
            return id;
        }
        self.forget_copy_id(fresh);
        match src {
            CopyHolder::Reg(r) => self.regs[r].copy_id = Some(fresh),
            CopyHolder::Spill(k) => {
                if let Some(v) = self.stack.slot_mut(k) {
                    v.copy_id = Some(fresh);
                }
            }
        }
        fresh
    }

    /// Replaces every holder of copy identity `id` by `refined` (the holders are equal, so a fact learnt about
    /// one — a null check — holds for all).
    pub fn refine_copies(&mut self, id: u32, refined: &Value) {
        for v in self.values_mut() {
            if v.copy_id == Some(id) {
                *v = refined.clone();
            }
        }
    }
}

fn join_saved_deltas(
    a: &BTreeMap<u64, [Option<Delta>; 4]>,
    b: &BTreeMap<u64, [Option<Delta>; 4]>,
    g: &impl Fn(&Num, &Num) -> Num,
) -> BTreeMap<u64, [Option<Delta>; 4]> {
    a.iter()
        .filter_map(|(k, x)| {
            let y = b.get(k)?;
            Some((*k, std::array::from_fn(|i| combine_delta(x[i], y[i], g))))
        })
        .collect::<SortedMap<_, _>>()
        .0
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
        for (k, v) in self.stack.spills.iter() {
            write!(f, "stack[{k}]: {v}; ")?;
        }
        if !self.refs.is_empty() {
            let list: Vec<String> = self.refs.iter().map(|k| k.to_string()).collect();
            write!(f, "references held: acquired at {}; ", list.join(", "))?;
        }
        for (id, r) in &self.packet_ranges {
            if *id == 0 {
                write!(f, "packet_size >= {r}; ")?;
            } else if *id == super::relations::META_ROOM {
                write!(f, "data - data_meta >= {r}; ")?;
            } else {
                write!(f, "packet_base#{id} + {r} <= packet_size; ")?;
            }
        }
        Ok(())
    }
}
