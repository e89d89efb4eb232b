//! [`BufferPoolSnapshot`]: every figure of a pool at one moment.

use std::collections::HashMap;
use std::time::Duration;

use crate::PoolClass;

/// The pool's figures at one moment, for metrics export and tests.
///
/// Each figure is read atomically on its own; figures that change together under one lock
/// (a class's hits, idle slabs and returns; the tenant map) are consistent with each other.
/// When nothing is outstanding, every live figure is exactly 0.
///
/// Outstanding-buffer figures are derived from counters the pool keeps anyway (slabs taken
/// minus slabs released), so they cost nothing on the hot path.
///
/// # Examples
///
/// ```
/// use axon_buffer::{BufferPool, PoolClass};
///
/// let pool = BufferPool::default();
/// let tenant = pool.tenant("acme");
/// let buf = tenant.acquire(1000);
/// let snap = pool.snapshot();
/// assert_eq!(snap.pool_misses[&PoolClass::Small], 1);
/// assert_eq!(snap.tenant_live_bytes["acme"], 4096);
/// assert_eq!(snap.outstanding_buffers[&PoolClass::Small], 1);
/// drop(buf);
/// let snap = pool.snapshot();
/// assert_eq!(snap.live_bytes, 0);
/// assert_eq!(snap.idle_slabs[&PoolClass::Small], 1);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferPoolSnapshot {
    /// Slabs taken from a free list, per pooled class (all four keys always present).
    pub pool_hits: HashMap<PoolClass, u64>,
    /// Slabs freshly allocated because the class's free list was empty, per pooled class.
    pub pool_misses: HashMap<PoolClass, u64>,
    /// Oversize slabs allocated (never pooled), including Oversize growth steps.
    pub oversize_allocations_total: u64,
    /// Bytes charged by outstanding buffers and reservations, tenanted or not.
    pub live_bytes: u64,
    /// Live bytes per tracked tenant (the overflow tenant included once used).
    pub tenant_live_bytes: HashMap<String, u64>,
    /// Per tenant: charges that left its live bytes above its soft limit.
    pub tenant_soft_limit_exceeded_total: HashMap<String, u64>,
    /// Slabs waiting for reuse, per pooled class.
    pub idle_slabs: HashMap<PoolClass, u64>,
    /// Capacity of all idle slabs, summed.
    pub idle_bytes: u64,
    /// The part of `live_bytes` held by [`Reservation`](crate::Reservation)s.
    pub reserved_bytes: u64,
    /// Per tenant: charges refused by its hard limit.
    pub hard_limit_refusals_total: HashMap<String, u64>,
    /// Allocations the allocator refused.
    pub alloc_failures_total: u64,
    /// Slabs freed on return instead of pooled (full list, idle byte cap, Oversize, or a
    /// slab not of its class's exact capacity), per class (all five keys).
    pub discarded_total: HashMap<PoolClass, u64>,
    /// Charges refused by the pool-wide `max_live_bytes`.
    pub pool_limit_refusals_total: u64,
    /// Requests refused as too large (`max_request_bytes`, or size arithmetic overflow).
    pub too_large_total: u64,
    /// Buffers promoted to a larger class by a write past their capacity.
    pub promotions_total: u64,
    /// Buffers (and frozen `Bytes` groups) outstanding, per class (all five keys).
    pub outstanding_buffers: HashMap<PoolClass, u64>,
    /// Buffers outstanding per tracked tenant.
    pub tenant_outstanding_buffers: HashMap<String, u64>,
    /// Slabs freed by the idle decay (`idle_timeout`, `trim_idle`), per pooled class (all
    /// four keys). A slab is counted once it is freed and its pages are given back, a moment
    /// after it left `idle_slabs`: a snapshot in between sees it in neither.
    pub decayed_slabs_total: HashMap<PoolClass, u64>,
    /// Their capacity, per pooled class (all four keys).
    pub decayed_bytes_total: HashMap<PoolClass, u64>,
    /// Hard limit per tracked tenant that has one.
    pub tenant_hard_limit_bytes: HashMap<String, u64>,
    /// Requests waiting for room now (`acquire_wait`, `reserve_wait`, `reserve_wait` of a
    /// growing buffer), tenanted or not.
    pub waiters: u64,
    /// Time requests have spent waiting for room, in all, tenanted or not: waits that
    /// ended, plus the time so far of those still waiting.
    pub wait_time_total: Duration,
    /// Requests waiting for room now, per tracked tenant.
    pub tenant_waiters: HashMap<String, u64>,
    /// Time each tracked tenant's requests have spent waiting for room, in all, waits
    /// still in progress included.
    pub tenant_wait_time_total: HashMap<String, Duration>,
    /// Waits whose future was dropped before they were served (a timeout, a client gone),
    /// tenanted or not.
    pub waits_abandoned_total: u64,
    /// The same per tracked tenant.
    pub tenant_waits_abandoned_total: HashMap<String, u64>,
    /// Room set aside per tracked tenant that has a guarantee
    /// ([`Tenant::set_guarantee`](crate::Tenant::set_guarantee)).
    pub tenant_guarantee_bytes: HashMap<String, u64>,
}

impl BufferPoolSnapshot {
    pub(crate) fn empty() -> Self {
        BufferPoolSnapshot {
            pool_hits: HashMap::new(),
            pool_misses: HashMap::new(),
            oversize_allocations_total: 0,
            live_bytes: 0,
            tenant_live_bytes: HashMap::new(),
            tenant_soft_limit_exceeded_total: HashMap::new(),
            idle_slabs: HashMap::new(),
            idle_bytes: 0,
            reserved_bytes: 0,
            hard_limit_refusals_total: HashMap::new(),
            alloc_failures_total: 0,
            discarded_total: HashMap::new(),
            pool_limit_refusals_total: 0,
            too_large_total: 0,
            promotions_total: 0,
            outstanding_buffers: HashMap::new(),
            tenant_outstanding_buffers: HashMap::new(),
            tenant_hard_limit_bytes: HashMap::new(),
            decayed_slabs_total: HashMap::new(),
            decayed_bytes_total: HashMap::new(),
            waiters: 0,
            wait_time_total: Duration::ZERO,
            tenant_waiters: HashMap::new(),
            tenant_wait_time_total: HashMap::new(),
            waits_abandoned_total: 0,
            tenant_waits_abandoned_total: HashMap::new(),
            tenant_guarantee_bytes: HashMap::new(),
        }
    }

    /// Hits, misses and Oversize allocations summed: every slab ever taken for a buffer.
    pub fn acquisitions_total(&self) -> u64 {
        self.pool_hits.values().sum::<u64>()
            + self.pool_misses.values().sum::<u64>()
            + self.oversize_allocations_total
    }
}
