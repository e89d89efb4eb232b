//! The shared state that buffers return their slabs to. The ground floor of the crate: it
//! knows no public handle, so `pool.rs` (which creates buffers) and `buf.rs` (which
//! returns them) both build on it without importing each other.
//!
//! # The layers, from `Tenant::acquire` to `Drop`
//!
//! ```text
//!  Tenant::acquire(n) ─┐                                         ┌─ PooledBuf::drop
//!  BufferPool::acquire ┤                                         ├─ last Bytes clone drops
//!                      ▼                                         ▼
//!  mod.rs       PoolRef::obtain ──────── fast path ──────── PoolRef::give_back
//!                      │   one section of this thread's magazine:    │
//!                      │   charge from the stocks, pop a slab        │   put both back
//!                      ▼                                              ▼
//!  local.rs     which magazine? (a thread-local load; registered on a thread's first acquire,
//!               the pool's spare adopted on a drop-only thread's first drop, given back
//!               to the pool when the thread exits)
//!                      │
//!  magazine.rs  per thread: slab stacks per class, idle units, pool stock, tenant stocks;
//!               plain loads and stores in a section; `trim`, `snapshot` and the ledger
//!               freeze all magazines (asymmetric fence, fence.rs) to reach them;
//!               magazine/stack.rs: one class's stack of raw slab pointers
//!                      │ slow path (`obtain_slow` / `give_back_slow`): a stock or a stack
//!                      │ ran dry or overflowed, or the thread has no magazine
//!          ┌───────────┴─────────────────────────────┐
//!          ▼                                         ▼
//!  ledger.rs   usage words (pool, tenant),      depot.rs   free lists per class, idle
//!              limits, stock refill and               budget units, refill and spill in
//!              give-back; ledger/stocks.rs:           batches, trim, decay, counters
//!              take-back before refusing;                     │
//!              ledger/wait.rs: the waiters                    │
//!          │                                                  ▼
//!  account.rs  a tenant's usage, limits, counters     the allocator (a miss);
//!  registry.rs id → account, bounded, evicts         pages.rs: pages of freed slabs
//!              departed accounts                     back to the system
//!
//!  upkeep.rs   over the whole pool: a thread's magazine coming home, trim, the idle
//!              decay, live figures, the snapshot, the pool's drop
//!  decay.rs    the one decay thread of the process, for every pool; clock.rs: the coarse
//!              clock idle slabs are stamped with
//! ```
//!
//! The idle decay rides on these paths at three points, none of them a drop's: every
//! [`TICK_EVERY`](magazine::TICK_EVERY)-th acquire of a thread (fast path or slow, counted
//! down in its magazine) looks at the clock and runs the decay if it is due; the return
//! that takes a pool's idle budget from zero wakes the decay thread (`decay.rs`); and
//! `trim_idle` runs it at once.
//!
//! An acquire charges first and takes a slab second, so a refused request moves no slab
//! figure; a drop debits first and returns the slab second. Each layer has one fast path
//! (inlined into the caller, no locked instruction) and one slow path (out of line) for
//! each direction. Locks, in the only order they are taken: the ledger's, the magazine
//! list's, the spare magazine's (`local.rs`), a free list's; the registry's, the departure
//! queue's and the decay thread's stand alone. A section takes only a free list's lock.

pub(crate) mod account;
mod clock;
mod config;
mod decay;
mod depot;
mod fence;
mod handle;
mod ledger;
mod local;
mod magazine;
mod pages;
mod registry;
mod upkeep;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::leak::LeakTracker;
use crate::{PoolClass, PoolError};
pub(crate) use account::AccountPtr;
use account::TenantAccount;
pub(crate) use config::Config;
pub(crate) use depot::Caps;
use depot::Depot;
pub(crate) use handle::{global, init_global, PoolRef};
pub(crate) use ledger::Charged;
use ledger::Ledger;
pub(crate) use ledger::{ChargeWait, Purpose};
use magazine::Magazine;
use registry::Registry;

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);
/// The state every handle, buffer and reservation of one pool shares.
#[derive(Debug)]
pub(crate) struct PoolInner {
    pub(crate) config: Config,
    id: u64,
    ledger: Ledger,
    depot: Depot,
    registry: Registry,
    /// Every registered thread's magazine.
    magazines: Mutex<Vec<Arc<Magazine>>>,
    /// A magazine made by an acquire for the next thread that only drops (`local.rs`).
    /// Taken after the magazine list's lock, never before.
    spare: Mutex<Option<Arc<Magazine>>>,
    /// The spare was taken (`local.rs`): the next acquire's slow path makes another.
    spare_taken: AtomicBool,
    promotions: AtomicU64,
    /// Coarse milliseconds ([`clock`]) from which the next decay is due (ticker, thread).
    next_decay: AtomicU64,
    /// Registered with the decay thread (`decay.rs`).
    decay_registered: AtomicBool,
    /// Sampled records of outstanding buffers, when `leak_sample_every` is set.
    pub(crate) leaks: Option<LeakTracker>,
}

impl PoolRef {
    /// Charge and slab in one step, all or nothing: an empty slab of exactly `capacity`,
    /// `capacity` bytes charged to the tenant and the pool.
    #[inline(always)]
    pub(crate) fn obtain(
        &self,
        tenant: Option<AccountPtr>,
        class: PoolClass,
        capacity: usize,
    ) -> Result<(Vec<u8>, Charged), PoolError> {
        match self.obtain_fast(tenant, class, capacity) {
            Some(slab) => Ok((slab, Charged::FROM_STOCK)),
            None => self.obtain_slow(tenant, class, capacity),
        }
    }

    /// The fast path: one section of this thread's magazine, the charge from its stocks and
    /// a slab from its stack. `None` changes nothing.
    #[inline(always)]
    pub(crate) fn obtain_fast(
        &self,
        tenant: Option<AccountPtr>,
        class: PoolClass,
        capacity: usize,
    ) -> Option<Vec<u8>> {
        let k = class.index();
        if class == PoolClass::Oversize {
            return None;
        }
        let section = self.magazine()?.enter()?;
        if section.len(k) > 0 && Ledger::charge_fast(*section, tenant, capacity as u64, 1) {
            let slab = self.depot.take_fast(*section, k);
            if section.tick() {
                drop(section);
                self.ticked();
            }
            return slab;
        }
        None
    }

    /// Every [`TICK_EVERY`](magazine::TICK_EVERY)-th acquire of a thread, out of its
    /// section: a look at the clock, and the idle decay if it is due.
    #[cold]
    #[inline(never)]
    fn ticked(&self) {
        if self.config.idle_timeout.is_some() {
            // No allocator trim on a request's path: the decay thread's next pass does it.
            self.decay_if_due(clock::refresh());
        }
    }

    /// After a return's slow path, out of any section: the pool's idle budget may have
    /// left zero, and the decay thread is to be woken.
    #[inline(always)]
    fn after_give(&self) {
        if self.depot.take_went_idle() {
            decay::went_idle(self);
        }
    }

    #[inline(never)]
    fn obtain_slow(
        &self,
        tenant: Option<AccountPtr>,
        class: PoolClass,
        capacity: usize,
    ) -> Result<(Vec<u8>, Charged), PoolError> {
        let mag = self.magazine_or_register();
        let charged = self.ledger.charge(
            &self.magazines,
            mag,
            tenant,
            capacity as u64,
            Purpose::Buffer,
        )?;
        self.take_charged(tenant, class, capacity, charged)
    }

    /// [`Self::obtain`], waiting for room while a limit refuses and waiting can help (the
    /// rules are in `ledger/wait.rs`). Cancellation-safe: dropped anywhere, it has charged
    /// nothing.
    pub(crate) async fn obtain_wait(
        &self,
        tenant: Option<AccountPtr>,
        class: PoolClass,
        capacity: usize,
    ) -> Result<(Vec<u8>, Charged), PoolError> {
        let bytes = capacity as u64;
        let charged = match self.charge_now(tenant, bytes, Purpose::Buffer) {
            Some(charged) => charged,
            None => {
                self.charge_wait(tenant, bytes, Purpose::Buffer, bytes)
                    .await?
            }
        };
        self.take_charged(tenant, class, capacity, charged)
    }

    /// The slab for a charge just made: from the magazine or the list (a hit), or freshly
    /// allocated; the charge is given back if the allocator refuses. One that finds no slab
    /// of its class in its own magazine (a refill, a miss, or a Large or Huge slab, which
    /// magazines never cache) makes the pool's spare magazine
    /// if it has none (`local.rs`): a producer whose buffers are dropped on other threads
    /// empties its magazine every few acquires, so their consumers find a spare soon.
    fn take_charged(
        &self,
        tenant: Option<AccountPtr>,
        class: PoolClass,
        capacity: usize,
        charged: Charged,
    ) -> Result<(Vec<u8>, Charged), PoolError> {
        let taken = match class {
            PoolClass::Oversize => None,
            class => {
                let k = class.index();
                let section = self.magazine_or_register().and_then(Magazine::enter);
                let own = section.as_ref().is_some_and(|section| section.len(k) > 0);
                let taken = self.depot.take(section.as_deref().copied(), k);
                if section.is_some_and(|section| section.tick()) {
                    self.ticked(); // the section ended above
                }
                if !own {
                    self.top_up_spare(); // out of the section: it may allocate
                }
                taken
            }
        };
        match taken {
            Some(slab) => Ok((slab, charged)),
            None => match self.depot.allocate(class, capacity) {
                Ok(slab) => Ok((slab, charged)),
                Err(err) => {
                    self.debit(tenant, capacity as u64, Purpose::Buffer);
                    Err(err)
                }
            },
        }
    }

    /// Debit and slab in one step: the hot path of a drop. `exposed` is the buffer's
    /// high-water mark of bytes that may hold a user's data, besides its length (both are
    /// zeroed first when `zero_on_release` is on). Never
    /// panics, never allocates; holds a lock only for a push, or, when requests wait for
    /// room, for the pass that serves them.
    #[inline(always)]
    pub(crate) fn give_back(
        &self,
        mut slab: Vec<u8>,
        class: PoolClass,
        exposed: usize,
        tenant: Option<AccountPtr>,
        charged: u64,
        caps: Caps,
    ) {
        let k = class.index();
        if class != PoolClass::Oversize
            && slab.capacity() == class.capacity()
            && !self.config.zero_on_release
        {
            if let Some(mag) = self.magazine() {
                if let Some(section) = mag.enter() {
                    if section.len(k) < section.held(k)
                        && self.ledger.debit_fast(*section, tenant, charged, 1)
                    {
                        slab.clear();
                        match self.depot.give_fast(*section, k, slab) {
                            Ok(()) => return,
                            // Cannot happen (room and capacity were checked); the slow
                            // path still takes the slab.
                            Err(back) => {
                                let discarded = self.depot.give(Some(*section), class, back, caps);
                                drop(section);
                                pages::discard(discarded);
                                self.after_give();
                                return;
                            }
                        }
                    }
                }
            }
        }
        self.give_back_slow(slab, class, exposed, tenant, charged, caps);
    }

    #[inline(never)]
    fn give_back_slow(
        &self,
        mut slab: Vec<u8>,
        class: PoolClass,
        exposed: usize,
        tenant: Option<AccountPtr>,
        charged: u64,
        caps: Caps,
    ) {
        if self.config.zero_on_release && slab.capacity() == class.capacity() {
            // Outside any lock or section: up to 10 MiB of memset must not stall others.
            let exposed = exposed.max(slab.len());
            slab.clear();
            slab.resize(exposed.min(slab.capacity()), 0);
        }
        let (wake, discarded) = {
            let section = self.magazine_or_adopt().and_then(Magazine::enter);
            let mag = section.as_deref().copied();
            let wake = self.ledger.debit(mag, tenant, charged, 1);
            (wake, self.depot.give(mag, class, slab, caps))
        };
        pages::discard(discarded);
        self.after_give();
        if wake {
            self.ledger.serve(&self.magazines, tenant);
        }
    }

    /// Charges `bytes` more for a growth or a reservation, all or nothing.
    pub(crate) fn charge(
        &self,
        tenant: Option<AccountPtr>,
        bytes: u64,
        purpose: Purpose,
    ) -> Result<Charged, PoolError> {
        let mag = self.magazine_or_register();
        self.ledger
            .charge(&self.magazines, mag, tenant, bytes, purpose)
    }

    /// A waiting request's try before it waits: charged at once, as a request that does not
    /// wait is (from this thread's stocks, else under the lock with stock granted), when
    /// nobody is queued ahead and it fits as usage reads now; else `None`, having changed
    /// and counted nothing, and [`Self::charge_wait`] decides (taking every thread's stock
    /// back before it queues, as a refusal does).
    /// Without it a thread whose requests all wait (a handler using only
    /// `collect_body_wait`) never got stock: every acquire took the ledger's lock and every
    /// drop the slow debit.
    pub(crate) fn charge_now(
        &self,
        tenant: Option<AccountPtr>,
        bytes: u64,
        purpose: Purpose,
    ) -> Option<Charged> {
        let mag = self.magazine_or_register();
        self.ledger
            .charge_uncounted(&self.magazines, mag, tenant, bytes, purpose, false)
            .ok()
    }

    /// Charges `bytes` more, waiting for room while a limit refuses and waiting can help.
    /// `needed` is what the request holds in all (a growth step's whole new capacity).
    pub(crate) fn charge_wait(
        &self,
        tenant: Option<AccountPtr>,
        bytes: u64,
        purpose: Purpose,
        needed: u64,
    ) -> ChargeWait<'_> {
        // SAFETY: the caller holds a handle or a buffer of the account.
        let account = tenant.map(|a| unsafe { a.to_arc() });
        self.ledger
            .charge_wait(&self.magazines, account, bytes, purpose, needed)
    }

    /// Undoes a charge of [`Self::charge`] or [`Self::obtain`].
    pub(crate) fn debit(&self, tenant: Option<AccountPtr>, bytes: u64, purpose: Purpose) {
        let wake = {
            let section = self.magazine().and_then(Magazine::enter);
            let mag = section.as_deref().copied();
            self.ledger.debit(mag, tenant, bytes, purpose.buffers())
        };
        if purpose == Purpose::Reservation {
            self.ledger.unreserve(bytes);
        }
        if wake {
            self.ledger.serve(&self.magazines, tenant);
        }
    }

    /// A slab of exactly `class.capacity()` bytes, empty, for a promotion: from this
    /// thread's magazine or the class's list (a hit), or freshly allocated (a miss). Makes
    /// the spare magazine as [`Self::take_charged`] does.
    pub(crate) fn take_slab(&self, class: PoolClass) -> Result<Vec<u8>, PoolError> {
        let k = class.index();
        let (taken, own) = {
            let section = self.magazine_or_register().and_then(Magazine::enter);
            let own = section.as_ref().is_some_and(|section| section.len(k) > 0);
            (self.depot.take(section.as_deref().copied(), k), own)
        };
        if !own {
            self.top_up_spare();
        }
        match taken {
            Some(slab) => Ok(slab),
            None => self.depot.allocate(class, class.capacity()),
        }
    }

    /// Bytes a charge to `tenant` has room for now under both limits (a figure, exact at
    /// rest: for an Oversize growth, which allocates 10 MiB or more anyway).
    pub(crate) fn room(&self, tenant: Option<AccountPtr>) -> u64 {
        // SAFETY: the caller holds a charge on the account.
        let account = tenant.map(|a| unsafe { a.get() });
        let list = self.magazines.lock();
        self.ledger.room(list.iter().map(|m| &**m), account)
    }

    /// Takes back a slab a promotion left behind (its charge moves with the buffer).
    pub(crate) fn release_slab(&self, mut slab: Vec<u8>, class: PoolClass, exposed: usize) {
        if self.config.zero_on_release && slab.capacity() == class.capacity() {
            slab.clear();
            slab.resize(exposed.min(slab.capacity()), 0);
        }
        let discarded = {
            let section = self.magazine().and_then(Magazine::enter);
            self.depot
                .give(section.as_deref().copied(), class, slab, Caps::Both)
        };
        pages::discard(discarded);
        self.after_give();
    }
}

impl PoolInner {
    pub(crate) fn new(config: Config) -> Self {
        PoolInner {
            id: NEXT_POOL_ID.fetch_add(1, Relaxed),
            ledger: Ledger::new(config.max_live_bytes),
            depot: Depot::new(config.max_idle_per_class, config.max_idle_bytes),
            registry: Registry::new(
                config.max_tenants,
                config.default_tenant_soft_limit,
                config.default_tenant_hard_limit,
            ),
            magazines: Mutex::new(Vec::new()),
            spare: Mutex::new(None),
            spare_taken: AtomicBool::new(true),
            promotions: AtomicU64::new(0),
            next_decay: AtomicU64::new(0),
            decay_registered: AtomicBool::new(false),
            leaks: (config.leak_sample_every > 0)
                .then(|| LeakTracker::new(config.leak_sample_every, config.leak_backtraces)),
            config,
        }
    }

    /// Refuses a buffer of `requested` bytes above `max_request_bytes`, counting it.
    #[inline]
    pub(crate) fn check_request(&self, requested: Option<usize>) -> Result<usize, PoolError> {
        // No allocation can exceed isize::MAX bytes: past it a request is too large, not an
        // allocation failure, whatever max_request_bytes says.
        let max = self.config.max_request_bytes.min(isize::MAX as usize);
        match requested {
            Some(n) if n <= max => Ok(n),
            _ => {
                self.ledger.too_large.fetch_add(1, Relaxed);
                Err(PoolError::TooLarge {
                    requested: requested.map_or(u64::MAX, |n| n as u64),
                    max: max as u64,
                })
            }
        }
    }

    pub(crate) fn tenant_account(&self, id: &str) -> Arc<TenantAccount> {
        self.registry.get(id)
    }

    /// A handle or reservation let go of `account`: queue it for eviction if it was the
    /// last.
    pub(crate) fn holder_left(&self, account: &Arc<TenantAccount>) {
        if account.holder_removed() {
            self.registry.departed(account);
        }
    }

    pub(crate) fn set_limits(&self, account: &TenantAccount, soft: u64, hard: Option<u64>) {
        self.ledger.set_limits(&self.magazines, account, soft, hard);
    }

    pub(crate) fn set_guarantee(
        &self,
        account: &Arc<TenantAccount>,
        bytes: Option<u64>,
    ) -> Result<(), PoolError> {
        self.ledger.set_guarantee(&self.magazines, account, bytes)
    }

    pub(crate) fn allocate_oversize(&self, bytes: usize) -> Result<Vec<u8>, PoolError> {
        self.depot.allocate(PoolClass::Oversize, bytes)
    }

    pub(crate) fn grow_oversize(
        &self,
        slab: &mut Vec<u8>,
        capacity: usize,
    ) -> Result<(), PoolError> {
        self.depot.grow_oversize(slab, capacity)
    }

    pub(crate) fn count_promotion(&self) {
        self.promotions.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_detached(&self, class: PoolClass) {
        self.depot.count_detached(class);
    }
}
