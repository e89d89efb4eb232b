//! Retention: idle memory stays flat and within its caps under a workload that alternates
//! small and huge requests, and `trim()` hands every idle slab back to the allocator.
//!
//! The binary has a pass-through `#[global_allocator]` that counts, per thread, slab-sized
//! allocations and frees (align 1, exactly a pooled class's capacity). Per thread, because
//! the test harness runs tests in parallel: what one test's thread allocates and frees is its
//! own business. `trim()` frees the slabs on the thread that calls it, so its frees are
//! counted exactly.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;

use axon_buffer::{BufferPool, BufferPoolSnapshot, PoolClass};

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// A pass-through allocator counting slab-sized blocks per thread.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SlabCounts {
    /// Slab-sized allocations, per pooled class.
    allocated: [u64; 4],
    /// Slab-sized frees, per pooled class.
    freed: [u64; 4],
}

thread_local! {
    static COUNTS: Cell<SlabCounts> = const {
        Cell::new(SlabCounts { allocated: [0; 4], freed: [0; 4] })
    };
}

/// The pooled class whose slab has exactly this layout, if any.
fn slab_class(layout: Layout) -> Option<usize> {
    if layout.align() != 1 {
        return None;
    }
    PoolClass::non_oversize()
        .iter()
        .position(|class| class.capacity() == layout.size())
}

fn record(layout: Layout, freed: bool) {
    if let Some(i) = slab_class(layout) {
        // `try_with`: the allocator may run while this thread's locals are torn down.
        let _ = COUNTS.try_with(|counts| {
            let mut c = counts.get();
            if freed {
                c.freed[i] += 1;
            } else {
                c.allocated[i] += 1;
            }
            counts.set(c);
        });
    }
}

fn counts() -> SlabCounts {
    COUNTS.with(Cell::get)
}

/// Slab-sized frees on this thread since `before`, all classes together.
fn freed_since(before: SlabCounts) -> u64 {
    let now = counts().freed;
    now.iter().zip(before.freed).map(|(a, b)| a - b).sum()
}

struct SlabCounting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it
// upholds `GlobalAlloc`'s contract exactly as `System` does; the counting touches only a
// const-initialised thread-local `Cell` of plain integers, which never allocates.
unsafe impl GlobalAlloc for SlabCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            record(layout, false);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            record(layout, false);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(layout, true);
        // SAFETY: forwarded unchanged; `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            record(layout, true);
            // SAFETY: `new_size` with the same (valid) alignment is what `realloc` allocated.
            record(
                unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) },
                false,
            );
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: SlabCounting = SlabCounting;

// ---------------------------------------------------------------------------------------
// Helpers

fn rounds() -> usize {
    if cfg!(miri) {
        40
    } else {
        10_000
    }
}

/// After this many rounds the pool has every slab the workload will ever need.
const WARM: usize = 10;

/// The figures that must not drift once warm.
#[derive(Debug, PartialEq, Eq)]
struct Retained {
    idle_bytes: u64,
    idle_slabs: Vec<u64>,
}

fn retained(snap: &BufferPoolSnapshot) -> Retained {
    Retained {
        idle_bytes: snap.idle_bytes,
        idle_slabs: PoolClass::non_oversize()
            .iter()
            .map(|class| snap.idle_slabs[class])
            .collect(),
    }
}

/// Alternates 4 KiB and 10 MiB requests, keeping the last `window` buffers alive (as a
/// server with a few requests in flight would); checks the caps after every request and
/// returns the figures after `WARM` rounds and at the end (both with the window full).
fn alternate(
    pool: &BufferPool,
    max_idle_bytes: u64,
    max_idle_per_class: u64,
    window: usize,
) -> (Retained, Retained) {
    let tenant = pool.tenant("alternating");
    let mut held = VecDeque::new();
    let mut warm = None;
    for i in 0..rounds() {
        let size = if i % 2 == 0 { 4096 } else { 10 * MIB };
        let mut buf = tenant.acquire(size);
        buf.extend_from_slice(b"frame");
        held.push_back(buf);
        if held.len() > window {
            drop(held.pop_front());
        }
        let snap = pool.snapshot();
        assert!(
            snap.idle_bytes <= max_idle_bytes,
            "round {i}: {} idle bytes, cap {max_idle_bytes}",
            snap.idle_bytes
        );
        for class in PoolClass::non_oversize() {
            assert!(
                snap.idle_slabs[&class] <= max_idle_per_class,
                "round {i} {class}"
            );
        }
        if i + 1 == WARM {
            warm = Some(retained(&snap));
        }
    }
    let end = retained(&pool.snapshot());
    drop(held);
    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 0);
    assert!(snap.idle_bytes <= max_idle_bytes);
    (warm.unwrap(), end)
}

// ---------------------------------------------------------------------------------------
// Flat idle memory

#[test]
fn alternating_small_and_huge_requests_keep_idle_memory_flat() {
    let pool = BufferPool::default();
    let before = counts();
    let (warm, end) = alternate(&pool, 256 * MIB as u64, 64, 3);
    assert_eq!(warm, end);
    let snap = pool.snapshot();
    // Window of 3 alternating: at most 2 Small and 2 Huge in use at once, so exactly that many
    // slabs were ever allocated, then reused for 10 000 requests.
    assert_eq!(snap.pool_misses[&PoolClass::Small], 2);
    assert_eq!(snap.pool_misses[&PoolClass::Huge], 2);
    assert_eq!(snap.pool_hits[&PoolClass::Small] + 2, rounds() as u64 / 2);
    assert_eq!(snap.discarded_total.values().sum::<u64>(), 0);
    assert_eq!(snap.idle_bytes, 2 * 4096 + 2 * 10 * MIB as u64);
    let allocated = counts().allocated;
    assert_eq!(
        allocated[0] - before.allocated[0],
        2,
        "Small slabs allocated"
    );
    assert_eq!(
        allocated[3] - before.allocated[3],
        2,
        "Huge slabs allocated"
    );
}

#[test]
fn a_byte_cap_below_one_huge_slab_never_retains_one() {
    let cap = 5 * MIB as u64;
    let pool = BufferPool::builder().max_idle_bytes(cap).build();
    let (warm, end) = alternate(&pool, cap, 64, 3);
    assert_eq!(warm, end);
    let snap = pool.snapshot();
    assert_eq!(snap.idle_slabs[&PoolClass::Huge], 0);
    // Every Huge request allocated, every Huge drop freed.
    assert_eq!(snap.pool_misses[&PoolClass::Huge], rounds() as u64 / 2);
    assert_eq!(snap.discarded_total[&PoolClass::Huge], rounds() as u64 / 2);
    assert_eq!(snap.idle_bytes, 2 * 4096);
}

#[test]
fn a_tight_byte_cap_holds_at_every_step_and_stays_flat() {
    // Room for one Huge slab and a few Small ones, never two Huge; a window of 5 keeps up to
    // three Huge buffers in flight, so some Huge drops find the budget taken.
    let cap = (10 * MIB + 4 * 4096) as u64;
    let pool = BufferPool::builder().max_idle_bytes(cap).build();
    let (warm, end) = alternate(&pool, cap, 64, 5);
    assert_eq!(warm, end);
    let snap = pool.snapshot();
    assert!(snap.idle_bytes <= cap);
    assert!(snap.discarded_total[&PoolClass::Huge] > 0);
    assert_eq!(snap.idle_slabs[&PoolClass::Huge], 1);
}

#[test]
fn a_tight_slab_cap_holds_at_every_step_and_stays_flat() {
    let pool = BufferPool::builder().max_idle_per_class(1).build();
    let (warm, end) = alternate(&pool, 256 * MIB as u64, 1, 5);
    assert_eq!(warm, end);
    let snap = pool.snapshot();
    assert!(snap.discarded_total[&PoolClass::Small] > 0);
    assert!(snap.discarded_total[&PoolClass::Huge] > 0);
}

#[test]
fn growing_each_small_buffer_to_huge_keeps_idle_memory_flat() {
    // Each request starts at 4 KiB and grows to 10 MiB through every class (a promotion per
    // class), leaving one slab of each class behind: idle memory must not creep.
    let pool = BufferPool::default();
    let tenant = pool.tenant("growing");
    let mut warm = None;
    for i in 0..rounds() / 4 {
        let mut buf = tenant.acquire(4096);
        buf.extend_from_slice(b"header");
        for target in [5000, 70_000, 2 * MIB, 10 * MIB] {
            buf.try_reserve(target - buf.len()).unwrap();
        }
        assert_eq!(buf.class(), PoolClass::Huge);
        drop(buf);
        let snap = pool.snapshot();
        if i + 1 == WARM {
            warm = Some(retained(&snap));
        }
        assert!(snap.idle_bytes <= 256 * MIB as u64);
    }
    let snap = pool.snapshot();
    assert_eq!(warm.unwrap(), retained(&snap));
    assert_eq!(
        snap.idle_bytes,
        PoolClass::non_oversize()
            .iter()
            .map(|c| c.capacity() as u64)
            .sum::<u64>()
    );
    for class in PoolClass::non_oversize() {
        assert_eq!(snap.pool_misses[&class], 1, "{class}");
    }
}

// ---------------------------------------------------------------------------------------
// trim

/// Leaves idle: 3 Small, 2 Medium, 1 Large, 2 Huge (and frees one Oversize).
fn fill_idle(pool: &BufferPool) {
    let sizes = [1, 1, 1, 5000, 5000, 100_000, 2 * MIB, 2 * MIB, 11 * MIB];
    let bufs: Vec<_> = sizes.iter().map(|&n| pool.acquire(n)).collect();
    drop(bufs);
}

#[test]
fn trim_returns_exactly_the_idle_bytes_and_frees_every_idle_slab() {
    let pool = BufferPool::default();
    fill_idle(&pool);
    let before = pool.snapshot();
    let expected = 3 * 4096 + 2 * 64 * 1024 + MIB as u64 + 2 * 10 * MIB as u64;
    assert_eq!(before.idle_bytes, expected);

    let counted = counts();
    let freed = pool.trim();
    let after = counts();
    assert_eq!(freed, expected);
    // Every idle slab went back to the allocator, with the layout it was allocated with.
    for (i, class) in PoolClass::non_oversize().into_iter().enumerate() {
        assert_eq!(
            after.freed[i] - counted.freed[i],
            before.idle_slabs[&class],
            "{class} slabs freed by trim"
        );
    }
    assert_eq!(after.allocated, counted.allocated, "trim allocated a slab");

    let snap = pool.snapshot();
    assert_eq!(snap.idle_bytes, 0);
    assert!(snap.idle_slabs.values().all(|&n| n == 0));
    assert_eq!(pool.trim(), 0, "a second trim has nothing to free");

    // The next request is a miss: the pool really let go.
    drop(pool.acquire(1));
    assert_eq!(pool.snapshot().pool_misses[&PoolClass::Small], 4);
}

#[test]
fn trim_leaves_outstanding_buffers_alone() {
    let pool = BufferPool::default();
    fill_idle(&pool);
    let tenant = pool.tenant("busy");
    let mut busy = tenant.acquire(5000); // takes one of the idle Medium slabs
    busy.extend_from_slice(b"in use");
    let idle = pool.snapshot().idle_bytes;
    let counted = counts();
    assert_eq!(pool.trim(), idle);
    assert_eq!(
        counts().freed[1] - counted.freed[1],
        1,
        "one idle Medium slab"
    );
    assert_eq!(&busy[..], b"in use");
    assert_eq!(tenant.live_bytes(), 64 * 1024);
    drop(busy);
    let snap = pool.snapshot();
    assert_eq!(
        snap.idle_slabs[&PoolClass::Medium],
        1,
        "it returns after the trim"
    );
    assert_eq!(snap.idle_bytes, 64 * 1024);
}

#[test]
fn trim_frees_slabs_returned_by_other_threads() {
    let pool = BufferPool::default();
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let bufs: Vec<_> = [1, 5000, 100_000]
                        .iter()
                        .map(|&n| pool.acquire(n))
                        .collect();
                    drop(bufs);
                })
            })
            .collect();
        // Join explicitly: a scope's end does not wait for the threads' thread-local
        // destructors, which hand their caches back to the pool; `join` does.
        for thread in threads {
            thread.join().unwrap();
        }
    });
    let before = pool.snapshot();
    let idle: u64 = before.idle_slabs.values().sum();
    assert!(idle >= 3, "each class got at least one slab back");
    let counted = counts();
    assert_eq!(pool.trim(), before.idle_bytes);
    let freed = freed_since(counted);
    assert_eq!(
        freed, idle,
        "trim on this thread freed the other threads' slabs"
    );
    assert_eq!(pool.snapshot().idle_bytes, 0);
}

#[test]
fn oversize_slabs_are_freed_on_drop_never_retained() {
    let pool = BufferPool::default();
    let buf = pool.acquire(10 * MIB + 1);
    drop(buf);
    let snap = pool.snapshot();
    assert_eq!(snap.idle_bytes, 0);
    assert_eq!(snap.discarded_total[&PoolClass::Oversize], 1);
    assert_eq!(pool.trim(), 0);
}

/// `trim` on one thread frees the slabs cached by another thread that is still alive (the
/// asymmetric-fence steal, `membarrier(2)` on Linux), and that thread's cache keeps working
/// afterwards.
#[test]
fn trim_frees_slabs_cached_by_a_live_thread() {
    use std::sync::Barrier;
    let pool = BufferPool::default();
    let cached = Barrier::new(2);
    let trimmed = Barrier::new(2);
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            // One slab of each class comes back into this thread's cache.
            drop([1, 5000, 100_000, 2 << 20].map(|n| pool.acquire(n)));
            cached.wait();
            trimmed.wait();
            // The stolen-from cache serves again: a miss (the slab was freed), then a hit.
            drop(pool.acquire(1));
            drop(pool.acquire(1));
        });
        cached.wait();
        let before = pool.snapshot();
        let idle: u64 = before.idle_slabs.values().sum();
        assert_eq!(idle, 4, "the live thread caches one slab per class");
        let counted = counts();
        assert_eq!(pool.trim(), 4096 + 65536 + (1 << 20) + (10 << 20));
        let freed = freed_since(counted);
        assert_eq!(freed, 4, "trim freed the live thread's cached slabs");
        assert_eq!(pool.snapshot().idle_bytes, 0);
        trimmed.wait();
        worker.join().unwrap();
    });
    let after = pool.snapshot();
    assert_eq!(after.pool_misses[&PoolClass::Small], 2);
    assert_eq!(after.pool_hits[&PoolClass::Small], 1);
    assert_eq!(after.live_bytes, 0);
}
