//! The depot: the shared free lists behind the magazines, the idle budget that caps idle
//! memory wherever it waits, and the slabs' own counters (misses, discards).
//!
//! A slab is *idle* on a free list or in a magazine. Both caps (`max_idle_per_class`,
//! `max_idle_bytes`) are kept on *units* of idle budget: one per slab on a list, and per
//! magazine one per slab it holds plus at most one spare (a magazine keeps the unit of the
//! slab it hands out, so the next return needs no shared atomic). Units are reserved
//! before a slab goes idle and move with slabs between lists and magazines, so idle
//! memory never passes either cap, even for a moment.
//!
//! Acquire: the fast path pops the magazine ([`Depot::take_fast`]); the slow path
//! ([`Depot::take`]) refills an empty magazine with half its rounds from the list under one
//! lock, or pops the list. Release: the fast path pushes into the magazine for a unit it
//! holds ([`Depot::give_fast`]); the slow path ([`Depot::give`]) spills the upper half of
//! a full magazine to the list, reserves a unit, or frees the slab and counts the discard.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

use super::magazine::{Exclusive, Frozen, Magazine, ROUNDS};
use crate::{PoolClass, PoolError};

/// Slabs waiting in one class, oldest first, with the counters that change only together
/// with the list.
#[derive(Debug, Default)]
struct FreeList {
    slabs: Vec<Vec<u8>>,
    /// Slabs taken from this list for a buffer.
    hits: u64,
    /// Slabs put back on this list by a buffer.
    returned: u64,
    /// The fewest slabs the list held since the last decay mark: the oldest `low` have not
    /// moved since.
    low: usize,
    /// Pops and pushes, for the decay's clock check every [`DECAY_CHECK_EVERY`] of them.
    events: u64,
}

impl FreeList {
    fn pop(&mut self) -> Option<Vec<u8>> {
        let slab = self.slabs.pop()?;
        self.low = self.low.min(self.slabs.len());
        Some(slab)
    }

    /// Counts a pop or a push; `true` every [`DECAY_CHECK_EVERY`]-th.
    fn event(&mut self) -> bool {
        self.events += 1;
        self.events.is_multiple_of(DECAY_CHECK_EVERY)
    }
}

/// Slow-path events (list pops and pushes, misses) between two looks at the clock for the
/// idle decay (jemalloc checks its decay clock every 1000 events).
const DECAY_CHECK_EVERY: u64 = 256;

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
    /// A slow path counted its [`DECAY_CHECK_EVERY`]-th event: time to look at the clock.
    decay_due: AtomicBool,
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
            decay_due: AtomicBool::new(false),
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
        // Keep at most one unit beyond the slabs held: a thread that takes buffers for
        // other threads to drop must not sit on the budget their returns need.
        let keep = mag.len(k) + 1;
        if mag.held(k) > keep {
            self.shrink_held(mag, k, keep);
        }
        Some(slab)
    }

    #[cold]
    fn shrink_held(&self, mag: Exclusive<'_>, k: usize, keep: usize) {
        let held = mag.held(k);
        mag.set_held(k, keep);
        self.release_units(k, held - keep);
    }

    /// The slow path: with a magazine, refill it from the list (one lock) and take one;
    /// without, pop the list. `None`: the class has no idle slab, the caller allocates.
    pub(crate) fn take(&self, mag: Option<Exclusive<'_>>, k: usize) -> Option<Vec<u8>> {
        if let Some(mag) = mag {
            return self.take_fast(mag, k).or_else(|| self.refill(mag, k));
        }
        let slab = {
            let mut list = self.lists[k].lock();
            let slab = list.pop();
            list.hits += u64::from(slab.is_some());
            self.count_event(&mut list);
            slab
        }?;
        self.release_units(k, 1);
        Some(slab)
    }

    /// The magazine is empty: one slab and up to half its rounds more from the list, under
    /// one lock. The batch's storage is reserved outside the lock, and fallibly.
    fn refill(&self, mag: Exclusive<'_>, k: usize) -> Option<Vec<u8>> {
        let half = ROUNDS[k] / 2;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let batched = batch.try_reserve_exact(half).is_ok();
        let slab = {
            let mut list = self.lists[k].lock();
            self.count_event(&mut list);
            let slab = list.pop()?;
            list.hits += 1;
            if batched {
                let at = list.slabs.len().saturating_sub(half);
                batch.extend(list.slabs.drain(at..));
                list.low = list.low.min(at);
            }
            slab
        };
        // Every slab from the list carried a unit: the moved ones keep theirs, the one
        // leaving becomes the spare, and the units the empty magazine held go back.
        let held = mag.held(k);
        let keep = batch.len() + 1;
        mag.set_held(k, keep);
        self.release_units(k, held);
        for idle in batch {
            if mag.push(k, keep, idle).is_err() {
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
        let n = match class {
            PoolClass::Oversize => &self.oversize,
            class => &self.misses[class.index()],
        }
        .fetch_add(1, Relaxed);
        if (n + 1).is_multiple_of(DECAY_CHECK_EVERY) {
            self.decay_due.store(true, Relaxed);
        }
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
    /// magazine, for a unit it already holds; `Err` hands it back.
    #[inline(always)]
    pub(crate) fn give_fast(
        &self,
        mag: Exclusive<'_>,
        k: usize,
        slab: Vec<u8>,
    ) -> Result<(), Vec<u8>> {
        mag.push(k, mag.held(k), slab)?;
        mag.count_returned(k);
        Ok(())
    }

    /// The slow path for a slab a buffer gave back: into the magazine (spilling half of a
    /// full one to the list, reserving a unit), else onto the list, else counted as
    /// discarded and handed back for the caller to [`discard`] once out of its section.
    /// Never panics; holds a lock only for a push or a batch move.
    #[must_use = "a discarded slab must be freed with `discard`"]
    pub(crate) fn give(
        &self,
        mag: Option<Exclusive<'_>>,
        class: PoolClass,
        mut slab: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let k = class.index();
        if class == PoolClass::Oversize || slab.capacity() != class.capacity() {
            self.discarded[k].fetch_add(1, Relaxed);
            return Some(slab);
        }
        slab.clear();
        if let Some(mag) = mag {
            match self
                .give_fast(mag, k, slab)
                .or_else(|slab| self.give_spilling(mag, k, slab))
            {
                Ok(()) => return None,
                Err(back) => slab = back,
            }
        }
        let refused = self.push_list(k, slab, true).err()?;
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
                let Some(idle) = mag.pop(k) else { break };
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
        if !self.reserve_unit(k) {
            return Err(slab);
        }
        mag.set_held(k, held + 1);
        self.give_fast(mag, k, slab).inspect_err(|_| {
            // Cannot happen: fewer than `held + 1` slabs are cached. Undo the unit.
            mag.set_held(k, held);
            self.release_units(k, 1);
        })
    }

    /// Puts an empty slab on its list if the caps have room (reserving its unit), or hands
    /// it back. `from_buffer` counts it as returned.
    fn push_list(&self, k: usize, slab: Vec<u8>, from_buffer: bool) -> Result<(), Vec<u8>> {
        if !self.reserve_unit(k) {
            return Err(slab);
        }
        let mut list = self.lists[k].lock();
        // Never allocate infallibly on a return path: without room, the slab is freed.
        if list.slabs.try_reserve(1).is_err() {
            drop(list);
            self.release_units(k, 1);
            return Err(slab);
        }
        list.slabs.push(slab);
        list.returned += u64::from(from_buffer);
        self.count_event(&mut list);
        Ok(())
    }

    fn count_event(&self, list: &mut FreeList) {
        if list.event() {
            self.decay_due.store(true, Relaxed);
        }
    }

    /// Whether a slow path counted enough events for the decay to look at the clock
    /// (clears the flag).
    pub(crate) fn decay_due(&self) -> bool {
        self.decay_due.load(Relaxed) && self.decay_due.swap(false, Relaxed)
    }

    /// Counts a slab that leaves the pool for good (`into_vec`).
    pub(crate) fn count_detached(&self, class: PoolClass) {
        self.detached[class.index()].fetch_add(1, Relaxed);
    }

    // -------------------------------------------------------------------------------
    // Units
    // -------------------------------------------------------------------------------

    /// Takes one unit of idle budget for class index `k`, if both caps have room.
    fn reserve_unit(&self, k: usize) -> bool {
        let units = &self.units[k];
        let mut cur = units.load(Relaxed);
        loop {
            if cur >= self.max_per_class {
                return false;
            }
            match units.compare_exchange_weak(cur, cur + 1, Relaxed, Relaxed) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        let bytes = PoolClass::non_oversize()[k].capacity() as u64;
        let mut cur = self.budget.load(Relaxed);
        loop {
            if cur + bytes > self.max_bytes {
                units.fetch_sub(1, Relaxed);
                return false;
            }
            match self
                .budget
                .compare_exchange_weak(cur, cur + bytes, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    fn release_units(&self, k: usize, n: usize) {
        if n > 0 {
            self.units[k].fetch_sub(n, Relaxed);
            let bytes = PoolClass::non_oversize()[k].capacity() as u64;
            self.budget.fetch_sub(n as u64 * bytes, Relaxed);
        }
    }

    // -------------------------------------------------------------------------------
    // Whole-pool operations
    // -------------------------------------------------------------------------------

    /// A magazine whose thread exits: its slabs move to the lists with their units (freed,
    /// unit and all, when a list's storage cannot grow), its spare units go back, and its
    /// counters fold into the depot's. The caller holds the magazine list's lock and has
    /// taken the magazine out of the list.
    pub(crate) fn absorb(&self, mag: Exclusive<'_>) {
        for k in 0..4 {
            self.retired_hits[k].fetch_add(mag.magazine().hits(k), Relaxed);
            self.retired_returned[k].fetch_add(mag.magazine().returned(k), Relaxed);
            let held = mag.held(k);
            let cached = mag.len(k);
            let mut moved = 0;
            {
                let mut list = self.lists[k].lock();
                let room = list.slabs.try_reserve(cached).is_ok();
                // Oldest first, as they lay in the magazine: the list's low-water mark
                // does not cover them (they moved), so they start a new idle window.
                let mut slabs = Vec::new();
                mag.take_all(k, &mut slabs);
                for slab in slabs {
                    if room {
                        list.slabs.push(slab);
                        moved += 1;
                    }
                }
            }
            mag.set_held(k, 0);
            self.release_units(k, held - moved);
        }
    }

    /// Takes every idle slab, from the lists and the frozen magazines (their units go too),
    /// into `out`, for the caller to [`release`] once it holds no lock. The lists keep their
    /// storage, so the next return needs no allocation.
    pub(crate) fn trim(&self, frozen: Option<&Frozen<'_>>, out: &mut Vec<Vec<u8>>) {
        for k in 0..4 {
            let before = out.len();
            {
                let mut list = self.lists[k].lock();
                if out.try_reserve(list.slabs.len()).is_err() {
                    list.slabs.clear(); // freed here, rarely, without the madvise
                }
                out.append(&mut list.slabs);
                list.low = 0;
            }
            self.release_units(k, out.len() - before);
            for mag in frozen.into_iter().flat_map(Frozen::iter) {
                while let Some(slab) = mag.pop(k) {
                    out.push(slab);
                }
                self.release_units(k, mag.held(k));
                mag.set_held(k, 0);
                mag.mark(k);
            }
        }
    }

    /// The idle decay: takes every slab that has not moved since the last decay mark (the
    /// oldest of each list and magazine stack, below their low-water marks), from the
    /// lists and the frozen magazines, into `out`, and marks anew. Returns how many it took
    /// per class, for the caller to [`count_decayed`](Self::count_decayed) once their pages
    /// are gone.
    pub(crate) fn decay(&self, frozen: &Frozen<'_>, out: &mut Vec<Vec<u8>>) -> [u64; 4] {
        let mut taken = [0; 4];
        for (k, count) in taken.iter_mut().enumerate() {
            let before = out.len();
            {
                let mut list = self.lists[k].lock();
                let n = list.low.min(list.slabs.len());
                out.extend(list.slabs.drain(..n));
                list.low = list.slabs.len();
            }
            self.release_units(k, out.len() - before);
            for mag in frozen.iter() {
                let n = mag.take_unmoved(k, out);
                mag.set_held(k, mag.held(k) - n);
                self.release_units(k, n);
            }
            *count = (out.len() - before) as u64;
        }
        taken
    }

    /// Counts slabs the decay took as decayed, after their pages went back to the system:
    /// a snapshot that reads them decayed never finds their memory still resident.
    pub(crate) fn count_decayed(&self, taken: [u64; 4]) {
        for (counter, n) in self.decayed.iter().zip(taken) {
            counter.fetch_add(n, Relaxed);
        }
    }

    /// Slabs freed by the decay, per class.
    pub(crate) fn decayed(&self, k: usize) -> u64 {
        self.decayed[k].load(Relaxed)
    }

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
