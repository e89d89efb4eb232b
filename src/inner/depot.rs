//! The depot: the shared free lists behind the magazines, the idle budget that caps idle
//! memory wherever it waits, and the slabs' own counters (misses, discards).
//!
//! A slab is *idle* on a free list or in a magazine. Both caps (`max_idle_per_class`,
//! `max_idle_bytes`) are kept on *units* of idle budget: one per slab on a list, and per
//! magazine one per slab it holds plus at most [`spare`] more (half its rounds, at least
//! one; a magazine emptied by acquires keeps one). Large and Huge slabs wait on the lists
//! only ([`cached`](super::magazine::cached) says why): every thread reaches them, and no
//! magazine holds their budget. Units are reserved before a slab goes idle and move with
//! slabs between lists and magazines, so idle memory never passes the caps that apply to
//! it, even for a moment: a chain's Medium segment is held to the byte cap alone
//! ([`Caps`]), so after a chain returns, Medium may count more units than
//! `max_idle_per_class`, and no other Medium slab gets one until it is back under. Spare units count against the caps like the others (DESIGN.md: a
//! thread cache may hold budget reserved from the shared cap), so a slab may be discarded
//! while another thread's magazine holds units with no slab behind them; `trim` and a
//! thread's exit give them back, and so does the idle decay.
//!
//! The spare units are what makes a slab that crosses threads cheaper (issue 19): a thread
//! that only drops (a consumer, in the magazine it adopted: `local.rs`) reserves units half
//! a magazine at a time, and a thread that only acquires (its producer) gives them back
//! half a magazine at a time, so the two shared words of the budget move once per half
//! magazine on each side instead of once per slab, the way Bonwick and Adams' depot trades
//! whole magazines rather than rounds. A magazine keeps the unit of the slab it hands out,
//! so a thread that acquires and drops needs no shared atomic at all. Measured
//! (`cargo bench --bench threads -- handoff`, medians of three runs on the shared 2-core
//! machine): 16 Small buffers handed unfrozen to a thread that never acquires, 144 to
//! 121 ns a buffer; dropped by the thread that made them, 89 to 69 ns (frozen); handed
//! over frozen, no change that stands out of the owner box's cost (`box-cross`, about
//! 160 ns by itself); the same-thread cycle unchanged.
//!
//! Acquire: the fast path pops the magazine ([`Depot::take_fast`]); the slow path
//! ([`Depot::take`]) refills an empty magazine with half its rounds from the list under one
//! lock, or pops the list. Release: the fast path pushes into the magazine for a unit it
//! holds ([`Depot::give_fast`]); the slow path ([`Depot::give`]) spills the upper half of
//! a full magazine to the list, reserves a unit, or frees the slab and counts the discard.
//!
//! # Idle stamps and the decay
//!
//! Every idle slab carries the coarse time it went idle ([`super::clock`]): beside it on a
//! list, in a parallel array in a magazine's stack. The stamp moves with the slab (refill,
//! spill, a thread's exit), so it always says when the slab last left a buffer. The decay
//! ([`Depot::decay`]) frees every slab stamped at or before a cutoff, wherever it waits, in
//! one pass: no mark and no earlier pass needed. It also gives back the spare units of
//! every magazine (held down to the slabs it holds), so a quiet pool's idle budget reaches
//! zero, and the decay thread, which ticks only while some pool's budget is above zero,
//! parks. The reservation that takes a pool's budget from zero refreshes the coarse clock
//! (the slab it is for gets a fresh stamp) and raises [`Depot::take_went_idle`] for the
//! caller to wake that thread once out of its section.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

use super::clock;
use super::magazine::{cached, Exclusive, Magazine, ROUNDS};
use crate::{PoolClass, PoolError};

mod reclaim;

/// The idle caps a returned slab is kept under.
///
/// A whole buffer's slab is kept under both (`max_idle_per_class` and `max_idle_bytes`). A
/// chain's Medium segment is kept under the byte cap alone: a chunked body grows by Medium
/// segments (192 for 12 MiB), and the count cap, set for whole slabs, freed all but 64 of
/// them on every return; glibc then trimmed its heap and the next body faulted every page
/// of the rest in again (measured in a fresh process: 3.2 ms a 12 MiB chunked body against
/// 0.92 ms for `BytesMut`, 2 000 page faults a body; 0.91 ms with the segments kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caps {
    /// `max_idle_per_class` and `max_idle_bytes`.
    Both,
    /// `max_idle_bytes` alone.
    Bytes,
}

/// The most idle-budget units a magazine holds for class index `k` beyond its slabs: half
/// its rounds, at least one; none for a class it does not cache (see the module docs).
#[inline(always)]
pub(crate) fn spare(k: usize) -> usize {
    SPARE[k]
}

/// [`spare`] per class index, computed once: the acquire's fast path reads it.
const SPARE: [usize; 4] = {
    let mut spare = [0; 4];
    let mut k = 0;
    while k < 4 {
        spare[k] = if ROUNDS[k] == 0 {
            0
        } else if ROUNDS[k] / 2 > 1 {
            ROUNDS[k] / 2
        } else {
            1
        };
        k += 1;
    }
    spare
};

/// An idle slab and the coarse time (milliseconds) it went idle.
type Idle = (Vec<u8>, u64);

/// Slabs waiting in one class (the newest pushed last, popped first), each with its stamp,
/// and the counters that change only together with the list.
#[derive(Debug, Default)]
struct FreeList {
    slabs: Vec<Idle>,
    /// Slabs taken from this list for a buffer.
    hits: u64,
    /// Slabs put back on this list by a buffer.
    returned: u64,
}

/// Per-class idle figures, read consistently.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ClassFigures {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) idle: u64,
    /// Slabs a buffer gave back to the pool (pooled, discarded or detached).
    pub(crate) released: u64,
    pub(crate) discarded: u64,
}

#[derive(Debug)]
pub(crate) struct Depot {
    lists: [Mutex<FreeList>; 4],
    /// Idle-budget units taken, per class: list slabs plus units magazines hold.
    units: [AtomicUsize; 4],
    /// The same units in bytes, across classes.
    budget: AtomicU64,
    max_per_class: usize,
    max_bytes: u64,
    misses: [AtomicU64; 4],
    oversize: AtomicU64,
    /// Slabs a buffer gave back that were freed instead of pooled, per class.
    discarded: [AtomicU64; 5],
    /// Slabs that left for good (`into_vec`), or an Oversize slab grown into a new one.
    detached: [AtomicU64; 5],
    alloc_failures: AtomicU64,
    /// Slabs freed by the idle decay, per class.
    decayed: [AtomicU64; 4],
    /// A reservation took the idle budget from zero: the decay thread must be woken.
    went_idle: AtomicBool,
    /// Figures of magazines whose thread has exited.
    retired_hits: [AtomicU64; 4],
    retired_returned: [AtomicU64; 4],
}

impl Depot {
    pub(crate) fn new(max_per_class: usize, max_bytes: u64) -> Depot {
        Depot {
            lists: std::array::from_fn(|_| {
                Mutex::new(FreeList {
                    // Reserved up front (bounded) so a return rarely allocates.
                    slabs: Vec::with_capacity(max_per_class.min(1024)),
                    ..FreeList::default()
                })
            }),
            units: Default::default(),
            budget: AtomicU64::new(0),
            max_per_class,
            max_bytes,
            misses: Default::default(),
            oversize: AtomicU64::new(0),
            discarded: Default::default(),
            detached: Default::default(),
            alloc_failures: AtomicU64::new(0),
            decayed: Default::default(),
            went_idle: AtomicBool::new(false),
            retired_hits: Default::default(),
            retired_returned: Default::default(),
        }
    }

    // -------------------------------------------------------------------------------
    // Acquire
    // -------------------------------------------------------------------------------

    /// The fast path: a slab from the magazine, counted as a hit.
    #[inline(always)]
    pub(crate) fn take_fast(&self, mag: Exclusive<'_>, k: usize) -> Option<Vec<u8>> {
        let slab = mag.pop(k)?;
        mag.count_hit(k);
        // Keep at most `spare` units beyond the slabs held, and one once the magazine is
        // empty: a thread that takes buffers for other threads to drop must not sit on the
        // budget their returns need. So it gives units back half a magazine at a time.
        let (len, held) = (mag.len(k), mag.held(k));
        let most = if len == 0 { 1 } else { len + spare(k) };
        if held > most {
            self.shrink_held(mag, k, len + 1);
        }
        Some(slab)
    }

    #[cold]
    fn shrink_held(&self, mag: Exclusive<'_>, k: usize, keep: usize) {
        let held = mag.held(k);
        mag.set_held(k, keep);
        self.release_units(k, held - keep);
    }

    /// The slow path: with a magazine and a class it caches, refill it from the list (one
    /// lock) and take one; otherwise pop the list. `None`: the class has no idle slab, the
    /// caller allocates.
    pub(crate) fn take(&self, mag: Option<Exclusive<'_>>, k: usize) -> Option<Vec<u8>> {
        if let Some(mag) = mag.filter(|_| cached(k)) {
            return self.take_fast(mag, k).or_else(|| self.refill(mag, k));
        }
        let (slab, _) = {
            let mut list = self.lists[k].lock();
            let slab = list.slabs.pop();
            list.hits += u64::from(slab.is_some());
            slab
        }?;
        self.release_units(k, 1);
        Some(slab)
    }

    /// The magazine is empty: one slab and up to half its rounds more from the list, under
    /// one lock. The batch's storage is reserved outside the lock, and fallibly.
    fn refill(&self, mag: Exclusive<'_>, k: usize) -> Option<Vec<u8>> {
        let half = ROUNDS[k] / 2;
        let mut batch: Vec<Idle> = Vec::new();
        let batched = batch.try_reserve_exact(half).is_ok();
        let (slab, _) = {
            let mut list = self.lists[k].lock();
            let slab = list.slabs.pop()?;
            list.hits += 1;
            if batched {
                let at = list.slabs.len().saturating_sub(half);
                batch.extend(list.slabs.drain(at..));
            }
            slab
        };
        // Every slab from the list carried a unit: the moved ones keep theirs, the one
        // leaving becomes the spare, and the units the empty magazine held go back.
        let held = mag.held(k);
        let keep = batch.len() + 1;
        mag.set_held(k, keep);
        self.release_units(k, held);
        // Each keeps its stamp: it has been idle since it left its last buffer.
        for (idle, since) in batch {
            if mag.push(k, keep, idle, since).is_err() {
                self.release_units(k, 1); // cannot happen: fewer than `keep` slots are used
            }
        }
        Some(slab)
    }

    /// A fresh slab of `bytes` capacity: a miss of a pooled class, or an Oversize
    /// allocation.
    pub(crate) fn allocate(&self, class: PoolClass, bytes: usize) -> Result<Vec<u8>, PoolError> {
        let mut slab = Vec::new();
        if slab.try_reserve_exact(bytes).is_err() {
            self.alloc_failures.fetch_add(1, Relaxed);
            return Err(PoolError::AllocFailed { class, bytes });
        }
        match class {
            PoolClass::Oversize => &self.oversize,
            class => &self.misses[class.index()],
        }
        .fetch_add(1, Relaxed);
        Ok(slab)
    }

    /// Grows an Oversize slab (the allocator may move it) to exactly `capacity`.
    pub(crate) fn grow_oversize(
        &self,
        slab: &mut Vec<u8>,
        capacity: usize,
    ) -> Result<(), PoolError> {
        if slab.try_reserve_exact(capacity - slab.len()).is_err() {
            self.alloc_failures.fetch_add(1, Relaxed);
            return Err(PoolError::AllocFailed {
                class: PoolClass::Oversize,
                bytes: capacity,
            });
        }
        // The old allocation was given up (grown or moved): one detached, one allocated.
        self.detached[PoolClass::Oversize.index()].fetch_add(1, Relaxed);
        self.oversize.fetch_add(1, Relaxed);
        Ok(())
    }

    // -------------------------------------------------------------------------------
    // Release
    // -------------------------------------------------------------------------------

    /// The fast path: an empty slab of exactly class index `k`'s capacity into the
    /// magazine, for a unit it already holds, stamped with the coarse clock (one relaxed
    /// load); `Err` hands it back.
    #[inline(always)]
    pub(crate) fn give_fast(
        &self,
        mag: Exclusive<'_>,
        k: usize,
        slab: Vec<u8>,
    ) -> Result<(), Vec<u8>> {
        mag.push(k, mag.held(k), slab, clock::coarse())?;
        mag.count_returned(k);
        Ok(())
    }

    /// The slow path for a slab a buffer gave back: into the magazine (spilling half of a
    /// full one to the list, reserving a unit), else onto the list, else counted as
    /// discarded and handed back for the caller to [`discard`] once out of its section.
    /// Never panics; holds a lock only for a push or a batch move.
    /// A chain's Medium segment ([`Caps::Bytes`]) the count cap refuses still goes on the
    /// list while the byte cap has room.
    #[must_use = "a discarded slab must be freed with `discard`"]
    pub(crate) fn give(
        &self,
        mag: Option<Exclusive<'_>>,
        class: PoolClass,
        mut slab: Vec<u8>,
        caps: Caps,
    ) -> Option<Vec<u8>> {
        let k = class.index();
        if class == PoolClass::Oversize || slab.capacity() != class.capacity() {
            self.discarded[k].fetch_add(1, Relaxed);
            return Some(slab);
        }
        slab.clear();
        if let Some(mag) = mag.filter(|_| cached(k)) {
            match self
                .give_fast(mag, k, slab)
                .or_else(|slab| self.give_spilling(mag, k, slab))
            {
                Ok(()) => return None,
                Err(back) => slab = back,
            }
        }
        let max_count = match caps {
            Caps::Both => self.max_per_class,
            Caps::Bytes => usize::MAX,
        };
        let refused = self.push_list(k, slab, max_count).err()?;
        self.discarded[k].fetch_add(1, Relaxed);
        Some(refused)
    }

    /// The magazine has no unit to spare: spill its upper half when full, then reserve a
    /// unit for the slab.
    fn give_spilling(&self, mag: Exclusive<'_>, k: usize, slab: Vec<u8>) -> Result<(), Vec<u8>> {
        let mut held = mag.held(k);
        if held >= ROUNDS[k] {
            // Full: the upper half moves to the list under one lock, units and all.
            let keep = held / 2;
            let mut list = self.lists[k].lock();
            let room = list.slabs.try_reserve(held - keep).is_ok();
            let mut moved = 0;
            while mag.len(k) > keep {
                let Some(idle) = mag.pop_idle(k) else { break };
                if room {
                    list.slabs.push(idle);
                    moved += 1;
                } // else freed: the list's storage could not grow
            }
            drop(list);
            self.release_units(k, (held - keep) - moved);
            held = keep;
            mag.set_held(k, held);
        }
        // Units for this slab and the next few returns, in one reservation.
        let got = self.reserve_units(k, spare(k).min(ROUNDS[k] - held));
        if got == 0 {
            return Err(slab);
        }
        mag.set_held(k, held + got);
        self.give_fast(mag, k, slab).inspect_err(|_| {
            // Cannot happen: fewer than `held + 1` slabs are cached. Undo the units.
            mag.set_held(k, held);
            self.release_units(k, got);
        })
    }

    /// Puts an empty slab a buffer gave back on its list if the byte cap and a count cap
    /// of `max_count` slabs have room (reserving its unit), stamped now, or hands it back.
    fn push_list(&self, k: usize, slab: Vec<u8>, max_count: usize) -> Result<(), Vec<u8>> {
        if self.reserve_units_within(k, 1, max_count) == 0 {
            return Err(slab);
        }
        let mut list = self.lists[k].lock();
        // Never allocate infallibly on a return path: without room, the slab is freed.
        if list.slabs.try_reserve(1).is_err() {
            drop(list);
            self.release_units(k, 1);
            return Err(slab);
        }
        list.slabs.push((slab, clock::coarse()));
        list.returned += 1;
        Ok(())
    }

    /// Whether a reservation took the idle budget from zero since the last call (clears
    /// the flag): the caller wakes the decay thread.
    #[inline]
    pub(crate) fn take_went_idle(&self) -> bool {
        self.went_idle.load(Relaxed) && self.went_idle.swap(false, Relaxed)
    }

    /// Idle-budget bytes taken now, across classes: zero when nothing is idle (a figure).
    pub(crate) fn idle_budget(&self) -> u64 {
        self.budget.load(Relaxed)
    }

    /// Counts a slab that leaves the pool for good (`into_vec`).
    pub(crate) fn count_detached(&self, class: PoolClass) {
        self.detached[class.index()].fetch_add(1, Relaxed);
    }

    // -------------------------------------------------------------------------------
    // Units
    // -------------------------------------------------------------------------------

    /// Takes up to `want` units of idle budget for class index `k`, as many as both caps
    /// have room for (at most `want`, possibly none); returns how many.
    fn reserve_units(&self, k: usize, want: usize) -> usize {
        self.reserve_units_within(k, want, self.max_per_class)
    }

    /// [`reserve_units`](Self::reserve_units) under a count cap of `max_count` slabs:
    /// `max_per_class`, or no count at all for a chain's segments ([`Caps::Bytes`]).
    fn reserve_units_within(&self, k: usize, want: usize, max_count: usize) -> usize {
        let units = &self.units[k];
        let mut cur = units.load(Relaxed);
        let mut got;
        loop {
            got = want.min(max_count.saturating_sub(cur));
            if got == 0 {
                return 0;
            }
            match units.compare_exchange_weak(cur, cur + got, Relaxed, Relaxed) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        let bytes = PoolClass::non_oversize()[k].capacity() as u64;
        let mut cur = self.budget.load(Relaxed);
        let mut fits;
        loop {
            // How many of the `got` units fit under the byte cap (`cur <= max_bytes`).
            fits = (self.max_bytes.saturating_sub(cur) / bytes).min(got as u64);
            if fits == 0 {
                break;
            }
            match self
                .budget
                .compare_exchange_weak(cur, cur + fits * bytes, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        let fits = fits as usize;
        if fits < got {
            units.fetch_sub(got - fits, Relaxed);
        }
        if fits > 0 && cur == 0 {
            self.leave_zero();
        }
        fits
    }

    /// The budget left zero: the first slab to go idle after a quiet spell. Its stamp must
    /// be fresh (nothing may have read the clock for long), and the decay thread wakes.
    #[cold]
    fn leave_zero(&self) {
        clock::refresh();
        self.went_idle.store(true, Relaxed);
    }

    fn release_units(&self, k: usize, n: usize) {
        if n > 0 {
            self.units[k].fetch_sub(n, Relaxed);
            let bytes = PoolClass::non_oversize()[k].capacity() as u64;
            self.budget.fetch_sub(n as u64 * bytes, Relaxed);
        }
    }

    // -------------------------------------------------------------------------------
    // Whole-pool operations (thread exit, trim, the decay: reclaim.rs)
    // -------------------------------------------------------------------------------

    /// Every class's figures. With every magazine frozen (and each list locked while it is
    /// read), a slab is counted in exactly one place; without (the fence failed), the
    /// magazines' figures are read as they are.
    pub(crate) fn figures(&self, magazines: &[Arc<Magazine>]) -> [ClassFigures; 5] {
        let mut out = [ClassFigures::default(); 5];
        for (k, figures) in out.iter_mut().take(4).enumerate() {
            let list = self.lists[k].lock();
            figures.hits = list.hits + self.retired_hits[k].load(Relaxed);
            figures.idle = list.slabs.len() as u64;
            let mut returned = list.returned + self.retired_returned[k].load(Relaxed);
            for mag in magazines {
                figures.hits += mag.hits(k);
                returned += mag.returned(k);
                figures.idle += mag.idle(k) as u64;
            }
            drop(list);
            figures.misses = self.misses[k].load(Relaxed);
            figures.discarded = self.discarded[k].load(Relaxed);
            figures.released = returned + figures.discarded + self.detached[k].load(Relaxed);
        }
        let over = &mut out[4];
        over.misses = self.oversize.load(Relaxed);
        over.discarded = self.discarded[4].load(Relaxed);
        over.released = over.discarded + self.detached[4].load(Relaxed);
        out
    }

    pub(crate) fn alloc_failures(&self) -> u64 {
        self.alloc_failures.load(Relaxed)
    }
}
