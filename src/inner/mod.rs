//! The shared state that buffers return their slabs to: free lists, per-thread caches,
//! counters, tenant accounts. The ground floor of the crate: it knows no public handle, so
//! `pool.rs` (which creates buffers) and `buf.rs` (which returns them) both build on it
//! without importing each other.

pub(crate) mod accounts;
mod cache;
mod fence;
mod free_list;

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::leak::LeakTracker;
use crate::snapshot::BufferPoolSnapshot;
use crate::{PoolClass, PoolError};
use accounts::{try_add_bounded, ChargeRefused, Departures, Registry, TenantAccount};
use cache::{bump, cached_index, steal_all, LocalCache, Section, CACHED};
use free_list::FreeList;

/// Reservations (and charges made where no thread cache is reachable) may take the pool's
/// shared live figure up to this, no further. Buffers charged through a thread cache skip
/// the overflow check: together they can never hold more than the address space (below
/// 2^63 bytes), so the sum of both never wraps.
const MAX_SHARED_LIVE: u64 = i64::MAX as u64;

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

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
    /// Track one buffer in this many; 0 is off.
    pub(crate) leak_sample_every: u32,
    pub(crate) leak_backtraces: bool,
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
            leak_sample_every: 0,
            leak_backtraces: false,
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
    /// Figures of thread caches whose thread has exited, per cached class.
    retired_hits: [AtomicU64; 4],
    retired_returned: [AtomicU64; 4],
}

/// The state every handle, buffer and reservation of one pool shares.
#[derive(Debug)]
pub(crate) struct PoolInner {
    pub(crate) config: Config,
    id: u64,
    /// Buffers charge this thread's live figure (no `max_live_bytes` to check), so a
    /// thread cache can serve an acquire in one section.
    cache_charges: bool,
    /// ... and its slabs return to the cache as they are (no `zero_on_release` either).
    cache_returns: bool,
    free: [Mutex<FreeList>; 4],
    /// Idle-budget units taken, per class: idle slabs plus slots thread caches hold. Never
    /// above `max_idle_per_class`.
    idle_units: [AtomicUsize; 4],
    /// The same units in bytes, across classes. Never above `max_idle_bytes`.
    idle_budget: AtomicU64,
    /// Live bytes charged outside thread caches (reservations, `max_live_bytes` pools,
    /// exited threads), wrapping: thread caches hold the rest.
    live: AtomicU64,
    reserved: AtomicU64,
    counters: Counters,
    tenants: Mutex<Registry>,
    /// Accounts that may have lost their last handle since the registry last looked.
    pub(crate) departures: Departures,
    caches: Mutex<Vec<Arc<LocalCache>>>,
    /// Sampled records of outstanding buffers, when `leak_sample_every` is set.
    pub(crate) leaks: Option<LeakTracker>,
}

/// How a buffer, reservation or handle refers to its pool: the process-global pool by a
/// `'static` reference (no reference count to bump), any other pool by an `Arc`. Either way
/// the pool outlives every buffer taken from it. Reaching the pool is one load, whichever
/// it is.
#[derive(Debug, Clone)]
pub(crate) struct PoolRef {
    /// The pool: the global one, or the allocation `owner` keeps alive.
    inner: NonNull<PoolInner>,
    /// `None` for the process-global pool.
    owner: Option<Arc<PoolInner>>,
}

// SAFETY: a `PoolRef` is a `&'static PoolInner` or an `Arc<PoolInner>` (plus a pointer to
// the same pool), both `Send` because `PoolInner` is `Send + Sync`.
unsafe impl Send for PoolRef {}
// SAFETY: as for `Send`: shared access gives `&PoolInner` only, and `PoolInner` is `Sync`.
unsafe impl Sync for PoolRef {}

impl PoolRef {
    /// The process-global pool (the only `'static` one).
    pub(crate) fn global(inner: &'static PoolInner) -> PoolRef {
        PoolRef {
            inner: NonNull::from(inner),
            owner: None,
        }
    }

    /// Any other pool.
    pub(crate) fn shared(inner: Arc<PoolInner>) -> PoolRef {
        PoolRef {
            inner: NonNull::from(&*inner),
            owner: Some(inner),
        }
    }

    /// Whether this is the process-global pool.
    pub(crate) fn is_global(&self) -> bool {
        self.owner.is_none()
    }
}

impl Deref for PoolRef {
    type Target = PoolInner;

    #[inline(always)]
    fn deref(&self) -> &PoolInner {
        // SAFETY: `inner` points to the global pool (`'static`), or into the allocation of
        // `owner`, which this `PoolRef` keeps alive; `PoolInner` is only ever shared.
        unsafe { self.inner.as_ref() }
    }
}

/// What a thread-local entry keeps of its pool: enough to fold the cache back when the
/// thread exits, without keeping the pool alive.
enum WeakPool {
    Static(&'static PoolInner),
    Shared(Weak<PoolInner>),
}

/// One thread's cache for one pool, as the thread sees it.
struct Entry {
    pool_id: u64,
    cache: Arc<LocalCache>,
    pool: WeakPool,
}

impl Drop for Entry {
    /// The thread is exiting (or the pool is gone): give the cache back to the pool.
    fn drop(&mut self) {
        match &self.pool {
            WeakPool::Static(inner) => inner.retire(&self.cache),
            WeakPool::Shared(weak) => {
                if let Some(inner) = weak.upgrade() {
                    inner.retire(&self.cache);
                }
            }
        }
    }
}

/// This thread's cache for the process-global pool: its own slot, so the global pool's hot
/// path needs no search.
struct GlobalEntry(OnceCell<(&'static PoolInner, Arc<LocalCache>)>);

impl Drop for GlobalEntry {
    /// The thread is exiting: give the cache back to the global pool.
    fn drop(&mut self) {
        if let Some((inner, cache)) = self.0.get() {
            inner.retire(cache);
        }
    }
}

thread_local! {
    static GLOBAL_LOCAL: GlobalEntry = const { GlobalEntry(OnceCell::new()) };
    static LOCAL: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// A tenant's refusal as the error a caller sees: an overflowing sum is `TooLarge`, the
/// hard limit `TenantHardLimit`. (The pool's own refusals are in `charge_shared`.)
fn tenant_refused(refused: ChargeRefused, bytes: u64, account: &TenantAccount) -> PoolError {
    match refused {
        ChargeRefused::Overflow => PoolError::TooLarge {
            requested: bytes,
            max: u64::MAX,
        },
        ChargeRefused::Limit { live, limit } => PoolError::TenantHardLimit {
            tenant: account.id().to_owned(),
            requested: bytes,
            live,
            limit,
            needed: bytes,
        },
    }
}

impl PoolRef {
    /// Runs `f` with this thread's cache for this pool, registering one on first use.
    /// `None` when the thread-local storage is gone (a drop inside a thread-local
    /// destructor) or busy: callers then take the shared path.
    #[inline]
    fn local<R>(&self, f: impl FnOnce(&LocalCache) -> R) -> Option<R> {
        let cache = match self.cache_ptr() {
            Some(cache) => cache,
            None => self.register()?,
        };
        // `cache` points into an `Arc<LocalCache>` held by this thread's entry (`GLOBAL_LOCAL`,
        // or `LOCAL` for a pool that is alive: `self` keeps it so) and by the pool's registry
        // until `retire`; only the entry's destructor lets go of both.
        // SAFETY: so the cache outlives this call (that destructor runs on this thread at its
        // exit, never during it), and the reference is shared, as every access to a cache is.
        Some(f(unsafe { cache.as_ref() }))
    }

    /// [`Self::local`] for return paths: never registers (which allocates), so a `Drop` on
    /// a thread that has no cache yet takes the shared path and allocates nothing.
    #[inline(always)]
    fn local_existing<R>(&self, f: impl FnOnce(&LocalCache) -> R) -> Option<R> {
        let cache = self.cache_ptr()?;
        // SAFETY: as in `local`: this thread's entry and the pool's registry keep the
        // cache alive for the whole call, and the reference is shared.
        Some(f(unsafe { cache.as_ref() }))
    }

    /// This thread's cache for this pool, if it has one and its thread-local storage is
    /// alive and not being changed.
    #[inline(always)]
    fn cache_ptr(&self) -> Option<NonNull<LocalCache>> {
        if self.is_global() {
            GLOBAL_LOCAL
                .try_with(|entry| entry.0.get().map(|(_, cache)| NonNull::from(&**cache)))
                .ok()
                .flatten()
        } else {
            self.find_local()
        }
    }

    #[inline]
    fn find_local(&self) -> Option<NonNull<LocalCache>> {
        let id = self.id;
        LOCAL
            .try_with(|entries| {
                let entries = entries.try_borrow().ok()?;
                let entry = entries.iter().find(|e| e.pool_id == id)?;
                Some(NonNull::from(&*entry.cache))
            })
            .ok()
            .flatten()
    }

    /// Registers this thread's cache for this pool (the first acquire on a thread).
    #[cold]
    fn register(&self) -> Option<NonNull<LocalCache>> {
        fence::init();
        match &self.owner {
            None => GLOBAL_LOCAL
                .try_with(|entry| {
                    let (_, cache) = entry.0.get_or_init(|| {
                        let cache = Arc::new(LocalCache::new());
                        self.caches.lock().push(Arc::clone(&cache));
                        (crate::pool::global_inner(), cache)
                    });
                    NonNull::from(&**cache)
                })
                .ok(),
            Some(_) => LOCAL
                .try_with(|entries| self.register_local(entries))
                .ok()
                .flatten(),
        }
    }

    #[cold]
    fn register_local(&self, entries: &RefCell<Vec<Entry>>) -> Option<NonNull<LocalCache>> {
        let mut entries = entries.try_borrow_mut().ok()?;
        // Entries of pools that are gone hold nothing (the pool's drop emptied them).
        entries.retain(|e| match &e.pool {
            WeakPool::Static(_) => true,
            WeakPool::Shared(weak) => weak.strong_count() > 0,
        });
        let cache = Arc::new(LocalCache::new());
        self.caches.lock().push(Arc::clone(&cache));
        let pool = match &self.owner {
            None => WeakPool::Static(crate::pool::global_inner()),
            Some(inner) => WeakPool::Shared(Arc::downgrade(inner)),
        };
        let ptr = NonNull::from(&*cache);
        entries.push(Entry {
            pool_id: self.id,
            cache,
            pool,
        });
        Some(ptr)
    }

    /// Charge and slab in one step, all or nothing: the hot path of an acquire. Returns the
    /// slab (empty, of exactly `capacity`) and the tenant's live bytes after the charge. The
    /// soft limit is not counted here: the caller counts it once it holds the slab.
    #[inline(always)]
    pub(crate) fn obtain(
        &self,
        tenant: Option<&TenantAccount>,
        class: PoolClass,
        capacity: usize,
    ) -> Result<(Vec<u8>, u64), PoolError> {
        let bytes = capacity as u64;
        let tenant_live = match tenant {
            None => 0,
            Some(account) => self.charge_tenant(account, bytes)?,
        };
        if self.cache_charges {
            if let Some(k) = cached_index(class) {
                if let Some(slab) = self.pop_cached(k, bytes) {
                    return Ok((slab, tenant_live));
                }
            }
        }
        self.obtain_slow(tenant, class, capacity)
            .map(|slab| (slab, tenant_live))
    }

    /// The common acquire: a slab from this thread's (already registered) cache, with the
    /// charge on the thread's own live figure, in one section; `None` changes nothing.
    #[inline(always)]
    fn pop_cached(&self, k: usize, bytes: u64) -> Option<Vec<u8>> {
        self.local_existing(|cache| {
            let section = cache.enter()?;
            let slab = self.pop_counted(&section, k)?;
            bump(&cache.live, bytes);
            Some(slab)
        })
        .flatten()
    }

    /// A slab from the cache's stack, counted as a hit.
    #[inline(always)]
    fn pop_counted(&self, section: &Section<'_>, k: usize) -> Option<Vec<u8>> {
        let cache = section.cache();
        let slab = section.pop(k)?;
        bump(&cache.hits[k], 1);
        // Keep at most one unit beyond the slabs held: a thread that takes buffers and lets
        // other threads drop them must not sit on budget their returns need. In the common
        // acquire/drop cycle `held` equals the slabs held before the pop.
        let keep = section.len(k) + 1;
        if cache.held[k].load(Relaxed) > keep {
            self.shrink_held(cache, k, keep);
        }
        Some(slab)
    }

    /// Gives back the units a cache holds beyond `keep`.
    #[cold]
    fn shrink_held(&self, cache: &LocalCache, k: usize, keep: usize) {
        let held = cache.held[k].load(Relaxed);
        cache.held[k].store(keep, Relaxed);
        self.release_units(CACHED[k].0, held - keep);
    }

    /// The rest of [`Self::obtain`], the tenant already charged: registers this thread's
    /// cache, refills it, or takes the shared path; undoes the tenant's charge on error.
    #[inline(never)]
    fn obtain_slow(
        &self,
        tenant: Option<&TenantAccount>,
        class: PoolClass,
        capacity: usize,
    ) -> Result<Vec<u8>, PoolError> {
        let bytes = capacity as u64;
        let mut tried_shared = false;
        if let (true, Some(k)) = (self.cache_charges, cached_index(class)) {
            // One thread-local access and one section for the charge and the slab.
            let hit = self.local(|cache| {
                let section = cache.enter()?;
                let slab = self.take_cached(&section, k, class);
                if slab.is_some() {
                    bump(&cache.live, bytes);
                }
                Some(slab)
            });
            match hit {
                Some(Some(Some(slab))) => return Ok(slab),
                Some(Some(None)) => tried_shared = true,
                _ => {}
            }
        }
        if let Err(err) = self.charge_pool(bytes) {
            if let Some(account) = tenant {
                account.debit(bytes);
            }
            return Err(err);
        }
        let taken = match class {
            PoolClass::Oversize => self.allocate_oversize(capacity),
            class if tried_shared => self.allocate_slab(class),
            class => self.take_slab(class),
        };
        taken.inspect_err(|_| self.debit(tenant, bytes))
    }

    /// Release and debit in one step: the hot path of a drop. See [`Self::release_slab`].
    #[inline(always)]
    pub(crate) fn give_back(
        &self,
        slab: Vec<u8>,
        class: PoolClass,
        exposed: usize,
        tenant: Option<&TenantAccount>,
        charged: u64,
    ) {
        if let Some(account) = tenant {
            account.debit(charged);
        }
        if self.cache_returns && slab.capacity() == class.capacity() {
            if let Some(k) = cached_index(class) {
                match self.push_cached(k, slab, charged) {
                    Ok(()) => return,
                    Err(slab) => return self.give_back_slow(slab, class, exposed, charged),
                }
            }
        }
        self.give_back_slow(slab, class, exposed, charged);
    }

    /// The common drop: the slab into this thread's cache, for a unit it already holds,
    /// with the debit on the thread's own live figure, in one section; `Err` changes
    /// nothing. The slab must be of exactly its class's capacity.
    #[inline(always)]
    fn push_cached(&self, k: usize, mut slab: Vec<u8>, charged: u64) -> Result<(), Vec<u8>> {
        slab.clear();
        let mut slab = Some(slab);
        let done = self.local_existing(|cache| {
            let section = cache.enter()?;
            let held = cache.held[k].load(Relaxed);
            let taken = slab.take()?;
            if let Err(back) = section.push(k, held, taken) {
                slab = Some(back);
                return None;
            }
            bump(&cache.returned[k], 1);
            bump(&cache.live, charged.wrapping_neg());
            Some(())
        });
        match (done, slab) {
            (Some(Some(())), _) => Ok(()),
            (_, Some(slab)) => Err(slab),
            (_, None) => Ok(()), // cannot happen: the slab is pushed only on success
        }
    }

    /// The rest of [`Self::give_back`], the tenant already debited.
    #[inline(never)]
    fn give_back_slow(&self, slab: Vec<u8>, class: PoolClass, exposed: usize, charged: u64) {
        self.release_slab(slab, class, exposed);
        self.debit(None, charged);
    }

    /// Charges `bytes` to the tenant (if any) and the pool, all or nothing (a promotion).
    pub(crate) fn charge(
        &self,
        tenant: Option<&TenantAccount>,
        bytes: u64,
    ) -> Result<u64, PoolError> {
        let tenant_live = match tenant {
            None => 0,
            Some(account) => self.charge_tenant(account, bytes)?,
        };
        if let Err(err) = self.charge_pool(bytes) {
            if let Some(account) = tenant {
                account.debit(bytes);
            }
            return Err(err);
        }
        Ok(tenant_live)
    }

    #[inline]
    /// Charges the pool: this thread's figure when there is no `max_live_bytes` to enforce,
    /// else (or without thread-local storage) the shared one.
    fn charge_pool(&self, bytes: u64) -> Result<(), PoolError> {
        let local = self.config.max_live_bytes.is_none()
            && self.local(|cache| bump(&cache.live, bytes)).is_some();
        if local {
            Ok(())
        } else {
            self.charge_shared(bytes)
        }
    }

    /// Undoes [`Self::charge`].
    pub(crate) fn debit(&self, tenant: Option<&TenantAccount>, bytes: u64) {
        if let Some(account) = tenant {
            account.debit(bytes);
        }
        let local = self.config.max_live_bytes.is_none()
            && self
                .local_existing(|cache| bump(&cache.live, bytes.wrapping_neg()))
                .is_some();
        if !local {
            self.live.fetch_sub(bytes, Relaxed);
        }
    }

    /// A slab of exactly `class.capacity()` bytes, empty: from this thread's cache or the
    /// class's free list (a hit), or freshly allocated (a miss). `class` must not be Oversize.
    pub(crate) fn take_slab(&self, class: PoolClass) -> Result<Vec<u8>, PoolError> {
        let cached = cached_index(class).and_then(|k| {
            self.local(|cache| {
                let section = cache.enter()?;
                Some(self.take_cached(&section, k, class))
            })
            .flatten()
        });
        let hit = match cached {
            Some(hit) => hit,
            None => self.take_shared(class),
        };
        match hit {
            Some(slab) => Ok(slab),
            None => self.allocate_slab(class),
        }
    }

    /// A slab from the cache, refilled from the shared list when empty; `None` when both
    /// are empty.
    #[inline]
    fn take_cached(&self, section: &Section<'_>, k: usize, class: PoolClass) -> Option<Vec<u8>> {
        self.pop_counted(section, k)
            .or_else(|| self.refill(section, k, class))
    }

    /// The cache is empty: takes one slab and up to half the slots' worth more from the
    /// shared list, under one lock. The batch's storage is reserved outside the lock, and
    /// fallibly: without it, only the one slab.
    #[cold]
    fn refill(&self, section: &Section<'_>, k: usize, class: PoolClass) -> Option<Vec<u8>> {
        let cache = section.cache();
        let half = LocalCache::limit(k) / 2;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let batched = batch.try_reserve_exact(half).is_ok();
        let slab = {
            let mut list = self.free[class.index()].lock();
            let slab = list.slabs.pop()?;
            list.hits += 1;
            if batched {
                let at = list.slabs.len().saturating_sub(half);
                batch.extend(list.slabs.drain(at..));
            }
            slab
        };
        // Every slab from the list carried a unit of idle budget. Keep the moved slabs'
        // units plus one spare (for the buffer now leaving); give back the units the empty
        // cache held.
        let held = cache.held[k].load(Relaxed);
        let keep = batch.len() + 1;
        cache.held[k].store(keep, Relaxed);
        self.release_units(class, held);
        for idle in batch {
            if let Err(idle) = section.push(k, keep, idle) {
                self.give_shared(idle, class, false); // cannot happen: moved < keep free slots
            }
        }
        Some(slab)
    }

    /// Takes back a slab whose buffer is gone: into this thread's cache, onto its class's
    /// free list, or freed (and counted as discarded) when it is not exactly its class's
    /// capacity or the caps have no room. `exposed` is how many leading bytes may hold a
    /// user's data (zeroed first when `zero_on_release` is on). Never panics; holds a lock
    /// only for a push.
    pub(crate) fn release_slab(&self, mut slab: Vec<u8>, class: PoolClass, exposed: usize) {
        if class == PoolClass::Oversize || slab.capacity() != class.capacity() {
            self.discard(class);
            return;
        }
        slab.clear();
        if self.config.zero_on_release {
            // Outside any lock: up to 10 MiB of memset must not stall other threads.
            slab.resize(exposed.min(slab.capacity()), 0);
            slab.clear();
        }
        if let Some(k) = cached_index(class) {
            let mut slab = Some(slab);
            self.local_existing(|cache| {
                if let Some(section) = cache.enter() {
                    self.give_cached(&section, k, class, &mut slab);
                }
            });
            // Still here: no thread-local storage, a stealer at work, or no budget unit.
            if let Some(slab) = slab {
                self.give_shared(slab, class, true);
            }
            return;
        }
        self.give_shared(slab, class, true);
    }

    /// Puts the slab in `slab` into the cache (taking it out of the option) if the cache has
    /// a unit for it or can reserve one; spills half the cache to the shared list when full.
    #[inline]
    fn give_cached(
        &self,
        section: &Section<'_>,
        k: usize,
        class: PoolClass,
        slab: &mut Option<Vec<u8>>,
    ) {
        let cache = section.cache();
        let held = cache.held[k].load(Relaxed);
        let Some(mut taken) = slab.take() else {
            return;
        };
        taken.clear();
        // A unit for it already: no shared atomic at all.
        match section.push(k, held, taken) {
            Ok(()) => bump(&cache.returned[k], 1),
            Err(back) => self.give_cached_slow(section, k, class, back, slab),
        }
    }

    /// The cache has no unit to spare: spill half of it when full, then reserve a unit.
    #[cold]
    fn give_cached_slow(
        &self,
        section: &Section<'_>,
        k: usize,
        class: PoolClass,
        taken: Vec<u8>,
        slab: &mut Option<Vec<u8>>,
    ) {
        let cache = section.cache();
        let mut held = cache.held[k].load(Relaxed);
        if taken.capacity() != class.capacity() {
            *slab = Some(taken); // cannot happen: callers checked; the shared path frees it
            return;
        }
        if held >= LocalCache::limit(k) {
            // Full: move the upper half to the shared list under one lock; their units go
            // with them.
            let keep = held / 2;
            let mut list = self.free[class.index()].lock();
            let room = list.slabs.try_reserve(held - keep).is_ok();
            let mut moved = 0;
            while section.len(k) > keep {
                let Some(idle) = section.pop(k) else { break };
                if room {
                    list.slabs.push(idle);
                    moved += 1;
                } // else freed: no room on the list's storage
            }
            drop(list);
            self.release_units(class, (held - keep) - moved); // units of freed slabs
            held = keep;
            cache.held[k].store(held, Relaxed);
        }
        if !self.reserve_unit(class) {
            *slab = Some(taken);
            return;
        }
        held += 1;
        cache.held[k].store(held, Relaxed);
        match section.push(k, held, taken) {
            Ok(()) => bump(&cache.returned[k], 1),
            Err(back) => {
                // Cannot happen: fewer than `held` slabs are cached. Undo the unit.
                cache.held[k].store(held - 1, Relaxed);
                self.release_units(class, 1);
                *slab = Some(back);
            }
        }
    }
}

impl PoolInner {
    pub(crate) fn new(config: Config) -> Self {
        let slots = config.max_idle_per_class;
        PoolInner {
            id: NEXT_POOL_ID.fetch_add(1, Relaxed),
            cache_charges: config.max_live_bytes.is_none(),
            cache_returns: config.max_live_bytes.is_none() && !config.zero_on_release,
            free: std::array::from_fn(|_| Mutex::new(FreeList::with_capacity(slots))),
            idle_units: Default::default(),
            idle_budget: AtomicU64::new(0),
            live: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            counters: Counters::default(),
            tenants: Mutex::new(Registry::new(
                config.max_tenants,
                config.default_tenant_soft_limit,
            )),
            departures: Departures::default(),
            caches: Mutex::new(Vec::new()),
            leaks: (config.leak_sample_every > 0)
                .then(|| LeakTracker::new(config.leak_sample_every, config.leak_backtraces)),
            config,
        }
    }

    pub(crate) fn tenant_account(&self, id: &str) -> Arc<TenantAccount> {
        self.tenants.lock().get_or_register(id, &self.departures)
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
                self.counters.too_large.fetch_add(1, Relaxed);
                Err(PoolError::TooLarge {
                    requested: requested.map_or(u64::MAX, |n| n as u64),
                    max: max as u64,
                })
            }
        }
    }

    /// Charges `bytes` to the tenant within its hard limit; returns its live bytes after the
    /// charge.
    fn charge_tenant(&self, account: &TenantAccount, bytes: u64) -> Result<u64, PoolError> {
        account.try_charge(bytes).map_err(|refused| {
            if refused == ChargeRefused::Overflow {
                self.counters.too_large.fetch_add(1, Relaxed);
            }
            tenant_refused(refused, bytes, account)
        })
    }

    /// Charges the shared live figure, within `max_live_bytes` (a refusal is `PoolLimit`) or
    /// [`MAX_SHARED_LIVE`] (a refusal is `TooLarge`). A sum past `u64::MAX` is `TooLarge`
    /// with `max: u64::MAX`.
    fn charge_shared(&self, bytes: u64) -> Result<(), PoolError> {
        let limit = self.config.max_live_bytes.unwrap_or(MAX_SHARED_LIVE);
        let refused = match try_add_bounded(&self.live, bytes, limit) {
            Ok(_) => return Ok(()),
            Err(refused) => refused,
        };
        let (counter, err) = match (refused, self.config.max_live_bytes) {
            (ChargeRefused::Limit { live, limit }, Some(_)) => (
                &self.counters.pool_limit_refusals,
                PoolError::PoolLimit {
                    requested: bytes,
                    live,
                    limit,
                    needed: bytes,
                },
            ),
            (ChargeRefused::Limit { .. }, None) => (
                &self.counters.too_large,
                PoolError::TooLarge {
                    requested: bytes,
                    max: MAX_SHARED_LIVE,
                },
            ),
            (ChargeRefused::Overflow, _) => (
                &self.counters.too_large,
                PoolError::TooLarge {
                    requested: bytes,
                    max: u64::MAX,
                },
            ),
        };
        counter.fetch_add(1, Relaxed);
        Err(err)
    }

    /// Charges a reservation: always on the shared figure, so it is bounded and exact.
    pub(crate) fn charge_reservation(
        &self,
        account: &TenantAccount,
        bytes: u64,
    ) -> Result<u64, PoolError> {
        let live = self.charge_tenant(account, bytes)?;
        if let Err(err) = self.charge_shared(bytes) {
            account.debit(bytes);
            return Err(err);
        }
        self.reserved.fetch_add(bytes, Relaxed);
        Ok(live)
    }

    /// Undoes [`Self::charge_reservation`].
    pub(crate) fn debit_reservation(&self, account: &TenantAccount, bytes: u64) {
        account.debit(bytes);
        self.live.fetch_sub(bytes, Relaxed);
        self.reserved.fetch_sub(bytes, Relaxed);
    }

    /// Takes one unit of idle budget for `class`, if both caps have room.
    fn reserve_unit(&self, class: PoolClass) -> bool {
        let units = &self.idle_units[class.index()];
        let mut cur = units.load(Relaxed);
        loop {
            if cur >= self.config.max_idle_per_class {
                return false;
            }
            match units.compare_exchange_weak(cur, cur + 1, Relaxed, Relaxed) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        let bytes = class.capacity() as u64;
        if try_add_bounded(&self.idle_budget, bytes, self.config.max_idle_bytes).is_err() {
            units.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    fn release_units(&self, class: PoolClass, n: usize) {
        if n > 0 {
            self.idle_units[class.index()].fetch_sub(n, Relaxed);
            self.idle_budget
                .fetch_sub(n as u64 * class.capacity() as u64, Relaxed);
        }
    }

    /// A slab from the class's shared free list, if any.
    fn take_shared(&self, class: PoolClass) -> Option<Vec<u8>> {
        let slab = {
            let mut list = self.free[class.index()].lock();
            let slab = list.slabs.pop();
            list.hits += u64::from(slab.is_some());
            slab
        }?;
        self.release_units(class, 1);
        Some(slab)
    }

    /// Puts an empty slab on its class's shared list if the caps have room, else frees it.
    /// `from_buffer` says whether a buffer is returning it (counted as returned or
    /// discarded) or an idle slab is moving (a thread cache folding back: not counted).
    fn give_shared(&self, slab: Vec<u8>, class: PoolClass, from_buffer: bool) {
        if !self.reserve_unit(class) {
            if from_buffer {
                self.discard(class);
            }
            return;
        }
        let mut list = self.free[class.index()].lock();
        // Never allocate infallibly on a return path: without room, the slab is freed.
        if list.slabs.try_reserve(1).is_err() {
            drop(list);
            self.release_units(class, 1);
            if from_buffer {
                self.discard(class);
            }
            return;
        }
        list.slabs.push(slab);
        list.returned += u64::from(from_buffer);
    }

    /// A fresh slab of a pooled class: a miss.
    fn allocate_slab(&self, class: PoolClass) -> Result<Vec<u8>, PoolError> {
        let slab = self.allocate(class, class.capacity())?;
        self.counters.misses[class.index()].fetch_add(1, Relaxed);
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

    fn discard(&self, class: PoolClass) {
        self.counters.discarded[class.index()].fetch_add(1, Relaxed);
    }

    /// A thread's cache comes home: its figures fold into the pool's (under the registry
    /// lock, so a snapshot sees them exactly once), its units go back, its slabs go to the
    /// shared lists (or are freed when those have no room). Runs on the cache's own thread.
    fn retire(&self, cache: &Arc<LocalCache>) {
        {
            let mut caches = self.caches.lock();
            let c = &self.counters;
            self.live.fetch_add(cache.live.load(Relaxed), Relaxed);
            for k in 0..CACHED.len() {
                c.retired_hits[k].fetch_add(cache.hits[k].load(Relaxed), Relaxed);
                c.retired_returned[k].fetch_add(cache.returned[k].load(Relaxed), Relaxed);
            }
            caches.retain(|other| !Arc::ptr_eq(other, cache));
        }
        // Out of the registry, no stealer can reach the cache any more (a steal holds the
        // registry lock throughout), so the section cannot be refused; if it were, the
        // slabs would be freed with the cache.
        let section = cache.enter();
        for (k, (class, _)) in CACHED.into_iter().enumerate() {
            if let Some(section) = &section {
                while let Some(slab) = section.pop(k) {
                    self.give_shared(slab, class, false);
                }
            }
            self.release_units(class, cache.held[k].swap(0, Relaxed));
        }
    }

    /// Frees every idle slab, in the shared lists and in every thread's cache; returns the
    /// bytes freed. Units held by caches stay with them (no memory behind them).
    pub(crate) fn trim(&self) -> u64 {
        let mut freed = 0;
        for class in PoolClass::non_oversize() {
            // Keep the list's storage, so the next return needs no allocation.
            let mut slabs: Vec<Vec<u8>> = Vec::new();
            let count = {
                let mut list = self.free[class.index()].lock();
                let count = list.slabs.len();
                match slabs.try_reserve_exact(count) {
                    Ok(()) => slabs.append(&mut list.slabs), // freed outside the lock
                    Err(_) => list.slabs.clear(),            // freed here, rarely
                }
                count
            };
            drop(slabs);
            self.release_units(class, count);
            freed += count as u64 * class.capacity() as u64;
        }
        // The registry lock keeps other stealers out and the caches registered meanwhile.
        let caches = self.caches.lock();
        steal_all(caches.iter().map(|c| &**c), |k, slab| {
            freed += CACHED[k].0.capacity() as u64;
            drop(slab);
        });
        freed
    }

    /// Live bytes: the shared figure plus every thread's, read one after another. Exact when
    /// no buffer moves meanwhile; under traffic it may lag by the buffers in flight between
    /// threads, and it is never negative.
    pub(crate) fn live_bytes(&self) -> u64 {
        self.sum_live(&self.caches.lock())
    }

    fn sum_live(&self, caches: &[Arc<LocalCache>]) -> u64 {
        let sum = caches.iter().fold(self.live.load(Relaxed), |sum, cache| {
            sum.wrapping_add(cache.live.load(Relaxed))
        });
        // Real totals stay far below this (reservations are capped at 2^63 - 1, buffers by
        // the address space); a sum within 2^62 of wrapping is a debit read before its charge.
        if sum > u64::MAX - (1 << 62) {
            0
        } else {
            sum
        }
    }

    pub(crate) fn snapshot(&self) -> BufferPoolSnapshot {
        let c = &self.counters;
        let mut snap = BufferPoolSnapshot::empty();
        // Thread-cache figures first, under the registry lock (see `retire`).
        let mut cached_hits = [0u64; 4];
        let mut cached_returned = [0u64; 4];
        let mut cached_idle = [0u64; 4];
        let live;
        {
            let caches = self.caches.lock();
            for (k, (class, _)) in CACHED.into_iter().enumerate() {
                let i = class.index();
                cached_hits[i] = c.retired_hits[k].load(Relaxed);
                cached_returned[i] = c.retired_returned[k].load(Relaxed);
                for cache in caches.iter() {
                    cached_hits[i] += cache.hits[k].load(Relaxed);
                    cached_returned[i] += cache.returned[k].load(Relaxed);
                    cached_idle[i] += cache.idle(k) as u64;
                }
            }
            live = self.sum_live(&caches);
        }
        for class in PoolClass::non_oversize() {
            let idx = class.index();
            let (hits, returned, idle) = {
                let list = self.free[idx].lock();
                (list.hits, list.returned, list.slabs.len() as u64)
            };
            let hits = hits + cached_hits[idx];
            let idle = idle + cached_idle[idx];
            let misses = c.misses[idx].load(Relaxed);
            let released = returned
                + cached_returned[idx]
                + c.discarded[idx].load(Relaxed)
                + c.detached[idx].load(Relaxed);
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
        snap.live_bytes = live;
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
            buffers.insert(id, TenantAccount::buffers(account));
        }
        drop(registry);
        snap.tenant_live_bytes = live;
        snap.tenant_soft_limit_exceeded_total = exceeded;
        snap.hard_limit_refusals_total = refusals;
        snap.tenant_outstanding_buffers = buffers;
        snap
    }
}

impl Drop for PoolInner {
    /// The last handle and buffer are gone: free what thread caches still hold (their
    /// threads' entries outlive the pool and must not keep its slabs). No thread can be in
    /// a section of this pool (that takes a handle or a buffer); if the fence fails anyway,
    /// each cache frees its slabs when its thread lets go of it.
    fn drop(&mut self) {
        let caches = self.caches.get_mut();
        steal_all(caches.iter().map(|c| &**c), |_, slab| drop(slab));
    }
}
