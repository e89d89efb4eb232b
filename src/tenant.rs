//! [`Tenant`] handles and [`Reservation`]s: per-tenant accounting with soft and hard limits.

use std::fmt;
use std::sync::Arc;

use crate::inner::account::TenantAccount;
use crate::inner::{AccountPtr, PoolRef, Purpose};
use crate::{PoolError, PooledBuf};

/// A cheap handle to one tenant's account in a pool. Buffers acquired through it are
/// charged to the tenant: the capacity of their slab at acquire, debited when they drop.
///
/// Acquiring through a handle takes no lock and no lookup of the tenant map, and usually no
/// locked instruction at all (the charge comes from the thread's prepaid stock). Getting a
/// handle with [`BufferPool::tenant`] per request is fine too: a known id takes only a
/// shared lock.
///
/// Limits: the **soft limit** never refuses; each charge that leaves the tenant's live bytes
/// above it adds 1 to its `soft_limit_exceeded_total`. The optional **hard limit** refuses
/// any charge that would take live bytes above it (equal is allowed): `try_*` methods return
/// [`PoolError::TenantHardLimit`], the others panic.
///
/// # Examples
///
/// ```
/// use axon_buffer::{BufferPool, PoolError};
///
/// let pool = BufferPool::new(8 * 1024); // 8 KiB default soft limit
/// let acme = pool.tenant("acme");
/// acme.set_hard_limit(Some(64 * 1024));
///
/// let a = acme.acquire(3000); // 4 KiB slab
/// let b = acme.acquire(3000);
/// let c = acme.acquire(3000); // 12 KiB live: above the soft limit, counted
/// assert_eq!(acme.live_bytes(), 12 * 1024);
/// assert_eq!(pool.snapshot().tenant_soft_limit_exceeded_total["acme"], 1);
///
/// let refused = acme.try_acquire(60 * 1024).unwrap_err(); // would pass 64 KiB
/// assert!(matches!(refused, PoolError::TenantHardLimit { .. }));
/// drop((a, b, c));
/// assert_eq!(acme.live_bytes(), 0);
/// ```
///
/// [`BufferPool::tenant`]: crate::BufferPool::tenant
pub struct Tenant {
    account: Arc<TenantAccount>,
    pool: PoolRef,
}

impl Tenant {
    pub(crate) fn new(pool: PoolRef, account: Arc<TenantAccount>) -> Tenant {
        account.holder_added();
        Tenant { account, pool }
    }

    /// The tenant's id; [`OVERFLOW_TENANT_ID`](crate::OVERFLOW_TENANT_ID) for the overflow
    /// tenant.
    pub fn id(&self) -> &str {
        self.account.id()
    }

    /// Whether this handle charges the overflow tenant: its id was longer than
    /// [`MAX_TENANT_ID_LEN`](crate::MAX_TENANT_ID_LEN), or the pool already tracked
    /// `max_tenants` accounts when it was first seen.
    pub fn is_overflow(&self) -> bool {
        self.account.is_overflow()
    }

    /// A buffer of at least `requested` bytes charged to this tenant.
    ///
    /// # Panics
    ///
    /// When [`try_acquire`](Self::try_acquire) would return an error; the message names
    /// `try_acquire`.
    #[track_caller]
    #[inline(always)]
    pub fn acquire(&self, requested: usize) -> PooledBuf {
        match self.try_acquire(requested) {
            Ok(buf) => buf,
            Err(err) => crate::error::refused(err, "Tenant::try_acquire"),
        }
    }

    /// A buffer of at least `requested` bytes charged to this tenant, or why not.
    ///
    /// # Errors
    ///
    /// [`PoolError::TooLarge`] above `max_request_bytes`, [`PoolError::TenantHardLimit`] or
    /// [`PoolError::PoolLimit`] when a limit refuses the charge, [`PoolError::AllocFailed`]
    /// when the allocator refuses. Nothing is charged on error.
    #[inline(always)]
    pub fn try_acquire(&self, requested: usize) -> Result<PooledBuf, PoolError> {
        PooledBuf::try_new(self.pool.clone(), Some(self.ptr()), requested)
    }

    /// A buffer of at least `requested` bytes charged to this tenant, waiting for room while
    /// its hard limit (or the pool's `max_live_bytes`) refuses and waiting can help.
    ///
    /// Waiters of one tenant are served in arrival order. Head-of-line rule: the tenant's
    /// first waiter is served first, and the ones behind it wait even if they would fit,
    /// so a large request is never starved by a stream of small ones; the price is that a
    /// waiter that does not fit yet holds up smaller ones of its tenant. While a tenant has
    /// waiters, the room its buffers free goes to them: its `try_*` acquires and
    /// reservations are refused meanwhile (buffers it already holds may still grow).
    /// Waiters for the pool's `max_live_bytes` are served the same way across tenants.
    ///
    /// Every drop of the tenant's buffers, every limit change ([`set_hard_limit`]) and
    /// every stock a thread gives back wakes the waiter whose request now fits; no wakeup
    /// is lost. The future uses only `std` wakers, so it runs on any executor (tokio,
    /// `futures::executor`, smol), and composes with `tokio::time::timeout`: dropped at any
    /// point, it has charged nothing and its turn goes to the next waiter.
    ///
    /// A waiter that another task's drop served yields once before it returns (its first
    /// poll after the grant wakes its own task and returns `Pending`), so that on tokio it
    /// runs after the tasks that were ready before it rather than next. A timeout that
    /// fires in that moment still wins: the grant goes to the next waiter.
    ///
    /// With nobody waiting, it takes [`acquire`](Self::acquire)'s paths (this thread's
    /// stock and cache, which its first call sets up as `acquire`'s does), plus the cost of
    /// the future: a Small cycle measured 25 ns against 15 ns for `acquire`.
    ///
    /// # Errors
    ///
    /// At once, for what waiting cannot fix: [`PoolError::TooLarge`], a request larger than
    /// the hard limit or `max_live_bytes` itself ([`PoolError::waiting_helps`] is false),
    /// and [`PoolError::AllocFailed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::{BufferPool, PoolError};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// tenant.set_hard_limit(Some(64 * 1024));
    /// let held = tenant.acquire(64 * 1024);
    ///
    /// // Full: this waits until `held` drops.
    /// let waiting = tenant.acquire_wait(4096);
    /// let release = async { drop(held) };
    /// let (buf, ()) = tokio::join!(waiting, release);
    /// assert_eq!(buf?.capacity(), 4096);
    ///
    /// // Never fits: refused at once.
    /// let err = tenant.acquire_wait(1 << 20).await.unwrap_err();
    /// assert!(!err.waiting_helps());
    /// # Ok::<(), PoolError>(())
    /// # }).unwrap();
    /// ```
    ///
    /// [`set_hard_limit`]: Self::set_hard_limit
    pub async fn acquire_wait(&self, requested: usize) -> Result<PooledBuf, PoolError> {
        PooledBuf::new_wait(self.pool.clone(), Some(self.ptr()), requested).await
    }

    /// Charges `bytes` without allocating, waiting for room as
    /// [`acquire_wait`](Self::acquire_wait) does.
    ///
    /// # Errors
    ///
    /// As [`acquire_wait`](Self::acquire_wait), and [`PoolError::TooLarge`] when a byte
    /// counter would overflow.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// tenant.set_hard_limit(Some(1000));
    /// let first = tenant.reserve_wait(600).await?;
    /// let (second, ()) = tokio::join!(tenant.reserve_wait(600), async { drop(first) });
    /// assert_eq!(second?.bytes(), 600);
    /// # Ok::<(), axon_buffer::PoolError>(())
    /// # }).unwrap();
    /// ```
    pub async fn reserve_wait(&self, bytes: u64) -> Result<Reservation, PoolError> {
        let charged = self
            .pool
            .charge_wait(Some(self.ptr()), bytes, Purpose::Reservation, bytes)
            .await?;
        charged.count_soft(Some(self.ptr()));
        self.account.holder_added();
        Ok(Reservation {
            bytes,
            account: Arc::clone(&self.account),
            pool: self.pool.clone(),
        })
    }

    /// Charges `bytes` to the tenant (and the pool's live bytes) without allocating, until
    /// the returned [`Reservation`] drops: for memory the tenant holds outside the pool
    /// (a decoder's state, a buffer of another crate), so its limits and figures cover it.
    /// The charge counts against the soft and hard limits exactly as a buffer's does.
    ///
    /// # Panics
    ///
    /// When [`try_reserve`](Self::try_reserve) would return an error; the message names
    /// `try_reserve`.
    #[track_caller]
    pub fn reserve(&self, bytes: u64) -> Reservation {
        match self.try_reserve(bytes) {
            Ok(reservation) => reservation,
            Err(err) => crate::error::refused(err, "Tenant::try_reserve"),
        }
    }

    /// Charges `bytes` without allocating, or says why not.
    ///
    /// # Errors
    ///
    /// [`PoolError::TenantHardLimit`] or [`PoolError::PoolLimit`] when a limit refuses,
    /// [`PoolError::TooLarge`] when a byte counter would overflow. Nothing is charged on
    /// error.
    pub fn try_reserve(&self, bytes: u64) -> Result<Reservation, PoolError> {
        self.pool
            .charge(Some(self.ptr()), bytes, Purpose::Reservation)?
            .count_soft(Some(self.ptr()));
        self.account.holder_added();
        Ok(Reservation {
            bytes,
            account: Arc::clone(&self.account),
            pool: self.pool.clone(),
        })
    }

    /// Bytes charged to this tenant now, by buffers and reservations.
    pub fn live_bytes(&self) -> u64 {
        self.pool.tenant_live(&self.account)
    }

    /// The soft limit in bytes.
    pub fn soft_limit(&self) -> u64 {
        self.account.soft_limit()
    }

    /// Sets the soft limit; it applies to charges from now on.
    pub fn set_soft_limit(&self, bytes: u64) {
        let hard = self.account.hard_limit();
        self.pool.set_limits(&self.account, bytes, hard);
    }

    /// The hard limit in bytes, if any.
    pub fn hard_limit(&self) -> Option<u64> {
        self.account.hard_limit()
    }

    /// Sets or removes the hard limit. Charges already made stay, even above a new limit;
    /// only later charges are refused.
    pub fn set_hard_limit(&self, bytes: Option<u64>) {
        let soft = self.account.soft_limit();
        self.pool.set_limits(&self.account, soft, bytes);
    }

    /// Sets aside room under the pool's `max_live_bytes` that only this tenant may use
    /// (the memory cgroup's `memory.min`, a Kubernetes request), or removes it with
    /// `None`.
    ///
    /// Other tenants are refused (or wait) rather than take that room, and within its
    /// guarantee this tenant never waits for the budget: its set-aside room pays for its
    /// charges. A guarantee set while other tenants hold that room takes effect as they
    /// let go of it (nothing is taken back from them). The guarantees of all tenants
    /// together never pass `max_live_bytes`. A tenant with a guarantee is never evicted
    /// from the registry. Without `max_live_bytes` a guarantee is recorded (and shown in
    /// the snapshot) but has nothing to protect.
    ///
    /// Cost: a tenant whose guarantee protects room keeps no per-thread charge stock, so
    /// each of its acquires takes the ledger's lock once (about 100 ns); tenants without a
    /// guarantee are not slowed, though each slow-path charge under `max_live_bytes`
    /// looks at every guaranteed tenant's figure.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::{BufferPool, PoolError};
    ///
    /// let pool = BufferPool::builder().max_live_bytes(1 << 20).build();
    /// let quiet = pool.tenant("quiet");
    /// quiet.set_guarantee(Some(256 * 1024))?;
    ///
    /// // A flood takes everything it may: all but the guarantee.
    /// let flood = pool.tenant("flood");
    /// let taken: Vec<_> = (0..12).map(|_| flood.acquire(64 * 1024)).collect();
    /// assert!(matches!(flood.try_acquire(64 * 1024), Err(PoolError::PoolLimit { .. })));
    ///
    /// // The quiet tenant still gets its whole guarantee, at once.
    /// let mine = (0..4)
    ///     .map(|_| quiet.try_acquire(64 * 1024))
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// assert_eq!(pool.snapshot().live_bytes, 1 << 20);
    /// assert_eq!(quiet.guarantee(), Some(256 * 1024));
    /// # drop((taken, mine));
    /// # Ok::<(), PoolError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`PoolError::GuaranteesPastLimit`] when this guarantee and the other tenants'
    /// together would pass `max_live_bytes`; nothing changes then.
    pub fn set_guarantee(&self, bytes: Option<u64>) -> Result<(), PoolError> {
        self.pool.set_guarantee(&self.account, bytes)
    }

    /// The room set aside for this tenant ([`Tenant::set_guarantee`]), if any.
    pub fn guarantee(&self) -> Option<u64> {
        self.account.guarantee()
    }

    /// The pool and the account a chain of this tenant charges; the handle keeps the
    /// account alive while it is held.
    pub(crate) fn parts(&self) -> (&PoolRef, Option<AccountPtr>) {
        (&self.pool, Some(self.ptr()))
    }

    /// The account as buffers hold it: no reference count.
    fn ptr(&self) -> AccountPtr {
        AccountPtr::new(&self.account)
    }
}

impl Clone for Tenant {
    fn clone(&self) -> Tenant {
        Tenant::new(self.pool.clone(), Arc::clone(&self.account))
    }
}

impl Drop for Tenant {
    fn drop(&mut self) {
        self.pool.holder_left(&self.account);
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.id())
            .field("live_bytes", &self.live_bytes())
            .field("soft_limit", &self.soft_limit())
            .field("hard_limit", &self.hard_limit())
            .finish_non_exhaustive()
    }
}

/// A charge against a tenant with no memory behind it, debited when it drops.
///
/// Use it for memory the pool does not hand out but the tenant should answer for (a decoded
/// frame held elsewhere, a queue slot). It counts in the tenant's and the pool's live bytes
/// and in the snapshot's `reserved_bytes`.
///
/// # Examples
///
/// ```
/// use axon_buffer::BufferPool;
///
/// let pool = BufferPool::new(1024);
/// let alpha = pool.tenant("alpha");
/// let r = alpha.reserve(2048);
/// assert_eq!(r.bytes(), 2048);
/// assert_eq!(pool.snapshot().reserved_bytes, 2048);
/// drop(r);
/// assert_eq!(alpha.live_bytes(), 0);
/// ```
#[must_use = "dropping a Reservation debits the tenant at once"]
pub struct Reservation {
    bytes: u64,
    account: Arc<TenantAccount>,
    pool: PoolRef,
}

impl Reservation {
    /// The bytes this reservation charges.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The id of the tenant charged.
    pub fn tenant(&self) -> &str {
        self.account.id()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let account = AccountPtr::new(&self.account);
        self.pool
            .debit(Some(account), self.bytes, Purpose::Reservation);
        self.pool.holder_left(&self.account);
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("tenant", &self.tenant())
            .field("bytes", &self.bytes)
            .finish()
    }
}
