//! Per-thread caches of empty slabs, in front of the shared free lists.
//!
//! # Why
//!
//! On this crate's 2-core reference machine a locked atomic operation (a compare-and-swap,
//! a swap, a mutex lock) costs about 7 ns, and glibc's `malloc` + `free` of 4 KiB 18 to
//! 28 ns. The shared-list path of a Small cycle takes eight locked operations and measured
//! 89 ns; a cache of `AtomicPtr` slots popped with one `swap` measured 31 ns. The cache
//! here takes none: its thread works on it with plain loads and stores (about 12 ns a cycle).
//!
//! # Protocol
//!
//! A cache holds, per class, a stack of pointers to empty slabs of exactly the class's
//! capacity; the stack owns those allocations. Two threads may touch it: its owner (the
//! thread it belongs to), thousands of times a second, and a stealer (`trim` or the pool's
//! drop, under the pool's registry lock, so one at a time), rarely. They exclude each other
//! with two flags and a pair of asymmetric fences ([`super::fence`]), as in Dekker's
//! algorithm:
//!
//! - The owner [`enter`](LocalCache::enter)s: it stores `busy = true`, makes a light fence,
//!   then loads `stealing` (`Acquire`). If it is set, the owner clears `busy` and takes the
//!   shared path instead (the section is refused, never waited for). Otherwise it works on
//!   the stacks and leaves with `busy = false` (`Release`).
//! - The stealer stores `stealing = true`, makes a heavy fence, then waits until it loads
//!   `busy == false` (`Acquire`); it then empties the stacks and clears `stealing`
//!   (`Release`).
//!
//! The fences order each side's store before its load, so at least one side sees the
//! other's flag: either the owner sees `stealing` and backs off, or the stealer sees `busy`
//! and waits for the `Release` that ends the section. Every access to a stack therefore
//! happens inside a section or a steal, never both at once, and the
//! `Release` / `Acquire` pairs order one side's writes before the other's reads. On Linux
//! the owner's light fence is a compiler fence, so the owner's whole section costs no
//! locked instruction. The loom models at the end of this file check the protocol with
//! `SeqCst` fences on both sides.
//!
//! Counters in [`LocalCache`] are written only by the owning thread (a load and a store, no
//! locked instruction) and read by `snapshot`; a thread that exits folds them into the pool
//! under the registry lock, so a snapshot never counts them twice or loses them.
//!
//! # Idle budget
//!
//! A cache holds *units* of the pool's idle budget (one slot of its class's
//! `max_idle_per_class` and the class's capacity of `max_idle_bytes`), one per slab it
//! holds plus at most one spare: popping a slab keeps its unit, so the next push needs no
//! shared atomic. Units are reserved from the same counters the shared lists use, so idle
//! memory across lists and caches never passes either cap; they go back when the thread
//! exits.

use std::mem::ManuallyDrop;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use super::fence;
use crate::PoolClass;

/// The classes a thread caches (all four pooled ones, in index order), and how many slabs
/// of each: at most 32 KiB, 256 KiB, 2 MiB and 10 MiB per thread.
pub(crate) const CACHED: [(PoolClass, usize); 4] = [
    (PoolClass::Small, 8),
    (PoolClass::Medium, 4),
    (PoolClass::Large, 2),
    (PoolClass::Huge, 1),
];
const MAX_SLOTS: usize = 8;

/// The cache index of `class` (its class index), if it is cached.
#[inline]
pub(crate) fn cached_index(class: PoolClass) -> Option<usize> {
    match class {
        PoolClass::Oversize => None,
        class => Some(class.index()),
    }
}

#[cfg(loom)]
use loom::cell::UnsafeCell;

/// `std`'s `UnsafeCell` with loom's access API, so loom can check every access.
#[cfg(not(loom))]
struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    #[inline(always)]
    fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Empty slabs of one capacity: `slots[..len]` own their allocations.
struct Stack {
    slots: UnsafeCell<[*mut u8; MAX_SLOTS]>,
    /// Written only inside a section or a steal; read by `snapshot` at any time.
    len: AtomicUsize,
    limit: usize,
    capacity: usize,
}

impl Stack {
    fn new(capacity: usize, limit: usize) -> Stack {
        assert!(limit <= MAX_SLOTS, "at most {MAX_SLOTS} slots");
        Stack {
            slots: UnsafeCell::new([std::ptr::null_mut(); MAX_SLOTS]),
            len: AtomicUsize::new(0),
            limit,
            capacity,
        }
    }

    /// The caller has the stack to itself (a section, a steal, or `&mut`).
    #[inline]
    fn pop_exclusive(&self) -> Option<Vec<u8>> {
        let len = self.len.load(Relaxed);
        if len == 0 {
            return None;
        }
        let ptr = self.slots.with_mut(|slots| {
            // SAFETY: the caller has the stack to itself (the protocol in the module docs),
            // so nothing else reads or writes the array meanwhile; `len - 1 < MAX_SLOTS`.
            unsafe { (*slots)[len - 1] }
        });
        self.len.store(len - 1, Relaxed);
        // SAFETY: `slots[..len]` hold pointers `push_exclusive` took from empty slabs of
        // exactly `self.capacity`; shortening `len` first made this caller their only owner.
        Some(unsafe { Vec::from_raw_parts(ptr, 0, self.capacity) })
    }

    /// The caller has the stack to itself. Refuses (hands back) a slab when the first
    /// `upto` slots are full, or one that is not empty and of exactly the class's capacity.
    #[inline]
    fn push_exclusive(&self, upto: usize, slab: Vec<u8>) -> Result<(), Vec<u8>> {
        let len = self.len.load(Relaxed);
        if len >= upto.min(self.limit) || slab.capacity() != self.capacity || !slab.is_empty() {
            return Err(slab);
        }
        let ptr = ManuallyDrop::new(slab).as_mut_ptr();
        self.slots.with_mut(|slots| {
            // SAFETY: the caller has the stack to itself; `len < limit <= MAX_SLOTS`.
            unsafe { (*slots)[len] = ptr };
        });
        self.len.store(len + 1, Relaxed);
        Ok(())
    }
}

/// A counter written by one thread only: a load and a store, no locked instruction.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(by), Relaxed);
}

/// One thread's cache for one pool, shared with the pool's registry so `trim` and
/// `snapshot` reach it.
pub(crate) struct LocalCache {
    /// The owner is inside a section.
    busy: AtomicBool,
    /// A stealer wants the stacks, or has them.
    stealing: AtomicBool,
    stacks: [Stack; 4],
    /// Idle-budget units held, per class (owner writes): never fewer than the slabs held,
    /// and at most one more after a pop.
    pub(crate) held: [AtomicUsize; 4],
    /// Slabs popped from the stacks for a buffer (owner writes).
    pub(crate) hits: [AtomicU64; 4],
    /// Slabs a buffer returned into the stacks (owner writes).
    pub(crate) returned: [AtomicU64; 4],
    /// Bytes charged minus bytes debited on this thread, wrapping (owner writes).
    pub(crate) live: AtomicU64,
}

// SAFETY: the raw pointers are allocations the stacks own (like the `Vec`s they came
// from, which are `Send + Sync`); which thread may touch them, and when, is the protocol in
// the module docs, and every other field is an atomic.
unsafe impl Send for LocalCache {}
// SAFETY: as for `Send`: shared access to the stacks happens only inside a section (the
// owner) or a steal (one stealer), which exclude each other; the rest is atomics.
unsafe impl Sync for LocalCache {}

impl std::fmt::Debug for LocalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCache")
            .field("idle", &std::array::from_fn::<_, 4, _>(|k| self.idle(k)))
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl LocalCache {
    pub(crate) fn new() -> LocalCache {
        LocalCache {
            busy: AtomicBool::new(false),
            stealing: AtomicBool::new(false),
            stacks: CACHED.map(|(class, limit)| Stack::new(class.capacity(), limit)),
            held: Default::default(),
            hits: Default::default(),
            returned: Default::default(),
            live: AtomicU64::new(0),
        }
    }

    /// Owner only: starts a section, or `None` while a stealer is at work (the caller then
    /// takes the shared path; nobody waits).
    #[inline]
    pub(crate) fn enter(&self) -> Option<Section<'_>> {
        self.busy.store(true, Relaxed);
        fence::light();
        if self.stealing.load(Acquire) {
            self.busy.store(false, Release);
            return None;
        }
        Some(Section { cache: self })
    }

    /// Slabs of class index `k` waiting now (a figure: exact when the owner is idle).
    pub(crate) fn idle(&self, k: usize) -> usize {
        self.stacks[k].len.load(Relaxed)
    }

    /// How many slabs of class index `k` this cache may hold.
    pub(crate) fn limit(k: usize) -> usize {
        CACHED[k].1
    }
}

impl Drop for LocalCache {
    fn drop(&mut self) {
        // `&mut self`: nobody else can reach the stacks.
        for stack in &self.stacks {
            while stack.pop_exclusive().is_some() {}
        }
    }
}

/// The owner's exclusive access to its cache's stacks, from [`LocalCache::enter`] until
/// dropped.
pub(crate) struct Section<'a> {
    cache: &'a LocalCache,
}

impl Section<'_> {
    #[inline]
    pub(crate) fn cache(&self) -> &LocalCache {
        self.cache
    }

    /// Slabs of class index `k` in the cache.
    #[inline]
    pub(crate) fn len(&self, k: usize) -> usize {
        self.cache.stacks[k].len.load(Relaxed)
    }

    /// The most recently pushed slab of class index `k`, if any.
    #[inline]
    pub(crate) fn pop(&self, k: usize) -> Option<Vec<u8>> {
        self.cache.stacks[k].pop_exclusive()
    }

    /// Pushes an empty slab of exactly its class's capacity while fewer than `upto` (and
    /// the class's limit) are held, or hands it back.
    #[inline]
    pub(crate) fn push(&self, k: usize, upto: usize, slab: Vec<u8>) -> Result<(), Vec<u8>> {
        self.cache.stacks[k].push_exclusive(upto, slab)
    }
}

impl Drop for Section<'_> {
    #[inline]
    fn drop(&mut self) {
        self.cache.busy.store(false, Release);
    }
}

/// Takes every slab out of every cache in `caches`, handing each to `take` with its class
/// index. The caller keeps other stealers out (it holds the pool's registry lock). Returns
/// `false`, taking nothing, when the heavy fence could not be made.
pub(crate) fn steal_all<'a>(
    caches: impl Iterator<Item = &'a LocalCache> + Clone,
    mut take: impl FnMut(usize, Vec<u8>),
) -> bool {
    if caches.clone().next().is_none() {
        return true; // nothing to steal: no fence needed
    }
    for cache in caches.clone() {
        cache.stealing.store(true, Relaxed);
    }
    let fenced = fence::heavy();
    if fenced {
        for cache in caches.clone() {
            let mut spins = 0u32;
            while cache.busy.load(Acquire) {
                // A section is a few dozen instructions, unless its thread was preempted.
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    yield_now();
                }
            }
            for (k, stack) in cache.stacks.iter().enumerate() {
                while let Some(slab) = stack.pop_exclusive() {
                    take(k, slab);
                }
            }
        }
    }
    for cache in caches {
        cache.stealing.store(false, Release);
    }
    fenced
}

#[cfg(not(loom))]
fn yield_now() {
    std::thread::yield_now();
}

#[cfg(loom)]
fn yield_now() {
    loom::thread::yield_now();
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn push_pop_steal_round_trip() {
        let cache = LocalCache::new();
        let a = Vec::with_capacity(4096);
        let a_ptr = a.as_ptr();
        {
            let section = cache.enter().unwrap();
            assert!(section.pop(0).is_none());
            section.push(0, 2, a).unwrap();
            let refused = section.push(0, 1, Vec::with_capacity(4096)).unwrap_err();
            section.push(0, 2, refused).unwrap();
            let third = section.push(0, 2, Vec::with_capacity(4096)).unwrap_err();
            assert_eq!(third.capacity(), 4096);
            let wrong = section.push(0, 2, Vec::with_capacity(8192));
            assert_eq!(wrong.unwrap_err().capacity(), 8192);
            assert_eq!(section.len(0), 2);
            let b = section.pop(0).unwrap();
            assert_eq!((b.len(), b.capacity()), (0, 4096));
            section.push(0, 2, b).unwrap();
        }
        assert_eq!(cache.idle(0), 2);
        let mut stolen = Vec::new();
        assert!(steal_all(std::iter::once(&cache), |k, slab| stolen.push((k, slab))));
        assert_eq!(stolen.len(), 2);
        assert!(stolen.iter().any(|(k, s)| *k == 0 && s.as_ptr() == a_ptr));
        assert_eq!(cache.idle(0), 0);
        let section = cache.enter().unwrap();
        section.push(0, 8, stolen.pop().unwrap().1).unwrap();
        drop(section);
        drop(cache); // frees the slab left in it
    }

    #[test]
    fn a_section_is_refused_while_stealing() {
        let cache = LocalCache::new();
        cache.stealing.store(true, Relaxed);
        assert!(cache.enter().is_none());
        assert!(!cache.busy.load(Relaxed));
        cache.stealing.store(false, Relaxed);
        assert!(cache.enter().is_some());
        assert!(!cache.busy.load(Relaxed), "the section's drop clears busy");
    }

    #[test]
    fn owner_and_stealer_never_share_a_slab() {
        let cache = LocalCache::new();
        let rounds = if cfg!(miri) { 50 } else { 20_000 };
        let stolen = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..rounds {
                    steal_all(std::iter::once(&cache), |_, _| {
                        stolen.fetch_add(1, Relaxed);
                    });
                }
            });
            for _ in 0..rounds {
                if let Some(section) = cache.enter() {
                    let slab = section.pop(1).unwrap_or_else(|| Vec::with_capacity(65536));
                    let _ = section.push(1, 4, slab);
                }
            }
        });
        assert!(cache.idle(1) <= 1);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// The owner pops and pushes in a section while another thread steals: every slab is
    /// owned by exactly one side at the end (never both: a double free; never neither: a
    /// leak), and loom's cells report any access the protocol lets overlap.
    #[test]
    fn owner_section_against_steal() {
        loom::model(|| {
            let cache = Arc::new(LocalCache::new());
            cache
                .enter()
                .unwrap()
                .push(0, 2, Vec::with_capacity(4096))
                .unwrap_or_else(|_| unreachable!("wrong capacity"));
            let stealer = {
                let cache = Arc::clone(&cache);
                loom::thread::spawn(move || {
                    let mut n = 0;
                    assert!(steal_all(std::iter::once(&*cache), |_, _| n += 1));
                    n
                })
            };
            let mut popped = 0;
            if let Some(section) = cache.enter() {
                if let Some(slab) = section.pop(0) {
                    popped = 1;
                    section.push(0, 2, slab).unwrap();
                }
            }
            let stolen = stealer.join().unwrap();
            let left = cache.idle(0);
            assert_eq!(stolen + left, 1, "popped {popped}");
        });
    }

    #[test]
    fn owner_push_against_steal() {
        loom::model(|| {
            let cache = Arc::new(LocalCache::new());
            let stealer = {
                let cache = Arc::clone(&cache);
                loom::thread::spawn(move || {
                    let mut n = 0;
                    steal_all(std::iter::once(&*cache), |_, _| n += 1);
                    n
                })
            };
            let pushed = match cache.enter() {
                Some(section) => section.push(0, 1, Vec::with_capacity(4096)).is_ok(),
                None => false,
            };
            let stolen = stealer.join().unwrap();
            assert_eq!(stolen + cache.idle(0), usize::from(pushed));
        });
    }
}
