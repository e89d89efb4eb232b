//! The shared state that buffers return their slabs to: free lists, counters, tenant
//! accounts. The ground floor of the crate: it knows no public handle, so `pool.rs` (which
//! creates buffers) and `buf.rs` (which returns them) both build on it without importing
//! each other.

pub(crate) mod accounts;
mod free_list;

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::snapshot::BufferPoolSnapshot;
use crate::{PoolClass, PoolError};
use accounts::{try_add_bounded, ChargeRefused, Registry, TenantAccount};
use free_list::FreeList;

/// The pool's knobs, fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) default_tenant_soft_limit: u64,
    pub(crate) max_idle_per_class: usize,
    pub(crate) max_idle_bytes: u64,
    pub(crate) max_tenants: usize,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_live_bytes: Option<u64>,
    pub(crate) zero_on_release: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_tenant_soft_limit: 256 * 1024 * 1024,
            max_idle_per_class: 64,
            max_idle_bytes: 256 * 1024 * 1024,
            max_tenants: 10_000,
            max_request_bytes: 1024 * 1024 * 1024,
            max_live_bytes: None,
            zero_on_release: false,
        }
    }
}

/// How a buffer, reservation or handle refers to its pool: the process-global pool by a
/// `'static` reference (no reference count to bump), any other pool by an `Arc`. Either way
/// the pool outlives every buffer taken from it.
#[derive(Debug, Clone)]
pub(crate) enum PoolRef {
    Static(&'static PoolInner),
    Shared(Arc<PoolInner>),
}

impl Deref for PoolRef {
    type Target = PoolInner;

    #[inline]
    fn deref(&self) -> &PoolInner {
        match self {
            PoolRef::Static(inner) => inner,
            PoolRef::Shared(inner) => inner,
        }
    }
}

/// Counters that change outside any free-list lock. Relaxed throughout: they publish no
/// memory, only figures, and each is exact on its own.
#[derive(Debug, Default)]
struct Counters {
    misses: [AtomicU64; 4],
    oversize_allocations: AtomicU64,
    /// Slabs that left a buffer and were freed instead of pooled, per class.
    discarded: [AtomicU64; 5],
    /// Slabs that left the pool for good through `into_vec`, or an Oversize slab replaced by
    /// a larger one, per class.
    detached: [AtomicU64; 5],
    alloc_failures: AtomicU64,
    too_large: AtomicU64,
    pool_limit_refusals: AtomicU64,
    promotions: AtomicU64,
}

/// The state every handle, buffer and reservation of one pool shares.
#[derive(Debug)]
pub(crate) struct PoolInner {
    pub(crate) config: Config,
    free: [Mutex<FreeList>; 4],
    /// Idle bytes across all lists, including bytes reserved by a return in flight; the
    /// `max_idle_bytes` cap is enforced on this figure, so it can never be passed.
    idle_budget: AtomicU64,
    live: AtomicU64,
    reserved: AtomicU64,
    counters: Counters,
    tenants: Mutex<Registry>,
}

/// Refusal of a charge, before it becomes a [`PoolError`] (which needs the tenant's id).
fn refused_error(refused: ChargeRefused, bytes: u64, tenant: Option<&TenantAccount>) -> PoolError {
    match (refused, tenant) {
        (ChargeRefused::Overflow, _) => PoolError::TooLarge {
            requested: bytes,
            max: u64::MAX,
        },
        (ChargeRefused::Limit { live, limit }, Some(account)) => PoolError::TenantHardLimit {
            tenant: account.id().to_owned(),
            requested: bytes,
            live,
            limit,
        },
        (ChargeRefused::Limit { live, limit }, None) => PoolError::PoolLimit {
            requested: bytes,
            live,
            limit,
        },
    }
}

impl PoolInner {
    pub(crate) fn new(config: Config) -> Self {
        let slots = config.max_idle_per_class;
        PoolInner {
            free: std::array::from_fn(|_| Mutex::new(FreeList::with_capacity(slots))),
            idle_budget: AtomicU64::new(0),
            live: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            counters: Counters::default(),
            tenants: Mutex::new(Registry::new(
                config.max_tenants,
                config.default_tenant_soft_limit,
            )),
            config,
        }
    }

    pub(crate) fn tenant_account(&self, id: &str) -> Arc<TenantAccount> {
        self.tenants.lock().get_or_register(id)
    }

    /// Refuses a buffer of `requested` bytes above `max_request_bytes`, counting it.
    pub(crate) fn check_request(&self, requested: Option<usize>) -> Result<usize, PoolError> {
        match requested {
            Some(n) if n <= self.config.max_request_bytes => Ok(n),
            _ => {
                self.counters.too_large.fetch_add(1, Relaxed);
                Err(PoolError::TooLarge {
                    requested: requested.map_or(u64::MAX, |n| n as u64),
                    max: self.config.max_request_bytes as u64,
                })
            }
        }
    }

    /// Charges `bytes` to the tenant (if any) and the pool, all or nothing. The soft limit is
    /// not counted here: the caller calls [`Self::count_soft`] once the slab is in hand, so a
    /// request refused later (allocation failure) counts nothing.
    pub(crate) fn charge(
        &self,
        tenant: Option<&TenantAccount>,
        bytes: u64,
    ) -> Result<u64, PoolError> {
        let tenant_live = match tenant {
            Some(account) => match account.try_charge(bytes) {
                Ok(live) => live,
                Err(refused) => {
                    if refused == ChargeRefused::Overflow {
                        self.counters.too_large.fetch_add(1, Relaxed);
                    }
                    return Err(refused_error(refused, bytes, tenant));
                }
            },
            None => 0,
        };
        let limit = self.config.max_live_bytes.unwrap_or(u64::MAX);
        if let Err(refused) = try_add_bounded(&self.live, bytes, limit) {
            if let Some(account) = tenant {
                account.debit(bytes);
            }
            let counter = match refused {
                ChargeRefused::Overflow => &self.counters.too_large,
                ChargeRefused::Limit { .. } => &self.counters.pool_limit_refusals,
            };
            counter.fetch_add(1, Relaxed);
            return Err(refused_error(refused, bytes, None));
        }
        Ok(tenant_live)
    }

    /// Undoes [`Self::charge`].
    pub(crate) fn debit(&self, tenant: Option<&TenantAccount>, bytes: u64) {
        if let Some(account) = tenant {
            account.debit(bytes);
        }
        self.live.fetch_sub(bytes, Relaxed);
    }

    pub(crate) fn reserved_added(&self, bytes: u64) {
        self.reserved.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn reserved_removed(&self, bytes: u64) {
        self.reserved.fetch_sub(bytes, Relaxed);
    }

    /// A slab of exactly `class.capacity()` bytes, empty: from the class's free list (a hit)
    /// or freshly allocated (a miss). `class` must not be Oversize.
    pub(crate) fn take_slab(&self, class: PoolClass) -> Result<Vec<u8>, PoolError> {
        let idx = class.index();
        let popped = {
            let mut list = self.free[idx].lock();
            let slab = list.slabs.pop();
            list.hits += u64::from(slab.is_some());
            slab
        };
        if let Some(slab) = popped {
            self.idle_budget.fetch_sub(class.capacity() as u64, Relaxed);
            return Ok(slab);
        }
        let slab = self.allocate(class, class.capacity())?;
        self.counters.misses[idx].fetch_add(1, Relaxed);
        Ok(slab)
    }

    /// A fresh Oversize slab of exactly `bytes` capacity, counted as an Oversize allocation.
    pub(crate) fn allocate_oversize(&self, bytes: usize) -> Result<Vec<u8>, PoolError> {
        let slab = self.allocate(PoolClass::Oversize, bytes)?;
        self.counters.oversize_allocations.fetch_add(1, Relaxed);
        Ok(slab)
    }

    /// Grows an Oversize slab in place (the allocator may move it) to exactly `new_capacity`.
    pub(crate) fn grow_oversize(
        &self,
        slab: &mut Vec<u8>,
        new_capacity: usize,
    ) -> Result<(), PoolError> {
        let additional = new_capacity - slab.len();
        if slab.try_reserve_exact(additional).is_err() {
            self.counters.alloc_failures.fetch_add(1, Relaxed);
            return Err(PoolError::AllocFailed {
                class: PoolClass::Oversize,
                bytes: new_capacity,
            });
        }
        // The old allocation was given up (grown or moved): one detached, one allocated.
        self.counters.detached[PoolClass::Oversize.index()].fetch_add(1, Relaxed);
        self.counters.oversize_allocations.fetch_add(1, Relaxed);
        Ok(())
    }

    fn allocate(&self, class: PoolClass, bytes: usize) -> Result<Vec<u8>, PoolError> {
        let mut slab = Vec::new();
        if slab.try_reserve_exact(bytes).is_err() {
            self.counters.alloc_failures.fetch_add(1, Relaxed);
            return Err(PoolError::AllocFailed { class, bytes });
        }
        Ok(slab)
    }

    pub(crate) fn count_promotion(&self) {
        self.counters.promotions.fetch_add(1, Relaxed);
    }

    /// Counts a slab that leaves the pool's accounting for good (`into_vec`).
    pub(crate) fn count_detached(&self, class: PoolClass) {
        self.counters.detached[class.index()].fetch_add(1, Relaxed);
    }

    /// Takes back a slab whose buffer is gone: onto its class's free list when it is exactly
    /// that class's capacity and both caps have room, else freed and counted as discarded.
    /// `exposed` is how many leading bytes may hold a user's data (zeroed first when
    /// `zero_on_release` is on). Never panics, holds a lock only for the push.
    pub(crate) fn release_slab(&self, mut slab: Vec<u8>, class: PoolClass, exposed: usize) {
        if class == PoolClass::Oversize || slab.capacity() != class.capacity() {
            self.discard(class);
            return;
        }
        let capacity = class.capacity() as u64;
        if try_add_bounded(&self.idle_budget, capacity, self.config.max_idle_bytes).is_err() {
            self.discard(class);
            return;
        }
        slab.clear();
        if self.config.zero_on_release {
            // Outside the lock: up to 10 MiB of memset must not stall other threads' pushes.
            slab.resize(exposed.min(slab.capacity()), 0);
            slab.clear();
        }
        let mut list = self.free[class.index()].lock();
        if list.slabs.len() < self.config.max_idle_per_class {
            list.slabs.push(slab);
            list.returned += 1;
            return;
        }
        drop(list);
        self.idle_budget.fetch_sub(capacity, Relaxed);
        self.discard(class);
    }

    fn discard(&self, class: PoolClass) {
        self.counters.discarded[class.index()].fetch_add(1, Relaxed);
    }

    /// Frees every idle slab; returns the bytes freed.
    pub(crate) fn trim(&self) -> u64 {
        let mut freed = 0;
        for class in PoolClass::non_oversize() {
            let slabs = std::mem::take(&mut self.free[class.index()].lock().slabs);
            let bytes = slabs.len() as u64 * class.capacity() as u64;
            self.idle_budget.fetch_sub(bytes, Relaxed);
            freed += bytes;
            drop(slabs); // outside the lock
        }
        freed
    }

    pub(crate) fn live_bytes(&self) -> u64 {
        self.live.load(Relaxed)
    }

    pub(crate) fn snapshot(&self) -> BufferPoolSnapshot {
        let c = &self.counters;
        let mut snap = BufferPoolSnapshot::empty();
        for class in PoolClass::non_oversize() {
            let idx = class.index();
            let (hits, returned, idle) = {
                let list = self.free[idx].lock();
                (list.hits, list.returned, list.slabs.len() as u64)
            };
            let misses = c.misses[idx].load(Relaxed);
            let released =
                returned + c.discarded[idx].load(Relaxed) + c.detached[idx].load(Relaxed);
            snap.pool_hits.insert(class, hits);
            snap.pool_misses.insert(class, misses);
            snap.idle_slabs.insert(class, idle);
            snap.idle_bytes += idle * class.capacity() as u64;
            snap.discarded_total
                .insert(class, c.discarded[idx].load(Relaxed));
            snap.outstanding_buffers
                .insert(class, (hits + misses).saturating_sub(released));
        }
        let over = PoolClass::Oversize.index();
        let oversize = c.oversize_allocations.load(Relaxed);
        let released = c.discarded[over].load(Relaxed) + c.detached[over].load(Relaxed);
        snap.oversize_allocations_total = oversize;
        snap.discarded_total
            .insert(PoolClass::Oversize, c.discarded[over].load(Relaxed));
        snap.outstanding_buffers
            .insert(PoolClass::Oversize, oversize.saturating_sub(released));
        snap.live_bytes = self.live.load(Relaxed);
        snap.reserved_bytes = self.reserved.load(Relaxed);
        snap.alloc_failures_total = c.alloc_failures.load(Relaxed);
        snap.too_large_total = c.too_large.load(Relaxed);
        snap.pool_limit_refusals_total = c.pool_limit_refusals.load(Relaxed);
        snap.promotions_total = c.promotions.load(Relaxed);
        let registry = self.tenants.lock();
        let mut live = HashMap::new();
        let mut exceeded = HashMap::new();
        let mut refusals = HashMap::new();
        let mut buffers = HashMap::new();
        for account in registry.accounts() {
            let id = account.id().to_owned();
            live.insert(id.clone(), account.live());
            exceeded.insert(id.clone(), account.soft_exceeded());
            refusals.insert(id.clone(), account.hard_refusals());
            buffers.insert(id, account.buffers());
        }
        drop(registry);
        snap.tenant_live_bytes = live;
        snap.tenant_soft_limit_exceeded_total = exceeded;
        snap.hard_limit_refusals_total = refusals;
        snap.tenant_outstanding_buffers = buffers;
        snap
    }
}
