//! The relational facts added for issue 12's patterns 3, 6 and 7 (docs/verifier.md §3): per-kind offsets of
//! pointers that may point into several regions, length bounds learnt by comparisons, and initialised stack
//! extents tied to a size. The fields live in [`Value`]; the operations on them are here.

use super::num::Num;
use super::state::{ty, Stack, State, Value, MEMORY_KINDS, STACK_FRAME_SIZE};

/// Key of [`State::packet_ranges`] holding the metadata room: `m` there means `data - data_meta >= m`, i.e. the
/// `m` bytes before `data` are packet metadata a program may access (docs/verifier.md §3, `data_meta`).
pub const META_ROOM: u32 = u32::MAX;
/// Relational packet id of `data_meta` on platforms whose `data_meta` is the start of the metadata before
/// `data`: a pointer with `pkt = (META_BASE, d)` is `data_meta + d` (`base_META = data_meta - data <= 0`).
pub const META_BASE: u32 = u32::MAX - 1;

/// How a relational packet base is shown: `data_meta` or `packet_base#id`.
pub fn packet_base_name(id: u32) -> String {
    if id == META_BASE {
        "data_meta".into()
    } else {
        format!("packet_base#{id}")
    }
}

impl State {
    /// The metadata room proven so far (0: none).
    pub fn meta_room(&self) -> i64 {
        self.packet_range(META_ROOM)
    }

    /// Records that `data - data_meta >= m`.
    pub fn learn_meta_room(&mut self, m: i64) {
        if m > self.meta_room() {
            self.packet_ranges.insert(META_ROOM, m);
        }
    }
}

impl Value {
    /// The offset interval of this value when it is a pointer of memory kind `kind`.
    pub fn off_of(&self, kind: u16) -> Num {
        match (&self.kind_off, MEMORY_KINDS.iter().position(|k| *k == kind)) {
            (Some(offs), Some(i)) => offs[i],
            _ => self.off,
        }
    }

    /// The value restricted to one memory kind `kind` (with its own offset), keeping the non-memory kinds: every
    /// check made on each view of a mixed pointer is the check of the pointer.
    pub fn view(&self, kind: u16) -> Value {
        Value {
            types: kind | (self.types & !ty::MEMORY),
            off: self.off_of(kind),
            pkt: self.pkt.filter(|_| kind == ty::PACKET),
            kind_off: None,
            ..self.clone()
        }
    }

    /// One view per memory kind of a pointer with per-kind offsets, or the value itself.
    pub fn views(&self) -> Vec<Value> {
        match self.kind_off {
            None => vec![self.clone()],
            Some(_) => MEMORY_KINDS.iter().filter(|k| self.may_be(**k)).map(|k| self.view(*k)).collect(),
        }
    }

    /// The value with every offset (the hull and each kind's) mapped by `f`: pointer ± number moves each
    /// possible pointer by the same amount.
    pub fn map_offsets(&self, f: impl Fn(&Num) -> Num) -> Value {
        Value {
            off: f(&self.off),
            kind_off: self.kind_off.as_ref().map(|offs| Box::new(offs.map(|o| f(&o)))),
            ..self.clone()
        }
    }
}

impl State {
    /// The length bound of the join of `a` (in `self`) and `b` (in `o`): a bound one side carries survives if
    /// the other side proves it from its packet ranges (`b ≤ ranges[id] - d` there), so `len = min(len, N)`
    /// after `len > N` proved `N + 1` bytes keeps the relation (docs/verifier.md §3).
    pub(super) fn joined_len_bound(&self, a: &Value, o: &State, b: &Value) -> Option<(u32, i64)> {
        if !a.is_number() || !b.is_number() {
            return None;
        }
        let proves = |st: &State, v: &Value, (id, d): (u32, i64)| {
            (id == 0 || st.packet_ranges.contains_key(&id))
                && v.num.smax as i128 + d as i128 <= st.packet_range(id) as i128
        };
        match (a.len_bound, b.len_bound) {
            (Some(x), Some(y)) if x == y => Some(x),
            (Some(x), _) if proves(o, b, x) => Some(x),
            (_, Some(y)) if proves(self, a, y) => Some(y),
            _ => None,
        }
    }

    /// Gives register `r` — and every copy of it — the length bound `(id, d)` learnt by a comparison, unless it
    /// has a bound on another id already (two bounds cannot be kept; the existing one is as sound).
    pub fn tighten_len_bound(&mut self, r: usize, (id, d): (u32, i64)) {
        let tighten = |v: &mut Value| match v.len_bound {
            Some((i, e)) if i == id => v.len_bound = Some((id, e.max(d))),
            None => v.len_bound = Some((id, d)),
            Some(_) => {}
        };
        match self.regs[r].copy_id {
            Some(k) => self.values_mut().filter(|v| v.copy_id == Some(k) && v.is_number()).for_each(tighten),
            None => tighten(&mut self.regs[r]),
        }
    }
}

/// A set of start offsets `b ∈ [lo, hi]` of an initialised extent.
type Extent = (i64, i64);

impl State {
    /// The initialised extents of the joined registers (pattern 3): a number `v` whose value is a size matching
    /// the stack bytes each side initialised keeps `[lo, hi + v)` initialised, so a helper reading `v` bytes at
    /// an offset in `[lo, hi]` is safe after the join although the joined stack lost the bytes one side wrote.
    /// Each side's candidate starts are its own fact and (when `derive`) the starts of its runs of initialised
    /// non-pointer bytes long enough for its own `hi(v)`; a start both sides support holds on both, so in the
    /// join. A candidate must avoid either side's spilled pointers (the join makes their bytes unreadable) and
    /// is kept only where it adds something: some byte of `[lo, hi + hi(v))` is not initialised in the join.
    pub(super) fn join_init_extents(&self, o: &State, regs: &mut [Value; 11], joined: &Stack, derive: bool) {
        let derive = derive && !self.stack.same_init(&o.stack);
        let (mut runs_a, mut runs_b) = (None, None);
        for (i, r) in regs.iter_mut().enumerate().take(10) {
            let (a, b) = (&self.regs[i], &o.regs[i]);
            let max = a.num.umax.max(b.num.umax);
            if !a.is_number() || !b.is_number() || max == 0 || max > STACK_FRAME_SIZE as u64 {
                continue;
            }
            if !derive && (a.init_extent.is_none() || b.init_extent.is_none()) {
                continue;
            }
            let ra = runs_a.get_or_insert_with(|| readable_runs(&self.stack, derive));
            let rb = runs_b.get_or_insert_with(|| readable_runs(&o.stack, derive));
            let (ca, cb) = (candidate_starts(a, ra), candidate_starts(b, rb));
            let max = max as i64;
            let clean = |(lo, hi): Extent| {
                let no_pointer = |st: &Stack| !st.overlapping(lo, hi + max).any(|(_, v)| v.may_be(ty::POINTERS));
                hi + max <= 0 && no_pointer(&self.stack) && no_pointer(&o.stack) && !joined.all_init(lo, hi + max)
            };
            r.init_extent = ca
                .iter()
                .flat_map(|x| cb.iter().map(move |y| (x.0.max(y.0), x.1.min(y.1))))
                .find(|&(lo, hi)| lo <= hi && clean((lo, hi)));
        }
    }

    /// Forgets the initialised extents that may cover a byte of `[lo, hi)` (those bytes may have become
    /// uninitialised: a partly overwritten spilled pointer, a popped frame).
    pub fn forget_init_extents(&mut self, lo: i64, hi: i64) {
        let covers = |v: &Value| {
            v.init_extent
                .is_some_and(|(el, eh)| (el as i128) < hi as i128 && (lo as i128) < eh as i128 + v.num.umax as i128)
        };
        // Every store calls this: look first, so that spills shared with another state stay shared.
        let held = self.regs.iter().chain(self.frames.iter().flat_map(|f| f.regs.iter()));
        if !held.chain(self.stack.spills.values()).chain(self.stack.narrow.values()).any(covers) {
            return;
        }
        for v in self.values_mut() {
            if covers(v) {
                v.init_extent = None;
            }
        }
    }
}

/// The maximal runs `[start, end)` of initialised bytes that hold no part of a spilled pointer (empty unless
/// `derive`).
fn readable_runs(stack: &Stack, derive: bool) -> Vec<(i64, i64)> {
    let mut runs = Vec::new();
    if !derive {
        return runs;
    }
    let pointer_byte = |b: i64| stack.overlapping(b, b + 1).any(|(_, v)| v.may_be(ty::POINTERS));
    let mut start = None;
    for b in stack.bottom()..=0 {
        let readable = b < 0 && stack.is_init(b) && !pointer_byte(b);
        match (readable, start) {
            (true, None) => start = Some(b),
            (false, Some(s)) => {
                runs.push((s, b));
                start = None;
            }
            _ => {}
        }
    }
    runs
}

/// The start offsets at which `v` bytes are initialised on one side: its fact and its runs long enough.
fn candidate_starts(v: &Value, runs: &[(i64, i64)]) -> Vec<Extent> {
    let len = v.num.umax as i64;
    let mut c: Vec<Extent> = v.init_extent.into_iter().collect();
    c.extend(runs.iter().filter(|(s, e)| e - s >= len).map(|(s, e)| (*s, e - len)));
    c
}

/// The kinds a same-kind relation covers: a number, or a pointer into the one context, stack frame family or
/// packet (a map value is excluded: two of them may be in different maps).
const SAME_KIND_TYPES: u16 = ty::NUMBER | ty::CTX | ty::STACK | ty::PACKET;

/// Pairs of registers known to hold values of the same kind (PREVAIL's `r1.type = r2.type`), for pointers that
/// may be several kinds, e.g. `{number, ctx}` after `if (c) { a = 1; b = n; } else { a = ctx + 4; b = ctx; }`.
/// Invariant: *in every concrete state represented, two related registers hold values of one kind among
/// [`SAME_KIND_TYPES`]: both numbers, or both pointers into the context, both into a stack frame, or both into
/// the packet.* Created at joins: a pair is related in the join when on each side it is related or both
/// registers are one and the same kind (each side's concrete states satisfy the invariant, so their union
/// does). Kept by refinement (fewer states); a write to a register unrelates it, except an exact copy (`mov`),
/// which relates it to its source and the source's partners (it holds the same value). Calls clear it.
/// Used by subtraction and comparison of two related registers (the difference or order of two values of one
/// kind in one region reveals no address). The relation set only shrinks along joins, so fixpoints stay finite.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SameKind(u128);

impl SameKind {
    fn bit(i: usize, j: usize) -> u128 {
        let (a, b) = if i < j { (i, j) } else { (j, i) };
        1u128 << (a * 11 + b)
    }

    /// Whether registers `i` and `j` (distinct) are recorded as related.
    pub fn related(&self, i: usize, j: usize) -> bool {
        i != j && self.0 & Self::bit(i, j) != 0
    }

    /// Register `r` was written; `copy_of` is the register it is now an exact copy of.
    pub fn written(&mut self, r: usize, copy_of: Option<usize>) {
        for k in 0..11 {
            if k != r {
                self.0 &= !Self::bit(r, k);
            }
        }
        if let Some(src) = copy_of.filter(|&s| s != r) {
            let before = *self;
            for k in (0..11).filter(|&k| k != r && k != src && before.related(src, k)) {
                self.0 |= Self::bit(r, k);
            }
            self.0 |= Self::bit(r, src);
        }
    }

    pub fn clear(&mut self) {
        self.0 = 0;
    }

    /// Registers `i` and `j` of `s` hold values of one kind: recorded, or both surely the same single kind.
    fn holds(s: &State, i: usize, j: usize) -> bool {
        let (a, b) = (s.regs[i].types, s.regs[j].types);
        s.same_kind.related(i, j) || (a == b && a.count_ones() == 1 && a & SAME_KIND_TYPES != 0)
    }

    /// The pairs related on both sides of a join.
    pub fn joined(a: &State, b: &State) -> SameKind {
        let mut out = 0u128;
        for i in 0..10 {
            for j in i + 1..10 {
                if Self::holds(a, i, j) && Self::holds(b, i, j) {
                    out |= Self::bit(i, j);
                }
            }
        }
        SameKind(out)
    }
}

/// When registers `a` and `b` of `s` are related and may each be several kinds of [`SAME_KIND_TYPES`]: the
/// kinds they can share (the concrete values are of one of them).
pub fn shared_kinds(s: &State, a: usize, b: usize) -> Option<u16> {
    let (ta, tb) = (s.regs[a].types, s.regs[b].types);
    let several = ta.count_ones() > 1 || tb.count_ones() > 1;
    (several && s.same_kind.related(a, b) && (ta | tb) & !SAME_KIND_TYPES == 0).then_some(ta & tb)
}
