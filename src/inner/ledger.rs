//! The ledger: every live figure (the pool's, each tenant's, reservations), the limits
//! that refuse a charge, and the per-thread stocks that make most charges free.
//!
//! # Usage words and stocks
//!
//! The pool and each tenant account have one *usage* word: the bytes their outstanding
//! buffers and reservations hold, plus the *stock* threads hold prepaid for them (the
//! Linux memory cgroup's `consume_stock` / `refill_stock`, `mm/memcontrol.c`). A thread's
//! magazine keeps one stock for the pool and a few for tenants. An acquire or reserve
//! charges from the stocks with plain loads and stores ([`Ledger::charge_fast`]); a drop
//! puts the bytes back into them ([`Ledger::debit_fast`]). Only an empty or overfull stock
//! reaches the usage words (the slow paths, [`Ledger::charge`], [`Ledger::debit`]).
//!
//! Live figures are usage minus stocks: exact whenever nothing moves, whatever thread
//! acquired, dropped or exited, because every byte is in exactly one place at a time (a
//! buffer's charge, a stock, or nowhere) and every move between places is a debit or a
//! credit of the same amount on both. Nothing wraps: a debit only ever takes back what
//! was charged to the same word.
//!
//! # Limits
//!
//! Usage counts stocks, so checking a limit against usage never lets live bytes pass it.
//! A slow charge checks both limits (the tenant's hard limit, the pool's `max_live_bytes`)
//! and commits both under one lock, so a charge one limit refuses leaves no trace on the
//! other. Stocks may make usage read high: before refusing, the ledger takes the stocks of
//! every thread back (freezing the magazines) and checks again, so nothing that fits is
//! refused at rest. Debits take no lock: they only ever make room.
//!
//! A tenant's stock may be spent without a check while its usage is at or below its
//! *ceiling* (the smaller of its soft and hard limit): live bytes are at most usage, so
//! such a charge passes neither limit and leaves nothing to count. Above the ceiling the
//! tenant has no stock (the charge that crossed took it back), so its usage is its live
//! bytes and every charge counts soft-limit excesses exactly.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

mod share;
mod stocks;
mod wait;
use share::Share;
pub(crate) use wait::ChargeWait;
use wait::{Focus, Queue};

use super::account::{AccountPtr, TenantAccount};
use super::magazine::{Exclusive, Magazine};
use crate::PoolError;

/// Stock granted beyond a request when a thread's stock runs dry (the kernel's
/// `MEMCG_CHARGE_BATCH` is 64 pages, 256 KiB).
const BATCH: u64 = 256 * 1024;
/// Most a stock keeps: one Huge buffer and a batch, so a Huge acquire/drop cycle never
/// reaches the usage words. A debit past it gives the excess back.
const STOCK_MAX: u64 = 10 * 1024 * 1024 + 2 * BATCH;

/// What a stock of `stock` bytes keeps, and the excess it gives back.
fn kept(stock: u64) -> (u64, u64) {
    if stock > STOCK_MAX {
        (BATCH, stock - BATCH)
    } else {
        (stock, 0)
    }
}

/// The bound of every sum of reservations: 2^63 - 1 bytes. Buffers are bounded by
/// memory, so no usage word, which adds them to reservations, can wrap.
pub(crate) const MAX_LIVE: u64 = i64::MAX as u64;

/// What a charge is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A new buffer (counted as one outstanding buffer).
    Buffer,
    /// A buffer growing (the same buffer: nothing more to count).
    Growth,
    /// A reservation (counted in `reserved`, bounded by [`MAX_LIVE`] in all).
    Reservation,
    /// Several new buffers charged at once (a chain's segments): waits and refusals as
    /// for one buffer of their summed size, counted as that many outstanding buffers.
    Segments(u64),
}

impl Purpose {
    /// Outstanding buffers the charge adds.
    #[inline(always)]
    pub(crate) fn buffers(self) -> u64 {
        match self {
            Purpose::Buffer => 1,
            Purpose::Segments(n) => n,
            Purpose::Growth | Purpose::Reservation => 0,
        }
    }
}

/// What a charge leaves to its caller to count once the whole operation has succeeded.
#[must_use]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Charged {
    over_soft: bool,
}

impl Charged {
    /// A charge from a stock: it cannot have passed the soft limit (see the module docs).
    pub(crate) const FROM_STOCK: Charged = Charged { over_soft: false };

    /// Counts the soft-limit excess of the charge, if it left the tenant above it.
    pub(crate) fn count_soft(self, tenant: Option<AccountPtr>) {
        if let (true, Some(account)) = (self.over_soft, tenant) {
            // SAFETY: the caller holds the charge just made on the account.
            unsafe { account.get() }.soft_exceeded.fetch_add(1, Relaxed);
        }
    }
}

#[derive(Debug)]
pub(crate) struct Ledger {
    /// The pool's usage word: every buffer and reservation, plus the pool stocks. On a
    /// cache line of its own: slow paths of every thread write it, while every fast drop
    /// reads `pool_waits`.
    usage: Padded<AtomicU64>,
    /// Someone waits for the pool's `max_live_bytes` (the async acquire): debits then go
    /// straight to `usage`, where the waiter sees them.
    pool_waits: AtomicBool,
    /// The part of live bytes held by reservations (no stock: exact on its own).
    reserved: AtomicU64,
    /// `max_live_bytes`, or `u64::MAX` for none.
    limit: u64,
    /// Held by every slow charge, stock take-back, limit change and pass over the waiters;
    /// guards the waiters' queue.
    lock: Mutex<Queue>,
    /// Waiters queued and not yet served (`wait.rs`).
    waiting: AtomicUsize,
    /// Time every waiter, tenanted or not, spent waiting, in nanoseconds.
    wait_nanos: AtomicU64,
    /// Every tenant's usage word, summed (the untenanted line's rank is the pool's usage
    /// less this: `share.rs`).
    tenanted: AtomicU64,
    /// The tenants' guarantees, summed (written under the lock; read by `room`).
    guarantees: AtomicU64,
    /// Waits whose future was dropped before they were served.
    abandoned: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) pool_limit_refusals: AtomicU64,
}

/// A value on cache lines of its own (two: the adjacent-line prefetcher pairs them).
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// What a thread's magazine list is, as the ledger reaches it.
pub(crate) type Magazines = Mutex<Vec<Arc<Magazine>>>;

impl Ledger {
    pub(crate) fn new(max_live_bytes: Option<u64>) -> Ledger {
        Ledger {
            usage: Padded(AtomicU64::new(0)),
            pool_waits: AtomicBool::new(false),
            reserved: AtomicU64::new(0),
            limit: max_live_bytes.unwrap_or(u64::MAX),
            lock: Mutex::new(Queue::default()),
            waiting: AtomicUsize::new(0),
            wait_nanos: AtomicU64::new(0),
            tenanted: AtomicU64::new(0),
            guarantees: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            pool_limit_refusals: AtomicU64::new(0),
        }
    }

    /// The ledger's lock, for the slow paths of other layers that must not interleave
    /// with a charge (a thread exit giving its stocks back).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.lock.lock()
    }

    // -------------------------------------------------------------------------------
    // Charge
    // -------------------------------------------------------------------------------

    /// The fast path: `bytes` from this thread's pool stock and `tenant`'s stock slot,
    /// counting `buffers` new buffers. `false` changes nothing.
    #[inline(always)]
    pub(crate) fn charge_fast(
        mag: Exclusive<'_>,
        tenant: Option<AccountPtr>,
        bytes: u64,
        buffers: u64,
    ) -> bool {
        let pool = mag.pool_stock();
        if pool < bytes {
            return false;
        }
        if let Some(account) = tenant {
            let Some(slot) = mag.find(account.as_ptr()) else {
                return false;
            };
            // SAFETY: a slot is bound to the account, which keeps it alive (account.rs).
            let acc = unsafe { account.get() };
            let stock = slot.stock();
            if stock < bytes || acc.usage.load(Relaxed) > acc.ceiling.load(Relaxed) {
                return false;
            }
            slot.set_stock(stock - bytes);
            slot.count_buffers(buffers);
        }
        mag.set_pool_stock(pool - bytes);
        true
    }

    /// The slow path: charges `bytes` to `tenant` and the pool, all or nothing, within
    /// both limits; refills this thread's stocks when `mag` is its magazine. Whether the
    /// charge passed the soft limit is decided here, exactly, and counted by the caller
    /// once its whole operation has succeeded. While waiters are queued for the tenant or
    /// the pool, a new buffer or reservation is refused: the room is theirs first
    /// (`wait.rs`).
    ///
    /// # Errors
    ///
    /// `TenantHardLimit`, `PoolLimit`, or `TooLarge` when a sum would pass its bound.
    pub(crate) fn charge(
        &self,
        magazines: &Magazines,
        mag: Option<&Magazine>,
        tenant: Option<AccountPtr>,
        bytes: u64,
        purpose: Purpose,
    ) -> Result<Charged, PoolError> {
        self.charge_uncounted(magazines, mag, tenant, bytes, purpose, true)
            .inspect_err(|err| {
                // SAFETY: the caller holds a handle or a buffer of the account for the call.
                self.count_refusal(err, tenant.map(|a| unsafe { a.get() }));
            })
    }

    /// With the lock held: checks `bytes` against both limits (taking every thread's stock
    /// back before refusing), commits them, and decides the soft limit. With `stock`, also
    /// grants this thread stock beyond the request; returns the grants (pool, tenant), for
    /// [`Self::deposit`] to put in the magazine or give back.
    fn commit(
        &self,
        share: &Share,
        magazines: &Magazines,
        account: Option<&TenantAccount>,
        bytes: u64,
        purpose: Purpose,
        stock: bool,
    ) -> Result<(Charged, u64, u64), PoolError> {
        if let Err(err) = self.check(share, account, bytes, purpose) {
            // Stocks may hide room: take every thread's back, then decide for good. (Only
            // the bound on reservations alone counts no stock.)
            if !matches!(err, PoolError::TooLarge { max: MAX_LIVE, .. }) {
                self.take_back(magazines, true, account);
            }
            self.check(share, account, bytes, purpose)?;
        }
        if purpose == Purpose::Reservation {
            self.reserved.fetch_add(bytes, Relaxed);
        }
        // No stock is granted while anyone waits for the pool (it would hide their room),
        // and only from room outside every guarantee (`share.rs`).
        let pool_grant = match stock && !self.pool_waits.load(Relaxed) {
            true => BATCH.min(self.grantable(share, account, bytes)),
            false => 0,
        };
        self.usage.fetch_add(bytes + pool_grant, Relaxed);
        let mut tenant_grant = 0;
        let mut over_soft = false;
        if let Some(acc) = account {
            let used = acc.usage.load(Relaxed);
            let after = used + bytes;
            let ceiling = acc.ceiling.load(Relaxed);
            if stock && after < ceiling {
                tenant_grant = BATCH.min(ceiling - after);
            }
            self.tenant_charge(acc, bytes + tenant_grant);
            if after > acc.soft_limit() {
                // Above the soft limit a tenant keeps no stock: take any back, so usage is
                // exactly its live bytes, then count.
                if acc.stock_slots.load(Relaxed) > 0 {
                    self.take_back(magazines, false, Some(acc));
                }
                over_soft = acc.usage.load(Relaxed) > acc.soft_limit();
            }
        }
        Ok((Charged { over_soft }, pool_grant, tenant_grant))
    }

    /// Whether `bytes` more fit the tenant's hard limit and the pool's limit, as usage
    /// reads now, and leave every sum below its bound.
    fn check(
        &self,
        share: &Share,
        account: Option<&TenantAccount>,
        bytes: u64,
        purpose: Purpose,
    ) -> Result<(), PoolError> {
        let too_large = |max| PoolError::TooLarge {
            requested: bytes,
            max,
        };
        // The pool's word before the tenants' (`share.rs`, "Exactness").
        let used = self.usage.load(Relaxed);
        if let Some(acc) = account {
            let used = acc.usage.load(Relaxed);
            let limit = acc.hard_bound();
            match used.checked_add(bytes) {
                None => return Err(too_large(u64::MAX)),
                Some(after) if after > limit => {
                    return Err(PoolError::TenantHardLimit {
                        tenant: acc.id().to_owned(),
                        requested: bytes,
                        live: used,
                        limit,
                        needed: bytes,
                    })
                }
                Some(_) => {}
            }
        }
        if self.limit != u64::MAX {
            return self.check_share(share, account, used, bytes);
        }
        let (sum, bound) = match purpose {
            // Without `max_live_bytes`, reservations alone are bounded, by `MAX_LIVE`.
            Purpose::Reservation => (self.reserved.load(Relaxed), MAX_LIVE),
            _ => (used, u64::MAX),
        };
        match sum.checked_add(bytes) {
            None => Err(too_large(u64::MAX)),
            Some(after) if after > bound && bound == self.limit => Err(PoolError::PoolLimit {
                requested: bytes,
                live: used,
                limit: self.limit,
                needed: bytes,
            }),
            Some(after) if after > bound => Err(too_large(bound)),
            Some(_) => Ok(()),
        }
    }

    fn count_refusal(&self, err: &PoolError, account: Option<&TenantAccount>) {
        match err {
            PoolError::TenantHardLimit { .. }
            | PoolError::WaitDeadlock {
                tenant: Some(_), ..
            } => {
                if let Some(acc) = account {
                    acc.hard_refusals.fetch_add(1, Relaxed);
                }
            }
            PoolError::PoolLimit { .. } | PoolError::WaitDeadlock { tenant: None, .. } => {
                self.pool_limit_refusals.fetch_add(1, Relaxed);
            }
            _ => {
                self.too_large.fetch_add(1, Relaxed);
            }
        }
    }

    // -------------------------------------------------------------------------------
    // Debit
    // -------------------------------------------------------------------------------

    /// The fast path: `bytes` (and `buffers` buffers) back into this thread's stocks.
    /// `false` changes nothing: the stock would grow past its bound, the tenant has no
    /// slot here, or someone waits for the pool.
    #[inline(always)]
    pub(crate) fn debit_fast(
        &self,
        mag: Exclusive<'_>,
        tenant: Option<AccountPtr>,
        bytes: u64,
        buffers: u64,
    ) -> bool {
        let pool = mag.pool_stock() + bytes;
        if pool > STOCK_MAX || self.pool_waits.load(Relaxed) {
            return false;
        }
        if let Some(account) = tenant {
            let Some(slot) = mag.find(account.as_ptr()) else {
                return false;
            };
            let stock = slot.stock() + bytes;
            if stock > STOCK_MAX {
                return false;
            }
            slot.set_stock(stock);
            slot.count_buffers(buffers.wrapping_neg());
        }
        mag.set_pool_stock(pool);
        true
    }

    /// The slow path: what fits goes into this thread's stocks (an overfull stock keeps a
    /// batch and gives the rest back), the rest straight to the usage words, as on a thread
    /// without a magazine. Takes no lock. The account's usage is the last of the account
    /// this touches (account.rs). Returns whether anyone waits: the caller then runs
    /// [`Ledger::serve`] once outside any section.
    #[must_use = "a debit with waiters must be followed by `serve`"]
    pub(crate) fn debit(
        &self,
        mag: Option<Exclusive<'_>>,
        tenant: Option<AccountPtr>,
        bytes: u64,
        buffers: u64,
    ) -> bool {
        // The tenant's word before the pool's (`share.rs`, "Exactness"); the account's
        // usage word is the last of the account this touches.
        let mut into_stock = mag.is_some() && !self.pool_waits.load(Relaxed);
        if let Some(account) = tenant {
            match mag.and_then(|m| m.find(account.as_ptr())) {
                Some(slot) => {
                    let (keep, excess) = kept(slot.stock() + bytes);
                    slot.set_stock(keep);
                    slot.count_buffers(buffers.wrapping_neg());
                    if excess > 0 {
                        // SAFETY: the slot stays bound, which keeps the account alive.
                        self.tenant_debit(unsafe { account.get() }, excess);
                    }
                }
                None => {
                    // SAFETY: the caller's charge (these `bytes`) keeps the account alive
                    // until the decrement of its usage (`SeqCst`, so also `Release`), its
                    // last access.
                    let acc = unsafe { account.get() };
                    // Room a guarantee set aside never goes into a pool stock (`share.rs`).
                    into_stock &= !acc.protected.load(Relaxed);
                    acc.buffers.fetch_sub(buffers, Relaxed);
                    self.tenant_debit(acc, bytes);
                }
            }
        }
        match mag {
            Some(mag) if into_stock => {
                let (keep, excess) = kept(mag.pool_stock() + bytes);
                mag.set_pool_stock(keep);
                if excess > 0 {
                    self.usage.fetch_sub(excess, SeqCst);
                }
            }
            _ => {
                self.usage.fetch_sub(bytes, SeqCst);
            }
        }
        self.anyone_waits()
    }

    /// Adds `bytes` to a tenant's usage word (and to their sum). Under the lock.
    fn tenant_charge(&self, acc: &TenantAccount, bytes: u64) {
        self.tenanted.fetch_add(bytes, Relaxed);
        acc.usage.fetch_add(bytes, Relaxed);
    }

    /// Takes `bytes` off a tenant's usage word (and their sum); the word last, since the
    /// account may go once it is debited (`account.rs`).
    fn tenant_debit(&self, acc: &TenantAccount, bytes: u64) {
        self.tenanted.fetch_sub(bytes, Relaxed);
        acc.usage.fetch_sub(bytes, SeqCst);
    }

    // -------------------------------------------------------------------------------
    // Reservations, limits, figures
    // -------------------------------------------------------------------------------

    /// Requests waiting for room now.
    pub(crate) fn waiters(&self) -> u64 {
        self.waiting.load(Relaxed) as u64
    }

    /// Waits whose future was dropped before they were served.
    pub(crate) fn waits_abandoned(&self) -> u64 {
        self.abandoned.load(Relaxed)
    }

    /// Time requests have spent waiting, in all (waits that ended).
    pub(crate) fn wait_time_total(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.wait_nanos.load(Relaxed))
    }

    /// A reservation ends (its bytes are debited separately).
    pub(crate) fn unreserve(&self, bytes: u64) {
        self.reserved.fetch_sub(bytes, Relaxed);
    }

    pub(crate) fn reserved(&self) -> u64 {
        self.reserved.load(Relaxed)
    }

    /// Bytes a charge to `tenant` has room for now under both limits: the limits minus the
    /// live bytes (usage minus every thread's stock, read one after another: exact at
    /// rest, like every live figure).
    pub(crate) fn room<'a>(
        &self,
        magazines: impl Iterator<Item = &'a Magazine> + Clone,
        tenant: Option<&TenantAccount>,
    ) -> u64 {
        // The others' guarantees are taken as wholly unused: a conservative figure, without
        // the lock (callers hold the magazine list's, which comes after it).
        let others = self.guarantees.load(Relaxed) - tenant.map_or(0, TenantAccount::guaranteed);
        let pool = self
            .limit
            .saturating_sub(others)
            .saturating_sub(self.pool_live(magazines.clone()));
        let tenant = tenant.map_or(u64::MAX, |acc| {
            acc.hard_bound()
                .saturating_sub(Self::tenant_live(acc, magazines))
        });
        pool.min(tenant)
    }

    /// Sets a tenant's limits under the ledger's lock; waiters that fit the new limits are
    /// served.
    pub(crate) fn set_limits(
        &self,
        magazines: &Magazines,
        account: &TenantAccount,
        soft: u64,
        hard: Option<u64>,
    ) {
        let mut queue = self.lock.lock();
        account.set_limits(soft, hard);
        self.pass(
            &mut queue,
            magazines,
            Focus::Limits(account as *const TenantAccount as usize),
        );
    }
    /// Live bytes of the pool: usage minus the stocks of `magazines` (exact when they are
    /// frozen, or when nothing moves).
    pub(crate) fn pool_live<'a>(&self, magazines: impl Iterator<Item = &'a Magazine>) -> u64 {
        let stocks: u64 = magazines.map(Magazine::pool_stock).sum();
        self.usage.load(Relaxed).saturating_sub(stocks)
    }

    /// Live bytes of a tenant, likewise.
    pub(crate) fn tenant_live<'a>(
        account: &TenantAccount,
        magazines: impl Iterator<Item = &'a Magazine>,
    ) -> u64 {
        let stocks: u64 = magazines.map(|m| m.stock_of(account)).sum();
        (account.usage.load(Relaxed)).saturating_sub(stocks)
    }

    /// Buffers outstanding for a tenant: its own count plus its slots' (wrapping).
    pub(crate) fn tenant_buffers<'a>(
        account: &TenantAccount,
        magazines: impl Iterator<Item = &'a Magazine>,
    ) -> u64 {
        let slots = magazines.fold(0u64, |sum, m| sum.wrapping_add(m.buffers_of(account)));
        let sum = account.buffers.load(Relaxed).wrapping_add(slots);
        // A count read while buffers move may be a drop ahead of its acquire.
        if sum > u64::MAX / 2 {
            0
        } else {
            sum
        }
    }
}
