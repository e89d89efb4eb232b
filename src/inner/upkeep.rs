//! Upkeep: what runs over the whole pool rather than one buffer. A thread's magazine
//! coming home, `trim`, the idle decay, the live figures, the snapshot, and the pool's
//! drop. Each freezes the magazines (or has them to itself) and takes the locks in the
//! order `mod.rs` states.
//!
//! # The idle decay
//!
//! Every idle slab carries the coarse time it went idle (`depot.rs`, `clock.rs`). A decay
//! frees, in one pass over the lists and the frozen magazines, every slab stamped at or
//! before a cutoff:
//!
//! - `trim_idle` (the user's call): cutoff `now - idle_timeout`, so every slab idle at
//!   least `idle_timeout` goes, whatever ran before. A stamp may lag the moment its slab
//!   went idle by the coarse clock's lag (below), so a slab idle a little less may go too.
//! - `decay_if_due` (the ticker every [`TICK_EVERY`](super::magazine::TICK_EVERY) acquires
//!   of a thread, and the decay thread every period `P`, a quarter of `idle_timeout`, at
//!   most 5 s): at most once per `P`, cutoff `now - idle_timeout - P`. While anything is
//!   idle, the decay thread refreshes the clock at least every `P`, so a stamp lags by at
//!   most `P` (plus scheduling delay): no slab goes before `idle_timeout`, and each goes
//!   within `idle_timeout + 2P` (at most 1.5 times the timeout). Without the thread, the
//!   clock moves with the traffic (the ticker, a budget leaving zero, `trim_idle`), and a
//!   stamp lags by the gap between those: sparse traffic may free a slab early by that gap,
//!   and a pool with no traffic at all keeps its slabs until a call.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::account::TenantAccount;
use super::ledger::Ledger;
use super::magazine::{Frozen, Magazine};
use super::{clock, decay, pages, PoolInner};
use crate::snapshot::BufferPoolSnapshot;
use crate::PoolClass;

impl PoolInner {
    /// A thread's magazine comes home: its stocks go back to the usage words, its slabs to
    /// the lists with their units, its counters into the depot's; all under the magazine
    /// list's lock, so a snapshot sees each figure exactly once. Runs on the thread itself.
    pub(super) fn retire(&self, magazine: &Arc<Magazine>) {
        {
            let _ledger = self.ledger.lock();
            let mut list = self.magazines.lock();
            list.retain(|other| !Arc::ptr_eq(other, magazine));
            // No freezer holds the list lock meanwhile, so no `stealing` flag is set: the
            // section is never refused (if it were, the slabs would be freed with the
            // magazine).
            if let Some(section) = magazine.enter() {
                self.ledger.retire(*section);
                self.depot.absorb(*section);
            }
        }
        // Its stocks went back to the usage words: room for waiters, maybe.
        self.ledger.serve(&self.magazines, None);
    }

    /// Frees every idle slab, on the lists and in every thread's magazine, and gives its
    /// pages back to the system; returns the bytes freed.
    pub(crate) fn trim(&self) -> u64 {
        let mut slabs = Vec::new();
        {
            let list = self.magazines.lock();
            let frozen = Frozen::freeze(&list);
            self.depot.trim(frozen.as_ref(), &mut slabs);
        }
        let bytes = release_counted(slabs);
        if self.config.trim_allocator {
            pages::trim_allocator(); // also what returns refused and freed before the call
        }
        bytes
    }

    /// Frees every slab idle at least `idle_timeout`, at once, and gives its pages back;
    /// returns the bytes freed. Cheap when nothing is idle (no freeze).
    pub(crate) fn trim_idle(&self) -> u64 {
        let Some(timeout) = self.config.idle_timeout else {
            return 0;
        };
        let now = clock::refresh();
        let bytes = self.decay(now.checked_sub(clock::millis(timeout)));
        if bytes > 0 && self.config.trim_allocator {
            pages::trim_allocator();
        }
        bytes
    }

    /// The decay's period: a quarter of `idle_timeout`, from 1 ms to 5 s; `None` without a
    /// timeout.
    pub(super) fn decay_period(&self) -> Option<Duration> {
        let timeout = self.config.idle_timeout?;
        Some((timeout / 4).clamp(Duration::from_millis(1), Duration::from_secs(5)))
    }

    /// The decay of the ticker and the decay thread, `now` being a fresh [`clock::refresh`]:
    /// if some slab is idle and no decay ran in the last period, frees every slab idle at
    /// least `idle_timeout` plus a period (see the module docs for why the period).
    /// Returns the bytes freed.
    pub(super) fn decay_if_due(&self, now: u64) -> u64 {
        let (Some(timeout), Some(period)) = (self.config.idle_timeout, self.decay_period()) else {
            return 0;
        };
        let next = self.next_decay.load(Relaxed);
        if now < next || self.depot.idle_budget() == 0 {
            return 0;
        }
        let period = clock::millis(period);
        // An eighth of slack: the thread's tick may read the clock a millisecond early.
        let claim = now + period - period / 8;
        if self
            .next_decay
            .compare_exchange(next, claim, Relaxed, Relaxed)
            .is_ok()
        {
            return self.decay(now.checked_sub(clock::millis(timeout) + period));
        }
        0
    }

    /// Frees every slab stamped at or before `cutoff` (none if `None`: the process is
    /// younger than the age asked for), and the magazines' spare units; returns the bytes
    /// freed. Counts the slabs decayed once their pages are gone.
    fn decay(&self, cutoff: Option<u64>) -> u64 {
        let Some(cutoff) = cutoff else { return 0 };
        if self.depot.idle_budget() == 0 {
            return 0; // nothing idle, no spare unit: nothing to freeze for
        }
        let mut slabs = Vec::new();
        let taken = {
            let list = self.magazines.lock();
            let Some(frozen) = Frozen::freeze(&list) else {
                return 0; // the fence failed: leave the magazines alone
            };
            self.depot.decay(&frozen, cutoff, &mut slabs)
        };
        let bytes = release_counted(slabs);
        self.depot.count_decayed(taken);
        bytes
    }

    /// Live bytes: the pool's usage minus every thread's stock, read one after another.
    /// Exact when nothing moves meanwhile; under traffic it may lag by the buffers in
    /// flight between threads, and it never reads negative.
    pub(crate) fn live_bytes(&self) -> u64 {
        let list = self.magazines.lock();
        self.ledger.pool_live(list.iter().map(|m| &**m))
    }

    /// A tenant's live bytes, likewise.
    pub(crate) fn tenant_live(&self, account: &TenantAccount) -> u64 {
        let list = self.magazines.lock();
        Ledger::tenant_live(account, list.iter().map(|m| &**m))
    }

    /// Every figure, with every magazine frozen: no slab or stock is counted twice or
    /// missed, and no idle figure passes a cap.
    pub(crate) fn snapshot(&self) -> BufferPoolSnapshot {
        // The waits in progress first: the ledger's lock comes before the list's.
        let (waiting_total, waiting_for) = self.ledger.waiting_for();
        let list = self.magazines.lock();
        let frozen = Frozen::freeze(&list);
        let mags = || list.iter().map(|m| &**m);
        let classes = self.depot.figures(&list);
        let mut snap = BufferPoolSnapshot::empty();
        for class in PoolClass::all() {
            let f = classes[class.index()];
            if class != PoolClass::Oversize {
                snap.pool_hits.insert(class, f.hits);
                snap.pool_misses.insert(class, f.misses);
                snap.idle_slabs.insert(class, f.idle);
                snap.idle_bytes += f.idle * class.capacity() as u64;
            } else {
                snap.oversize_allocations_total = f.misses;
            }
            snap.discarded_total.insert(class, f.discarded);
            if class != PoolClass::Oversize {
                let decayed = self.depot.decayed(class.index());
                snap.decayed_slabs_total.insert(class, decayed);
                snap.decayed_bytes_total
                    .insert(class, decayed * class.capacity() as u64);
            }
            let taken = f.hits + f.misses;
            snap.outstanding_buffers
                .insert(class, taken.saturating_sub(f.released));
        }
        snap.live_bytes = self.ledger.pool_live(mags());
        snap.reserved_bytes = self.ledger.reserved();
        snap.alloc_failures_total = self.depot.alloc_failures();
        snap.too_large_total = self.ledger.too_large.load(Relaxed);
        snap.pool_limit_refusals_total = self.ledger.pool_limit_refusals.load(Relaxed);
        snap.promotions_total = self.promotions.load(Relaxed);
        for account in self.registry.accounts() {
            let id = account.id().to_owned();
            let acc = &*account;
            snap.tenant_live_bytes
                .insert(id.clone(), Ledger::tenant_live(acc, mags()));
            snap.tenant_soft_limit_exceeded_total
                .insert(id.clone(), acc.soft_exceeded.load(Relaxed));
            snap.hard_limit_refusals_total
                .insert(id.clone(), acc.hard_refusals.load(Relaxed));
            snap.tenant_outstanding_buffers
                .insert(id.clone(), Ledger::tenant_buffers(acc, mags()));
            snap.tenant_waiters
                .insert(id.clone(), acc.waiters.load(Relaxed) as u64);
            let in_progress = waiting_for.get(&(acc as *const TenantAccount as usize));
            snap.tenant_wait_time_total.insert(
                id.clone(),
                Duration::from_nanos(acc.wait_nanos.load(Relaxed))
                    + in_progress.copied().unwrap_or_default(),
            );
            snap.tenant_waits_abandoned_total
                .insert(id.clone(), acc.waits_abandoned.load(Relaxed));
            if let Some(bytes) = acc.guarantee() {
                snap.tenant_guarantee_bytes.insert(id.clone(), bytes);
            }
            if let Some(limit) = acc.hard_limit() {
                snap.tenant_hard_limit_bytes.insert(id, limit);
            }
        }
        snap.waiters = self.ledger.waiters();
        snap.wait_time_total = self.ledger.wait_time_total() + waiting_total;
        snap.waits_abandoned_total = self.ledger.waits_abandoned();
        drop(frozen);
        snap
    }
}

/// Frees `slabs` (pages first, see `pages::release`); returns their bytes.
fn release_counted(slabs: Vec<Vec<u8>>) -> u64 {
    let bytes = slabs.iter().map(|slab| slab.capacity() as u64).sum();
    pages::release(slabs);
    bytes
}

impl Drop for PoolInner {
    /// The last handle and buffer are gone: free what magazines still hold (their
    /// threads' entries outlive the pool and must not keep its slabs). No thread can be in
    /// a section of this pool (that takes a handle or a buffer); if the fence fails anyway,
    /// each magazine frees its slabs when its thread lets go of it.
    fn drop(&mut self) {
        if *self.decay_registered.get_mut() {
            decay::forget(self.id);
        }
        let list = self.magazines.get_mut();
        if let Some(frozen) = Frozen::freeze(list) {
            for mag in frozen.iter() {
                for k in 0..4 {
                    while mag.pop(k).is_some() {}
                }
            }
        }
    }
}
