//! [`BufferPool`]: the handle that creates buffers, its builder, and the process-global pool.
//!
//! # Design
//!
//! The layers live in `src/inner` (its `mod.rs` draws them, from `Tenant::acquire` to
//! `Drop`); this is what each decides, and why.
//!
//! * **Classes.** Four pooled size classes (4 KiB, 64 KiB, 1 MiB, 10 MiB), each with a free
//!   list of slabs of exactly the class's capacity, and an Oversize path allocated to size
//!   and never pooled. Oversize growth at least doubles, unless the
//!   doubling alone would pass a limit's room (or a body's `max`): then it takes what it
//!   needs.
//! * **Magazines** (`inner/magazine.rs`, Bonwick and Adams' per-CPU magazines, per thread
//!   here). Each thread keeps, per pool, a stack of up to 8 Small and 4 Medium slabs
//!   (Large and Huge slabs wait on the shared lists only, where every thread reaches
//!   them), and stocks of bytes prepaid to the pool and to up to 4 tenants. Its
//!   thread works on it with plain loads and stores: a section is a store, a compiler
//!   fence and a load to enter, a store to leave. `trim`, `snapshot`, the ledger (taking
//!   stocks back) and pool drop *freeze* every magazine with one asymmetric fence
//!   (`membarrier(2)` on Linux; `SeqCst` fences elsewhere and under Miri and loom); three
//!   loom models check the protocol. The global pool's magazine is one thread-local load.
//! * **Depot** (`inner/depot.rs`). One `parking_lot::Mutex<Vec<Vec<u8>>>` per class behind
//!   the magazines, held only for a pop, a push or a batch move (an empty magazine refills
//!   half its rounds, a full one spills half). Idle memory is capped by *units* of idle
//!   budget (`max_idle_per_class`, `max_idle_bytes`) reserved before a slab goes idle and
//!   moved with it, so no cap is ever passed (a chain's Medium segments are held to the
//!   byte cap alone), and `snapshot` (magazines frozen, each list
//!   locked) never counts a slab twice. Trim and thread exit move or free units with their
//!   slabs.
//! * **Ledger** (`inner/ledger.rs`). One *usage* word for the pool and one per tenant:
//!   live bytes plus the stocks threads hold prepaid (the Linux memory cgroup's
//!   `consume_stock` / `refill_stock`). Acquire and drop charge and debit the stocks;
//!   only an empty or overfull stock reaches a word. Live figures are usage minus stocks,
//!   exact at rest from any thread: a thread that never acquired debits the words
//!   directly, a thread that exits gives its stocks back, nothing wraps. A slow charge
//!   checks both limits (tenant hard limit, `max_live_bytes`) and commits both under one
//!   lock, so a refusal leaves no trace; before refusing it takes every thread's stock
//!   back, so nothing that fits is refused at rest. Above its soft limit (or with waiters)
//!   a tenant keeps no stock, so every charge counts soft-limit excesses exactly.
//! * **Waiting** (`inner/ledger/wait.rs`). The ledger's lock guards a FIFO of waiters;
//!   every debit that reaches a word, limit change and stock given back runs a pass when
//!   anyone waits (`SeqCst` on both sides of the register/debit handshake, checked by a
//!   loom model). With nobody waiting, a drop pays one load of a flag.
//! * **Idle decay** (`inner/upkeep.rs`, `inner/decay.rs`, `inner/clock.rs`). Every idle
//!   slab carries the time it went idle, read from a process-wide coarse clock (one
//!   relaxed load on the return's fast path; the real clock costs 20 ns) that whatever
//!   reads the real clock moves forward. A decay frees every slab stamped long enough
//!   ago, in one pass, wherever it waits. It runs from three places, never a drop: a
//!   countdown in each thread's magazine, every 1024 acquires (jemalloc's ticker: a load,
//!   a decrement and a store on the fast path); one background thread for every pool of
//!   the process, on by default, started when a slab first goes idle, ticking every
//!   quarter timeout while anything is idle and parked with no wakeups while nothing is;
//!   and `trim_idle`. Freed slabs of 64 KiB and more give their pages back with
//!   `madvise(MADV_DONTNEED)`, so RSS falls whatever glibc keeps in its heap.
//! * **Tenants** (`inner/account.rs`, `inner/registry.rs`). Buffers hold their account by
//!   a plain pointer (the charge keeps it alive; account.rs argues why), handles by `Arc`.
//!   The registry is a read-mostly map with a queue of departed accounts for eviction.
//! * **Handles.** Buffers of the global pool refer to it by `&'static` (no reference
//!   count); buffers of other pools hold an `Arc` of the shared state, so they are
//!   `'static` and keep their pool alive. Either way reaching the pool is one load.
//! * **Orderings.** Figures are `Relaxed` (each exact on its own); the magazine flags
//!   carry the `Release`/`Acquire` pairs of the freeze; the last access of a buffer or a
//!   stock slot to its account is a `Release` (`SeqCst`) decrement the registry reads
//!   with `Acquire` before freeing it; the waiters' handshake is `SeqCst`.
//!
//! # Figures that chose it
//!
//! On the 2-core reference machine an uncontended locked instruction costs 7-7.7 ns;
//! the machine's speed drifts by a factor of two over minutes (it is shared), so the
//! figures below are instruction counts (callgrind, repeatable) and ratios measured side
//! by side (`benches/side_by_side.rs`).
//!
//! * The first design (mutex lists, shared atomics) took 736 instructions per Small
//!   64-byte cycle; a cache of `AtomicPtr` slots about 460; stacks behind the asymmetric
//!   fence about 250, where a tenant added four locked instructions (+21 to
//!   +25 ns: the account's `Arc` clone and drop, the charge's compare-and-swap, the
//!   debit).
//! * The ledger's stocks take the tenant's locked instructions away: 237 instructions
//!   untenanted, 273 tenanted (glibc's `Vec`: 351; before the ledger 273 and 318, and a
//!   tenant took 2.1 times the untenanted cycle's time). Getting there: the global pool's
//!   magazine as a destructor-free thread-local pointer (-12), the fence mode kept in
//!   the magazine (-4), acquire and drop inlined into the caller and the slab in a
//!   `ManuallyDrop` (-21).
//! * Returns reserve one idle-budget unit at a time: two at a time saved 6 ns on batched
//!   freezes and cost 35 ns per buffer returned by another thread.
//!
//! The tables against `Vec`, `BytesMut` and the peer crates are in the README's
//! Performance section and `benches/README.md`.

use std::fmt;
use std::sync::OnceLock;

use crate::inner::{AccountPtr, Config, PoolRef};
use crate::{BufferPoolSnapshot, OutstandingBuffer, PoolError, PooledBuf, Tenant};

static GLOBAL: OnceLock<BufferPool> = OnceLock::new();

/// A pool of byte buffers in four size classes, with per-tenant accounting.
///
/// `BufferPool` is a cheap handle: clones share the same free lists, counters and tenants.
/// Most programs use the process-wide [`BufferPool::global`]; tests and embedders that want
/// isolated figures build their own with [`BufferPool::builder`].
///
/// # Examples
///
/// ```
/// use axon_buffer::{BufferPool, PoolClass};
///
/// let pool = BufferPool::builder().max_idle_per_class(8).build();
/// let buf = pool.acquire(100_000);
/// assert_eq!(buf.class(), PoolClass::Large);
/// drop(buf); // back on the Large free list
/// let again = pool.acquire(200_000);
/// assert_eq!(pool.snapshot().pool_hits[&PoolClass::Large], 1);
/// # drop(again);
/// ```
#[derive(Clone)]
pub struct BufferPool {
    inner: PoolRef,
}

impl BufferPool {
    /// A pool with the given default soft limit per tenant, in bytes, and every other knob at
    /// its default (see [`BufferPoolBuilder`]).
    pub fn new(default_tenant_soft_limit_bytes: u64) -> Self {
        Self::builder()
            .default_tenant_soft_limit(default_tenant_soft_limit_bytes)
            .build()
    }

    /// A builder for every knob of a pool.
    pub fn builder() -> BufferPoolBuilder {
        BufferPoolBuilder {
            config: Config::default(),
        }
    }

    /// The process-wide pool: created with the default configuration on first use, unless
    /// [`BufferPoolBuilder::build_global`] configured it first. Its buffers refer to it by a
    /// `'static` reference, so they bump no reference count.
    pub fn global() -> &'static BufferPool {
        GLOBAL.get_or_init(|| BufferPool {
            inner: PoolRef::global(),
        })
    }

    /// A buffer of at least `requested` bytes, charged to no tenant.
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
            Err(err) => crate::error::refused(err, "BufferPool::try_acquire"),
        }
    }

    /// A buffer of at least `requested` bytes charged to no tenant, or why not.
    ///
    /// # Errors
    ///
    /// [`PoolError::TooLarge`] above `max_request_bytes`, [`PoolError::PoolLimit`] past
    /// `max_live_bytes`, [`PoolError::AllocFailed`] when the allocator refuses. Nothing is
    /// charged on error.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::{BufferPool, PoolError};
    ///
    /// let pool = BufferPool::builder().max_request_bytes(1 << 20).build();
    /// assert!(matches!(pool.try_acquire(2 << 20), Err(PoolError::TooLarge { .. })));
    /// assert_eq!(pool.snapshot().too_large_total, 1);
    /// ```
    #[inline(always)]
    pub fn try_acquire(&self, requested: usize) -> Result<PooledBuf, PoolError> {
        PooledBuf::try_new(self.inner.clone(), None, requested)
    }

    /// A buffer of at least `requested` bytes charged to no tenant, waiting for room while
    /// `max_live_bytes` refuses and waiting can help; the rules are those of
    /// [`Tenant::acquire_wait`]. Without `max_live_bytes`, nothing refuses a buffer but
    /// `TooLarge` and the allocator, and this never waits.
    ///
    /// # Errors
    ///
    /// At once: [`PoolError::TooLarge`], a request above `max_live_bytes` itself,
    /// [`PoolError::AllocFailed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let pool = BufferPool::builder().max_live_bytes(1 << 20).build();
    /// let held = pool.acquire(1 << 20);
    /// let (buf, ()) = tokio::join!(pool.acquire_wait(100), async { drop(held) });
    /// assert_eq!(buf?.capacity(), 4096);
    /// # Ok::<(), axon_buffer::PoolError>(())
    /// # }).unwrap();
    /// ```
    pub async fn acquire_wait(&self, requested: usize) -> Result<PooledBuf, PoolError> {
        PooledBuf::new_wait(self.inner.clone(), None, requested).await
    }

    /// The handle of tenant `id`, registering it on first use.
    ///
    /// Ids longer than [`MAX_TENANT_ID_LEN`](crate::MAX_TENANT_ID_LEN), and new ids once
    /// `max_tenants` accounts are tracked and none can be evicted, get the overflow tenant
    /// ([`Tenant::is_overflow`]). An account with no live bytes, no outstanding buffer, no
    /// handle and no limit set by hand may be evicted to make room; its counters go with it.
    ///
    /// A known id takes a shared lock and a hash lookup (about twice a `Tenant` clone: see
    /// `cargo bench --bench registry`), so a handler may call this per request; a new id
    /// takes the exclusive lock once. Buffers acquired through the handle charge with no
    /// lock at all.
    pub fn tenant(&self, id: &str) -> Tenant {
        Tenant::new(self.inner.clone(), self.inner.tenant_account(id))
    }

    /// Sets tenant `id`'s soft limit, registering it if needed; it overrides the pool's
    /// default soft limit for that tenant.
    pub fn set_tenant_soft_limit(&self, id: &str, soft_limit_bytes: u64) {
        let account = self.inner.tenant_account(id);
        self.inner
            .set_limits(&account, soft_limit_bytes, account.hard_limit());
    }

    /// Every figure of the pool now.
    pub fn snapshot(&self) -> BufferPoolSnapshot {
        self.inner.snapshot()
    }

    /// Frees every idle slab, in the shared lists and in every thread's cache, and returns
    /// the bytes freed. Outstanding buffers are untouched.
    ///
    /// The memory leaves the process, not only the pool: the pages of every freed slab of
    /// 64 KiB or more are given back to the system (`madvise(MADV_DONTNEED)` on Linux)
    /// before the allocator gets the slab, so resident memory drops even where glibc would
    /// keep the block in its heap. Then, unless the pool was built with
    /// [`trim_allocator(false)`](BufferPoolBuilder::trim_allocator), glibc is asked to give
    /// back the rest of its free memory (`malloc_trim(0)`), freed Small slabs included.
    pub fn trim(&self) -> u64 {
        self.inner.trim()
    }

    /// Frees, at once, every slab idle at least `idle_timeout` (see
    /// [`BufferPoolBuilder::idle_timeout`]), in the shared lists and in every thread's
    /// cache, also of threads that went quiet, and gives their pages back to the system as
    /// [`trim`](Self::trim) does. Returns the bytes freed: 0 when the pool has no idle
    /// timeout or nothing is that old. One call is enough, however long nothing ran
    /// before, and calling it often is fine (with nothing idle it freezes nothing).
    ///
    /// You rarely need it: the pool decays by itself, with no call, on its decay thread
    /// ([`BufferPoolBuilder::idle_decay_thread`], on by default) and every 1024 acquires
    /// of each thread (fast paths included), never in a drop.
    ///
    /// Idle time is measured from a coarse clock that the pool moves forward whenever it
    /// reads the real one (its decay thread does at least every quarter timeout while
    /// anything is idle; a return's fast path only reads the coarse one), so a slab's idle
    /// time may be overstated by the clock's lag, and a slab idle a little less than
    /// `idle_timeout` (by at most that lag) may go too.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use axon_buffer::{BufferPool, PoolClass};
    ///
    /// let pool = BufferPool::builder()
    ///     .idle_timeout(Some(Duration::from_millis(10)))
    ///     .idle_decay_thread(false) // so that the call below finds the slab
    ///     .build();
    /// drop(pool.acquire(1 << 20)); // one idle Large slab
    /// assert_eq!(pool.trim_idle(), 0); // idle for less than the timeout: kept
    /// std::thread::sleep(Duration::from_millis(15));
    /// assert_eq!(pool.trim_idle(), 1 << 20); // idle a whole timeout: freed
    /// let snap = pool.snapshot();
    /// assert_eq!(snap.idle_slabs[&PoolClass::Large], 0);
    /// assert_eq!(snap.decayed_slabs_total[&PoolClass::Large], 1);
    /// ```
    pub fn trim_idle(&self) -> u64 {
        self.inner.trim_idle()
    }

    /// The oldest outstanding buffers among those the leak tracker sampled, oldest first, at
    /// most `limit`. Empty unless the pool was built with
    /// [`BufferPoolBuilder::leak_tracking`].
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::{BufferPool, PoolClass};
    ///
    /// let pool = BufferPool::builder().leak_tracking(1).build(); // every buffer
    /// let kept = pool.tenant("acme").acquire(100);
    /// drop(pool.acquire(100));
    /// let report = pool.oldest_outstanding(10);
    /// assert_eq!(report.len(), 1);
    /// assert_eq!(report[0].class, PoolClass::Small);
    /// assert_eq!(report[0].tenant.as_deref(), Some("acme"));
    /// # drop(kept);
    /// ```
    pub fn oldest_outstanding(&self, limit: usize) -> Vec<OutstandingBuffer> {
        match &self.inner.leaks {
            Some(leaks) => leaks.oldest(limit),
            None => Vec::new(),
        }
    }

    /// Bytes charged now by outstanding buffers and reservations: the pool's usage minus
    /// every thread's prepaid stock, read without freezing anything (cheaper than a
    /// snapshot). Exact at rest; while buffers move between threads it may lag by what is
    /// in flight.
    pub fn live_bytes(&self) -> u64 {
        self.inner.live_bytes()
    }
}

impl Default for BufferPool {
    /// A pool with every knob at its default (a 256 MiB default soft limit per tenant).
    fn default() -> Self {
        Self::builder().build()
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("global", &self.inner.is_global())
            .field("config", &self.inner.config)
            .field("live_bytes", &self.live_bytes())
            .finish()
    }
}

/// Configures a [`BufferPool`]; every knob has the default named in its method.
///
/// # Examples
///
/// ```
/// use axon_buffer::BufferPool;
///
/// let pool = BufferPool::builder()
///     .default_tenant_soft_limit(64 << 20)
///     .max_idle_per_class(16)
///     .max_idle_bytes(128 << 20)
///     .max_tenants(1000)
///     .max_request_bytes(256 << 20)
///     .max_live_bytes(1 << 30)
///     .zero_on_release(true)
///     .build();
/// # drop(pool);
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() or build_global()"]
pub struct BufferPoolBuilder {
    config: Config,
}

impl BufferPoolBuilder {
    /// Soft limit for tenants that have none set by hand. Default 256 MiB.
    pub fn default_tenant_soft_limit(mut self, bytes: u64) -> Self {
        self.config.default_tenant_soft_limit = bytes;
        self
    }

    /// Hard limit for tenants that have none set by hand. Default: none. With one, a
    /// handler that forgets to set a limit still cannot let one tenant take the pool.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::{BufferPool, PoolError};
    ///
    /// let pool = BufferPool::builder().default_tenant_hard_limit(Some(64 << 10)).build();
    /// let tenant = pool.tenant("acme");
    /// assert_eq!(tenant.hard_limit(), Some(64 << 10));
    /// let err = tenant.try_acquire(1 << 20).unwrap_err();
    /// assert!(matches!(err, PoolError::TenantHardLimit { .. }));
    /// assert!(!err.waiting_helps()); // 1 MiB never fits 64 KiB: answer 413, not 429
    /// ```
    pub fn default_tenant_hard_limit(mut self, bytes: Option<u64>) -> Self {
        self.config.default_tenant_hard_limit = bytes;
        self
    }

    /// Most slabs kept idle per class; a slab a buffer returns to a full list is freed and
    /// counted in `discarded_total`. Default 64.
    ///
    /// A [`PooledChain`](crate::PooledChain)'s Medium segments return under
    /// [`max_idle_bytes`](Self::max_idle_bytes) alone: a chunked body grows by Medium
    /// segments (192 for 12 MiB), and a count set for whole slabs would free most of them on
    /// every return, only for the next body to allocate them again. So Medium may hold
    /// more idle slabs than this after a chain returned; buffers returned meanwhile are
    /// freed until it is back under the count.
    ///
    /// The cap counts slabs wherever they wait, thread caches included. A server whose
    /// buffers die on many threads that never acquire (tokio's blocking pool running a
    /// storage step) spreads the Small cap over their caches, up to 8 slabs and 4 spare
    /// units each: `scripts/load.sh`'s server hit 18% of its Small acquires at the default
    /// and 99.4% at 4096, at no measurable difference in CPU a request (a miss costs one
    /// `malloc`, its discard one `free`). Raise it when
    /// `buffer_pool_misses_total{class="small"}` grows beside the hits and the misses show
    /// in a profile.
    pub fn max_idle_per_class(mut self, slabs: usize) -> Self {
        self.config.max_idle_per_class = slabs;
        self
    }

    /// Most bytes kept idle across all classes. Default 256 MiB (64 idle 10 MiB slabs would
    /// otherwise pin 640 MiB).
    pub fn max_idle_bytes(mut self, bytes: u64) -> Self {
        self.config.max_idle_bytes = bytes;
        self
    }

    /// Most tenants tracked under their own id; more go to the overflow tenant. Default 10 000.
    pub fn max_tenants(mut self, tenants: usize) -> Self {
        self.config.max_tenants = tenants;
        self
    }

    /// Largest buffer the pool hands out or grows to; larger requests are
    /// [`PoolError::TooLarge`]. Default 1 GiB.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.config.max_request_bytes = bytes;
        self
    }

    /// Most bytes all outstanding buffers and reservations may hold together; a charge past
    /// it is [`PoolError::PoolLimit`]. Default: no limit.
    pub fn max_live_bytes(mut self, bytes: u64) -> Self {
        self.config.max_live_bytes = Some(bytes);
        self
    }

    /// Zero every byte a user could have written before a slab goes back on a free list
    /// (outside any lock). Default off: no byte of an earlier user is visible through the
    /// safe API anyway; this scrubs the raw memory too.
    pub fn zero_on_release(mut self, zero: bool) -> Self {
        self.config.zero_on_release = zero;
        self
    }

    /// Track one outstanding buffer in `sample_one_in` (1: every buffer; 0: off, the
    /// default) for [`BufferPool::oldest_outstanding`]. Costs one branch per acquire when
    /// off; when on, a sampled acquire and its drop take a lock.
    pub fn leak_tracking(mut self, sample_one_in: u32) -> Self {
        self.config.leak_sample_every = sample_one_in;
        self
    }

    /// Capture the backtrace of each sampled acquisition (default off: a capture costs
    /// microseconds). Needs `leak_tracking`.
    pub fn leak_backtraces(mut self, capture: bool) -> Self {
        self.config.leak_backtraces = capture;
        self
    }

    /// How long a slab may sit idle before the pool frees it (and gives its pages back to
    /// the system): `None` never frees by age. Default 20 s.
    ///
    /// With the decay thread ([`idle_decay_thread`](Self::idle_decay_thread), on by
    /// default), a slab idle `idle_timeout` is freed within `idle_timeout` plus two
    /// periods (a period is a quarter of the timeout, at most 5 s: so within 1.5 times the
    /// timeout, 30 s by default), never before `idle_timeout`, whether traffic goes on or
    /// stops. Without the thread, traffic decays the pool (every 1024 acquires of each
    /// thread), on the traffic's schedule; a pool with no traffic at all keeps its idle
    /// slabs until [`BufferPool::trim_idle`] or [`BufferPool::trim`].
    ///
    /// Why 20 s: a freed 10 MiB slab costs about 5 ms of page faults to fill again
    /// (measured on this crate's reference machine), so freeing one that turns out to be
    /// needed again costs at most 5 ms per 20 s, 0.025% of a core; meanwhile a burst's
    /// memory leaves within 25 to 30 s. (.NET's ArrayPool trims after 60 s, jemalloc
    /// decays dirty pages over 10 s.)
    pub fn idle_timeout(mut self, after: Option<std::time::Duration>) -> Self {
        self.config.idle_timeout = after;
        self
    }

    /// Whether the pool's idle decay also runs on the process's decay thread, so that a
    /// pool with no traffic at all gives its idle memory back with no call. Default
    /// `true` (also for [`BufferPool::new`], [`BufferPool::default`] and
    /// [`BufferPool::global`]); `false` turns the background part off.
    ///
    /// The thread, named `axon-buffer-decay`, is one for every pool of the process. It
    /// starts when a slab of such a pool first goes idle (a process that never has an idle
    /// slab never has it); while some pool has anything idle it wakes every quarter of that
    /// pool's `idle_timeout` (the shortest among them, at most every 5 s), freezes that
    /// pool's thread caches for a moment (one `membarrier(2)` on Linux) and frees what is
    /// old enough; while nothing is idle anywhere it is parked, with no wakeups at all; it
    /// ends when no pool that uses it is left (the global pool, once it used it, keeps
    /// it). It holds pools weakly: it never keeps one alive. If it cannot be spawned,
    /// nothing fails: the pool decays through its traffic, and a later idle slab tries
    /// again.
    ///
    /// With `false`, traffic still decays the pool: every 1024 acquires, each thread looks
    /// at the clock and runs the decay when it is due (never in a drop). A pool that goes
    /// quiet then keeps its idle slabs until [`BufferPool::trim_idle`] (from a timer of
    /// the application's runtime, say) or [`BufferPool::trim`].
    ///
    /// Under Miri the default is `false`: Miri reports a thread still running at exit
    /// (the global pool's would be), and its slow clock would let the thread decay slabs
    /// in the middle of a test's figures. Ask for it there with `true`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use axon_buffer::BufferPool;
    ///
    /// let pool = BufferPool::builder()
    ///     .idle_timeout(Some(Duration::from_millis(20)))
    ///     .build(); // the decay thread is on by default
    /// drop(pool.acquire(1 << 20));
    /// let deadline = Instant::now() + Duration::from_secs(10);
    /// while pool.snapshot().idle_bytes > 0 && Instant::now() < deadline {
    ///     std::thread::sleep(Duration::from_millis(10)); // no call, no traffic
    /// }
    /// assert_eq!(pool.snapshot().idle_bytes, 0);
    /// ```
    pub fn idle_decay_thread(mut self, run: bool) -> Self {
        self.config.idle_decay_thread = run;
        self
    }

    /// Whether freeing idle slabs also asks the C allocator to give its free memory back
    /// to the system. Default `true`; it does something only where the allocator is
    /// glibc's (Linux, `target_env = "gnu"`), and is a no-op elsewhere.
    ///
    /// The pool gives back the pages of every slab of 64 KiB or more it frees, but glibc
    /// keeps free memory that lies below a live block in its heap: freed Small slabs, and
    /// whatever else the process freed around them. With this on, the decay thread (after
    /// a pass that freed anything), [`BufferPool::trim`] (always) and
    /// [`BufferPool::trim_idle`] (when it freed anything) call `malloc_trim(0)`, which
    /// hands those free pages back too. Measured on this crate's 2-core machine: an HTTP
    /// server 30 s after a load of uploads, every slab decayed, held 22.5 MiB resident
    /// before the call and 12.8 MiB after. The decay run by traffic (on
    /// a request's thread) never calls it.
    ///
    /// The call is process-wide: it walks every glibc heap, each under its own lock, so
    /// threads allocating from a heap wait while it is walked. Measured in the same
    /// server under load, with a 1 s `idle_timeout` so that it ran 59 times: 0.15 to
    /// 2.6 ms a call, median 0.4 ms. It runs at most once per decay period (a quarter of
    /// `idle_timeout`, at most every 5 s), and only when something was idle long enough
    /// to be freed. Turn it off if the process manages glibc itself
    /// (`M_TRIM_THRESHOLD`, its own `malloc_trim`), or uses another global allocator and
    /// no C code that allocates.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    ///
    /// let pool = BufferPool::builder().trim_allocator(false).build();
    /// drop(pool.acquire(100));
    /// assert_eq!(pool.trim(), 4096); // the slab is freed; glibc keeps what it keeps
    /// ```
    pub fn trim_allocator(mut self, trim: bool) -> Self {
        self.config.trim_allocator = trim;
        self
    }

    /// A new pool with this configuration.
    pub fn build(self) -> BufferPool {
        BufferPool {
            inner: PoolRef::new(self.config),
        }
    }

    /// Makes this configuration the one of [`BufferPool::global`] and returns it.
    ///
    /// # Errors
    ///
    /// [`PoolError::GlobalAlreadyInitialized`] if the global pool already exists (it was
    /// used, or configured, before).
    pub fn build_global(self) -> Result<&'static BufferPool, PoolError> {
        if crate::inner::init_global(self.config) {
            Ok(BufferPool::global())
        } else {
            Err(PoolError::GlobalAlreadyInitialized)
        }
    }
}

impl BufferPool {
    /// The pool an untenanted chain charges.
    pub(crate) fn parts(&self) -> (&PoolRef, Option<AccountPtr>) {
        (&self.inner, None)
    }
}
