//! Tenant accounts and the bounded registry that hands them out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The id of the overflow tenant: ids longer than [`MAX_TENANT_ID_LEN`], ids arriving when
/// `max_tenants` accounts are tracked and none can be evicted, and this id itself are all
/// charged to one account under this id.
pub const OVERFLOW_TENANT_ID: &str = "__axon_overflow__";

/// The longest tenant id tracked under its own name, in bytes. Longer ids are charged to
/// the overflow tenant ([`OVERFLOW_TENANT_ID`]).
pub const MAX_TENANT_ID_LEN: usize = 256;

const NO_HARD_LIMIT: u64 = u64::MAX;

/// One tenant's live bytes, limits and counters. Every figure is an atomic, so a charge
/// through a `Tenant` handle takes no lock and no map lookup.
#[derive(Debug)]
pub(crate) struct TenantAccount {
    id: Box<str>,
    overflow: bool,
    live: AtomicU64,
    soft_limit: AtomicU64,
    /// `u64::MAX` when none: no charge can take `live` above it anyway.
    hard_limit: AtomicU64,
    /// Whether a hard limit is set (so `Some(u64::MAX)` reads back as itself).
    hard_limit_set: AtomicBool,
    default_soft_limit: u64,
    soft_exceeded: AtomicU64,
    hard_refusals: AtomicU64,
    /// `Tenant` handles and `Reservation`s holding this account. Everything else holding
    /// its `Arc` (but the registry) is a buffer, so the outstanding-buffer count costs the
    /// hot path nothing: see [`TenantAccount::buffers`].
    holders: AtomicU64,
}

/// Why [`TenantAccount::try_charge`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChargeRefused {
    /// `live + bytes` would overflow `u64`.
    Overflow,
    /// `live + bytes` would pass the limit.
    Limit { live: u64, limit: u64 },
}

/// Adds `bytes` to `counter` unless the sum overflows or passes `limit`; returns the new value.
pub(crate) fn try_add_bounded(
    counter: &AtomicU64,
    bytes: u64,
    limit: u64,
) -> Result<u64, ChargeRefused> {
    let mut cur = counter.load(Relaxed);
    loop {
        let Some(new) = cur.checked_add(bytes) else {
            return Err(ChargeRefused::Overflow);
        };
        if new > limit {
            return Err(ChargeRefused::Limit { live: cur, limit });
        }
        match counter.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
            Ok(_) => return Ok(new),
            Err(actual) => cur = actual,
        }
    }
}

impl TenantAccount {
    pub(crate) fn new(id: &str, soft_limit: u64, overflow: bool) -> Self {
        TenantAccount {
            id: id.into(),
            overflow,
            live: AtomicU64::new(0),
            soft_limit: AtomicU64::new(soft_limit),
            hard_limit: AtomicU64::new(NO_HARD_LIMIT),
            hard_limit_set: AtomicBool::new(false),
            default_soft_limit: soft_limit,
            soft_exceeded: AtomicU64::new(0),
            hard_refusals: AtomicU64::new(0),
            holders: AtomicU64::new(0),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn is_overflow(&self) -> bool {
        self.overflow
    }

    pub(crate) fn live(&self) -> u64 {
        self.live.load(Relaxed)
    }

    pub(crate) fn soft_limit(&self) -> u64 {
        self.soft_limit.load(Relaxed)
    }

    pub(crate) fn set_soft_limit(&self, bytes: u64) {
        self.soft_limit.store(bytes, Relaxed);
    }

    pub(crate) fn hard_limit(&self) -> Option<u64> {
        self.hard_limit_set
            .load(Relaxed)
            .then(|| self.hard_limit.load(Relaxed))
    }

    pub(crate) fn set_hard_limit(&self, bytes: Option<u64>) {
        self.hard_limit
            .store(bytes.unwrap_or(NO_HARD_LIMIT), Relaxed);
        self.hard_limit_set.store(bytes.is_some(), Relaxed);
    }

    pub(crate) fn soft_exceeded(&self) -> u64 {
        self.soft_exceeded.load(Relaxed)
    }

    pub(crate) fn hard_refusals(&self) -> u64 {
        self.hard_refusals.load(Relaxed)
    }

    /// Buffers (and frozen `Bytes` groups) charged to this account now: every `Arc` of it
    /// but the registry's and its holders'. `this` must be the registry's `Arc`. Exact when
    /// no handle or reservation is being made or dropped meanwhile.
    pub(crate) fn buffers(this: &Arc<TenantAccount>) -> u64 {
        let holders = this.holders.load(Relaxed);
        (Arc::strong_count(this) as u64).saturating_sub(1 + holders)
    }

    /// Charges `bytes` unless that would pass the hard limit (equal is allowed) or overflow.
    /// Counts a hard-limit refusal; the soft limit is counted by [`Self::count_soft`] once
    /// the whole charge has succeeded.
    pub(crate) fn try_charge(&self, bytes: u64) -> Result<u64, ChargeRefused> {
        let limit = self.hard_limit.load(Relaxed);
        let result = try_add_bounded(&self.live, bytes, limit);
        if let Err(ChargeRefused::Limit { .. }) = result {
            self.hard_refusals.fetch_add(1, Relaxed);
        }
        result
    }

    /// The seed's soft-limit counting: one per charge that leaves live bytes above the limit.
    pub(crate) fn count_soft(&self, live_after: u64) {
        if live_after > self.soft_limit.load(Relaxed) {
            self.soft_exceeded.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn debit(&self, bytes: u64) {
        self.live.fetch_sub(bytes, Relaxed);
    }

    pub(crate) fn holder_added(&self) {
        self.holders.fetch_add(1, Relaxed);
    }

    pub(crate) fn holder_removed(&self) {
        self.holders.fetch_sub(1, Relaxed);
    }

    /// Nothing would be lost by dropping this account: no bytes and no limit an operator
    /// set. (The registry checks separately that nothing but itself holds it: no handle,
    /// reservation or buffer.)
    fn is_idle_default(&self) -> bool {
        self.live() == 0
            && self.soft_limit() == self.default_soft_limit
            && self.hard_limit().is_none()
    }
}

/// The tenant map, bounded to `max_tenants` accounts plus the overflow account.
#[derive(Debug)]
pub(crate) struct Registry {
    map: HashMap<Arc<str>, Arc<TenantAccount>>,
    overflow: Option<Arc<TenantAccount>>,
    max_tenants: usize,
    default_soft_limit: u64,
    /// Registrations refused for want of room since the last sweep that freed something;
    /// with no departure reported, a full sweep runs on the first and then on every
    /// `max_tenants / 16`-th, so a flood of hostile ids costs O(16) each, amortised.
    full_since_sweep: usize,
}

/// Reports that an account may have lost its last handle: the next registration that finds
/// the map full sweeps it at once instead of waiting its turn.
#[derive(Debug, Default)]
pub(crate) struct Departures(AtomicU64);

impl Departures {
    /// Called by a handle, buffer or reservation about to let go of `account`: if only the
    /// registry and this holder are left, the account may become evictable. (A sweep that
    /// runs between this and the holder's release misses it; the amortised sweeps catch it.)
    pub(crate) fn leaving(&self, account: &Arc<TenantAccount>) {
        if Arc::strong_count(account) <= 2 && !account.is_overflow() {
            self.0.fetch_add(1, Relaxed);
        }
    }

    fn take(&self) -> bool {
        self.0.load(Relaxed) > 0 && self.0.swap(0, Relaxed) > 0
    }
}

impl Registry {
    pub(crate) fn new(max_tenants: usize, default_soft_limit: u64) -> Self {
        Registry {
            map: HashMap::new(),
            overflow: None,
            max_tenants,
            default_soft_limit,
            full_since_sweep: 0,
        }
    }

    /// The account for `id`, registering it if there is room (evicting idle accounts no
    /// handle refers to when the map is full), else the overflow account.
    pub(crate) fn get_or_register(
        &mut self,
        id: &str,
        departures: &Departures,
    ) -> Arc<TenantAccount> {
        if id.len() > MAX_TENANT_ID_LEN || id == OVERFLOW_TENANT_ID {
            return self.overflow();
        }
        if let Some(account) = self.map.get(id) {
            return Arc::clone(account);
        }
        if self.map.len() >= self.max_tenants && !self.make_room(departures) {
            return self.overflow();
        }
        let account = Arc::new(TenantAccount::new(id, self.default_soft_limit, false));
        self.map.insert(Arc::from(id), Arc::clone(&account));
        account
    }

    fn make_room(&mut self, departures: &Departures) -> bool {
        let interval = (self.max_tenants / 16).max(1);
        let sweep = departures.take() || self.full_since_sweep.is_multiple_of(interval);
        self.full_since_sweep += 1;
        if !sweep {
            return false;
        }
        // strong_count == 1: only this map holds the account, and we hold the map's lock,
        // so nobody can start a new charge against it while we decide.
        self.map
            .retain(|_, account| !(Arc::strong_count(account) == 1 && account.is_idle_default()));
        let room = self.map.len() < self.max_tenants;
        if room {
            self.full_since_sweep = 0;
        }
        room
    }

    fn overflow(&mut self) -> Arc<TenantAccount> {
        let default = self.default_soft_limit;
        Arc::clone(
            self.overflow.get_or_insert_with(|| {
                Arc::new(TenantAccount::new(OVERFLOW_TENANT_ID, default, true))
            }),
        )
    }

    /// Every account, the overflow one last if it was ever used.
    pub(crate) fn accounts(&self) -> impl Iterator<Item = &Arc<TenantAccount>> {
        self.map.values().chain(self.overflow.iter())
    }
}
