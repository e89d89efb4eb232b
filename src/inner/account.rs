//! One tenant's account: its usage word, limits and counters. The ledger (`ledger.rs`)
//! decides what may be charged to it; the registry (`registry.rs`) decides when it goes.
//!
//! # Lifetime without a reference count per buffer
//!
//! Handles and reservations hold the account by `Arc`. Buffers do not: a buffer holds an
//! [`AccountPtr`], a plain pointer, and that costs the hot path no locked instruction. It
//! is sound because of one ledger invariant: every byte a buffer holds is counted in its
//! account's `usage`, from its charge until the debit that ends it, and the registry frees
//! an account only after it has seen, under its lock, no handle (`Arc` count), `usage == 0`
//! and no thread's stock slot bound to it (`stock_slots == 0`). Each holder's *last* access
//! to the account is a `Release` decrement of one of those two words, and the registry
//! reads them with `Acquire`, so every access of a holder happens before the free.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// The id of the overflow tenant: ids longer than [`MAX_TENANT_ID_LEN`], ids arriving when
/// `max_tenants` accounts are tracked and none can be evicted, and this id itself are all
/// charged to one account under this id.
pub const OVERFLOW_TENANT_ID: &str = "__axon_overflow__";

/// The longest tenant id tracked under its own name, in bytes. Longer ids are charged to
/// the overflow tenant ([`OVERFLOW_TENANT_ID`]).
pub const MAX_TENANT_ID_LEN: usize = 256;

/// One tenant's figures. `usage` is the ledger's word; the rest are plain figures.
#[derive(Debug)]
pub(crate) struct TenantAccount {
    id: Box<str>,
    overflow: bool,
    /// Bytes charged to this tenant: outstanding buffers, reservations, and the stock that
    /// threads hold prepaid for it (see `ledger.rs`).
    pub(crate) usage: AtomicU64,
    /// `min(soft limit, hard limit)`: while `usage` is at or below it, a thread may charge
    /// from its stock without looking further (nothing can pass either limit).
    pub(crate) ceiling: AtomicU64,
    soft_limit: AtomicU64,
    /// `u64::MAX` when none.
    hard_limit: AtomicU64,
    /// Whether a hard limit is set (so `Some(u64::MAX)` reads back as itself).
    hard_limit_set: AtomicBool,
    default_soft_limit: u64,
    default_hard_limit: Option<u64>,
    pub(crate) soft_exceeded: AtomicU64,
    pub(crate) hard_refusals: AtomicU64,
    /// Outstanding buffers counted here (wrapping): the rest are in the stock slots of the
    /// threads that acquired or dropped them.
    pub(crate) buffers: AtomicU64,
    /// Thread stock slots bound to this account.
    pub(crate) stock_slots: AtomicUsize,
    /// `Tenant` handles and `Reservation`s holding this account.
    holders: AtomicUsize,
    /// Whether the account sits in the registry's queue of departed accounts.
    pub(crate) queued: AtomicBool,
    /// Requests of this tenant waiting for room now (`Tenant::acquire_wait`, ...).
    pub(crate) waiters: AtomicUsize,
    /// Time its requests have spent waiting, in all, in nanoseconds (waits that ended).
    pub(crate) wait_nanos: AtomicU64,
    /// Its waits whose future was dropped before they were served.
    pub(crate) waits_abandoned: AtomicU64,
    /// Room under `max_live_bytes` only this tenant may use (0: none), and whether one was
    /// set (so `Some(0)` reads back as itself). Written under the ledger's lock.
    guarantee: AtomicU64,
    guarantee_set: AtomicBool,
    /// The guarantee protects room (it is above 0 and the pool has `max_live_bytes`):
    /// the tenant then keeps no stock, and its drops keep no pool stock (`share.rs`).
    pub(crate) protected: AtomicBool,
    /// Bytes its waiting requests hold already (growing buffers), under the ledger's lock:
    /// when they are all its live bytes, its waiters wait for each other (`wait.rs`).
    pub(crate) waiting_held: AtomicU64,
}

impl TenantAccount {
    pub(crate) fn new(id: &str, soft_limit: u64, hard_limit: Option<u64>, overflow: bool) -> Self {
        let hard = hard_limit.unwrap_or(u64::MAX);
        TenantAccount {
            id: id.into(),
            overflow,
            usage: AtomicU64::new(0),
            ceiling: AtomicU64::new(soft_limit.min(hard)),
            soft_limit: AtomicU64::new(soft_limit),
            hard_limit: AtomicU64::new(hard),
            hard_limit_set: AtomicBool::new(hard_limit.is_some()),
            default_soft_limit: soft_limit,
            default_hard_limit: hard_limit,
            soft_exceeded: AtomicU64::new(0),
            hard_refusals: AtomicU64::new(0),
            buffers: AtomicU64::new(0),
            stock_slots: AtomicUsize::new(0),
            holders: AtomicUsize::new(0),
            queued: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            wait_nanos: AtomicU64::new(0),
            waiting_held: AtomicU64::new(0),
            waits_abandoned: AtomicU64::new(0),
            guarantee: AtomicU64::new(0),
            guarantee_set: AtomicBool::new(false),
            protected: AtomicBool::new(false),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn is_overflow(&self) -> bool {
        self.overflow
    }

    pub(crate) fn soft_limit(&self) -> u64 {
        self.soft_limit.load(Relaxed)
    }

    /// The hard limit, or `u64::MAX` when none.
    pub(crate) fn hard_bound(&self) -> u64 {
        self.hard_limit.load(Relaxed)
    }

    pub(crate) fn hard_limit(&self) -> Option<u64> {
        self.hard_limit_set
            .load(Relaxed)
            .then(|| self.hard_limit.load(Relaxed))
    }

    /// Sets the limits; the caller holds the ledger's lock, so the ceiling always matches
    /// the pair.
    pub(crate) fn set_limits(&self, soft: u64, hard: Option<u64>) {
        self.soft_limit.store(soft, Relaxed);
        self.hard_limit.store(hard.unwrap_or(u64::MAX), Relaxed);
        self.hard_limit_set.store(hard.is_some(), Relaxed);
        self.restore_ceiling();
    }

    /// Sets the ceiling from the limits: 0 while the tenant has waiters or a protecting
    /// guarantee (no stock may be spent or kept for it then). The caller holds the
    /// ledger's lock.
    pub(crate) fn restore_ceiling(&self) {
        let ceiling = match self.waiters.load(Relaxed) == 0 && !self.protected.load(Relaxed) {
            true => self.soft_limit().min(self.hard_bound()),
            false => 0,
        };
        self.ceiling.store(ceiling, Relaxed);
    }

    /// The guarantee, as set.
    pub(crate) fn guarantee(&self) -> Option<u64> {
        self.guarantee_set
            .load(Relaxed)
            .then(|| self.guarantee.load(Relaxed))
    }

    /// The guarantee in bytes, 0 when none.
    pub(crate) fn guaranteed(&self) -> u64 {
        self.guarantee.load(Relaxed)
    }

    /// Sets the guarantee; the caller holds the ledger's lock and has checked the sum.
    pub(crate) fn set_guarantee(&self, bytes: Option<u64>, protects: bool) {
        self.guarantee.store(bytes.unwrap_or(0), Relaxed);
        self.guarantee_set.store(bytes.is_some(), Relaxed);
        self.protected.store(protects, Relaxed);
        self.restore_ceiling();
    }

    pub(crate) fn holder_added(&self) {
        self.holders.fetch_add(1, Relaxed);
    }

    /// Returns whether that was the last handle or reservation.
    pub(crate) fn holder_removed(&self) -> bool {
        self.holders.fetch_sub(1, Relaxed) == 1
    }

    pub(crate) fn holders(&self) -> usize {
        self.holders.load(Relaxed)
    }

    /// Nothing an operator set would be lost by dropping this account.
    pub(crate) fn has_default_limits(&self) -> bool {
        self.soft_limit() == self.default_soft_limit
            && self.hard_limit() == self.default_hard_limit
            && self.guarantee().is_none()
    }
}

/// A tenant account reached without a reference count (see the module docs): valid while
/// the holder keeps a charge on it, or a stock slot bound to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AccountPtr(NonNull<TenantAccount>);

// SAFETY: an `AccountPtr` is a shared reference in all but lifetime (`TenantAccount` is
// `Sync`, every field an atomic or immutable); the ledger invariant in the module docs keeps
// the account alive on whichever thread the holder moves to.
unsafe impl Send for AccountPtr {}
// SAFETY: as for `Send`: only `&TenantAccount` is ever handed out.
unsafe impl Sync for AccountPtr {}

impl AccountPtr {
    pub(crate) fn new(account: &Arc<TenantAccount>) -> AccountPtr {
        // From `Arc::as_ptr`, not from a reference: the pointer keeps the provenance of the
        // whole allocation, count included, as `to_arc` needs (Miri checks it).
        let ptr = Arc::as_ptr(account).cast_mut();
        AccountPtr(NonNull::new(ptr).expect("an Arc's pointer is never null"))
    }

    pub(crate) fn as_ptr(self) -> *mut TenantAccount {
        self.0.as_ptr()
    }

    /// A counted handle of the account (accounts are always allocated in an `Arc`).
    ///
    /// # Safety
    ///
    /// The caller holds a charge on the account (or a bound stock slot).
    pub(crate) unsafe fn to_arc(self) -> Arc<TenantAccount> {
        let ptr = self.0.as_ptr().cast_const();
        // SAFETY: `AccountPtr::new` took the pointer from a live `Arc<TenantAccount>`, and
        // the caller's charge keeps that allocation alive, so its count is at least 1:
        // adding one and taking it over as a new `Arc` is what `Arc::clone` does.
        unsafe {
            Arc::increment_strong_count(ptr);
            Arc::from_raw(ptr)
        }
    }

    /// The account.
    ///
    /// # Safety
    ///
    /// The caller holds a charge on the account (or a bound stock slot) for all of `'a`.
    #[inline(always)]
    pub(crate) unsafe fn get<'a>(self) -> &'a TenantAccount {
        // SAFETY: the caller's charge keeps the account allocated (module docs), and it is
        // only ever shared.
        unsafe { self.0.as_ref() }
    }
}
