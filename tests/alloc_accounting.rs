//! The pool's slabs seen from the allocator: a counting `#[global_allocator]` records every
//! allocation of a slab size (4 KiB, 64 KiB, 1 MiB, and anything of 10 MiB or more) with its
//! pointer and layout, and checks that each is freed exactly once, with the layout it was
//! allocated with (a `realloc` counts as a free and an allocation).
//!
//! One `#[test]` does everything, in its own binary, so no other test allocates those sizes
//! meanwhile; the test itself allocates none of them except through the pool. On top of
//! that, every slab a buffer reports (`as_ptr()`, `capacity()`) must be a live allocation
//! of exactly that size, so the ledger is tied to the pool's buffers, not just to sizes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use axon_buffer::{BufferPool, PoolClass, PooledBuf};
use bytes::Bytes;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Sizes the ledger records: the pooled classes' capacities and every Oversize size (the
/// Huge class, 10 MiB, is included in the latter).
fn is_slab_size(size: usize) -> bool {
    matches!(size, 4096 | 65536 | 1_048_576) || size >= 10 * MIB
}

// ---------------------------------------------------------------------------------------
// The ledger and the allocator
// ---------------------------------------------------------------------------------------

const MAX_RECORDS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Record {
    addr: usize,
    size: usize,
    align: usize,
    frees: u32,
    /// The layout of the first free, to compare with the allocation's.
    freed_size: usize,
    freed_align: usize,
}

impl Record {
    const EMPTY: Record = Record {
        addr: 0,
        size: 0,
        align: 0,
        frees: 0,
        freed_size: 0,
        freed_align: 0,
    };
}

#[derive(Debug)]
struct Ledger {
    records: [Record; MAX_RECORDS],
    len: usize,
    /// Allocations that did not fit in `records` (the test then fails).
    overflowed: usize,
    /// Frees of a slab-sized block that is not live in the ledger: a double free, or a
    /// block allocated before tracking began.
    unknown_frees: usize,
}

impl Ledger {
    const fn new() -> Ledger {
        Ledger {
            records: [Record::EMPTY; MAX_RECORDS],
            len: 0,
            overflowed: 0,
            unknown_frees: 0,
        }
    }

    fn records(&self) -> &[Record] {
        &self.records[..self.len]
    }

    fn live(&self, addr: usize) -> Option<&Record> {
        self.records()
            .iter()
            .find(|r| r.addr == addr && r.frees == 0)
    }

    fn note_alloc(&mut self, addr: usize, size: usize, align: usize) {
        if self.len == MAX_RECORDS {
            self.overflowed += 1;
            return;
        }
        self.records[self.len] = Record {
            addr,
            size,
            align,
            ..Record::EMPTY
        };
        self.len += 1;
    }

    fn note_free(&mut self, addr: usize, size: usize, align: usize) {
        let len = self.len;
        match self.records[..len]
            .iter_mut()
            .find(|r| r.addr == addr && r.frees == 0)
        {
            Some(record) => {
                record.frees = 1;
                record.freed_size = size;
                record.freed_align = align;
            }
            None => self.unknown_frees += 1,
        }
    }
}

static TRACKING: AtomicBool = AtomicBool::new(false);
static LEDGER: Mutex<Ledger> = Mutex::new(Ledger::new());

/// The ledger, even after a panicking test poisoned it: the allocator must never panic.
fn ledger() -> MutexGuard<'static, Ledger> {
    LEDGER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Forwards to `System`, and records slab-sized blocks while tracking. The ledger's lock is
/// held across the call to `System` so that a block freed on one thread and reused on
/// another is recorded in the order it happened. `System` never calls back into this
/// allocator, and the ledger never allocates, so holding the lock cannot deadlock.
struct Counting;

fn tracked(size: usize) -> bool {
    is_slab_size(size) && TRACKING.load(Ordering::Relaxed)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the bookkeeping around it touches only the ledger.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !tracked(layout.size()) {
            // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
            return unsafe { System.alloc(layout) };
        }
        let mut ledger = ledger();
        // SAFETY: as above.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            ledger.note_alloc(ptr.addr(), layout.size(), layout.align());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !tracked(layout.size()) {
            // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
            return unsafe { System.alloc_zeroed(layout) };
        }
        let mut ledger = ledger();
        // SAFETY: as above.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            ledger.note_alloc(ptr.addr(), layout.size(), layout.align());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !tracked(layout.size()) {
            // SAFETY: forwarded unchanged; the caller upholds `dealloc`'s contract.
            unsafe { System.dealloc(ptr, layout) };
            return;
        }
        let mut ledger = ledger();
        ledger.note_free(ptr.addr(), layout.size(), layout.align());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !tracked(layout.size()) && !tracked(new_size) {
            // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let mut ledger = ledger();
        // SAFETY: as above.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // A free of the old block and an allocation of the new one.
            if is_slab_size(layout.size()) {
                ledger.note_free(ptr.addr(), layout.size(), layout.align());
            }
            if is_slab_size(new_size) {
                ledger.note_alloc(new.addr(), new_size, layout.align());
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A copy of the ledger's records, taken without holding the lock while asserting.
fn records() -> Vec<Record> {
    // Allocated before the lock is taken: the copy itself is not slab-sized (40 bytes a
    // record), and even if it were it must not re-enter the allocator under the lock.
    let mut copy = Vec::with_capacity(MAX_RECORDS + 1);
    copy.extend_from_slice(ledger().records());
    copy
}

/// Slab-sized blocks allocated while tracking and not freed: (count, bytes).
fn live_slabs() -> (u64, u64) {
    let ledger = ledger();
    let live = ledger.records().iter().filter(|r| r.frees == 0);
    live.fold((0, 0), |(n, bytes), r| (n + 1, bytes + r.size as u64))
}

/// Asserts that `buf`'s slab is a live block in the ledger of exactly its capacity.
fn assert_slab(buf: &PooledBuf, what: &str) {
    let found = ledger().live(buf.as_ptr().addr()).copied();
    let record = found.unwrap_or_else(|| {
        panic!(
            "{what}: slab at {:p} ({} bytes) is not a live allocation",
            buf.as_ptr(),
            buf.capacity()
        )
    });
    assert_eq!(record.size, buf.capacity(), "{what}: allocated size");
    assert_eq!(record.align, 1, "{what}: allocated align");
}

// ---------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------

static DATA: [u8; 5000] = [0xA5; 5000];

fn acquire(pool: &BufferPool, n: usize, class: PoolClass) -> PooledBuf {
    let buf = pool.acquire(n);
    assert_eq!(buf.class(), class);
    assert_slab(&buf, "acquire");
    buf
}

#[test]
fn every_slab_is_freed_once_with_its_layout() {
    let big = !cfg!(miri); // Large, Huge and Oversize slabs are too slow under Miri
    TRACKING.store(true, Ordering::Relaxed);

    // Small caps, so that returns both pool and discard (free) slabs. No decay thread: a
    // tick of it holds the pool for a moment (it may drop the last `Arc`, so the slabs of
    // step 7 would be freed on that thread after the check), and may free idle slabs
    // between step 6's figures. CI's panic-abort stage hit the first: 3 slabs live after
    // `drop(pool)`.
    let pool = BufferPool::builder()
        .idle_decay_thread(false)
        .max_idle_per_class(2)
        .max_idle_bytes((10 * MIB + MIB + 64 * KIB + 2 * 4 * KIB) as u64)
        .build();
    let tenant = pool.tenant("alpha");

    // 1. Plain acquire and drop in every class: misses, then hits, then discards (list full).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(acquire(&pool, 100, PoolClass::Small));
        held.push(acquire(&pool, 5000, PoolClass::Medium));
        if big {
            held.push(acquire(&pool, 100_000, PoolClass::Large));
            held.push(acquire(&pool, 2 * MIB, PoolClass::Huge));
        }
    }
    for buf in &mut held {
        buf.extend_from_slice(&DATA[..100]);
    }
    held.clear(); // some pooled, the rest freed: over the list or the byte cap
    for _ in 0..2 {
        held.push(acquire(&pool, 1, PoolClass::Small)); // hits
        held.push(tenant.acquire(4097));
    }
    held.clear();

    // 2. Promotion through every class, then Oversize growth (a realloc).
    let mut grown = tenant.acquire(10);
    grown.extend_from_slice(&DATA); // Small -> Medium
    assert_eq!(grown.class(), PoolClass::Medium);
    assert_slab(&grown, "promoted to Medium");
    if big {
        grown.reserve(70_000); // -> Large
        assert_slab(&grown, "promoted to Large");
        grown.reserve(2 * MIB); // -> Huge
        assert_eq!(grown.class(), PoolClass::Huge);
        assert_slab(&grown, "promoted to Huge");
        grown.reserve(11 * MIB); // -> Oversize, doubling: 20 MiB
        assert_eq!(grown.class(), PoolClass::Oversize);
        assert_slab(&grown, "promoted to Oversize");
        let past = grown.capacity() - grown.len() + 1;
        grown.reserve(past); // Oversize growth: realloc to 40 MiB
        assert_eq!(grown.capacity(), 40 * MIB);
        assert_slab(&grown, "Oversize grown");
        assert_eq!(&grown[..DATA.len()], &DATA[..]);
    }

    // 3. Oversize acquired directly, grown by a write past its capacity.
    let mut oversize = None;
    if big {
        let mut buf = acquire(&pool, 12 * MIB + 7, PoolClass::Oversize);
        buf.resize(buf.capacity(), 1); // touches 12 MiB: the one big write of the test
        buf.extend_from_slice(&DATA[..3]); // realloc to 24 MiB + 14
        assert_eq!(buf.capacity(), 2 * (12 * MIB + 7));
        assert_slab(&buf, "Oversize grown by a write");
        oversize = Some(buf);
    }

    // 4. Freeze, clone and slice; the clones are dropped on other threads.
    let mut frozen: Vec<Bytes> = Vec::new();
    let mut sizes = vec![1, 4096, 60_000];
    if big {
        sizes.extend([500_000, 3 * MIB, 11 * MIB]);
    }
    for (i, &n) in sizes.iter().enumerate() {
        let mut buf = if i % 2 == 0 {
            tenant.acquire(n)
        } else {
            pool.acquire(n)
        };
        assert_slab(&buf, "to freeze");
        buf.extend_from_slice(&DATA[..i + 1]);
        let ptr = buf.as_ptr();
        let bytes = buf.freeze();
        assert_eq!(bytes.as_ptr(), ptr, "freeze copies nothing");
        frozen.push(bytes.slice(0..1));
        frozen.push(bytes.clone());
        frozen.push(bytes);
    }
    if let Some(buf) = oversize.take() {
        frozen.push(buf.freeze());
    }
    let threads = 3;
    let pool_ref = &pool;
    std::thread::scope(|scope| {
        let mut shares: Vec<Vec<Bytes>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, bytes) in frozen.drain(..).enumerate() {
            shares[i % threads].push(bytes);
        }
        for share in shares {
            scope.spawn(move || {
                // Each thread also takes and returns slabs of its own.
                let mut own = pool_ref.acquire(3000);
                own.extend_from_slice(&DATA[..10]);
                drop(own.freeze());
                drop(share);
            });
        }
    });
    assert_eq!(tenant.live_bytes(), grown.capacity() as u64);

    // 5. into_vec: the slab leaves the pool; the test frees it, still exactly once.
    let mut out = tenant.acquire(5000);
    out.extend_from_slice(&DATA);
    let ptr = out.as_ptr();
    let vec = out.into_vec();
    assert_eq!(vec.as_ptr(), ptr);
    assert_eq!(vec.capacity(), 64 * KIB);
    drop(vec);
    let vec = grown.into_vec(); // Oversize (or Medium under Miri)
    assert_eq!(&vec[..DATA.len()], &DATA[..]);
    drop(vec);

    // 6. Everything is dropped: what is still allocated is exactly the idle slabs. (Slabs
    //    dropped on the other threads may all have been freed: this thread's cache holds
    //    the idle budget. Two more round trips here leave it some slabs.)
    drop(acquire(&pool, 100, PoolClass::Small));
    drop(acquire(&pool, 5000, PoolClass::Medium));
    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 0);
    assert_eq!(tenant.live_bytes(), 0);
    let idle: u64 = snap.idle_slabs.values().sum();
    assert!(idle > 0, "the workload should leave some slabs idle");
    assert_eq!(
        live_slabs(),
        (idle, snap.idle_bytes),
        "live slabs before trim"
    );
    // Every block allocated was a miss or an Oversize allocation (growth included).
    let allocations = records().len() as u64;
    let misses: u64 = snap.pool_misses.values().sum();
    assert_eq!(
        allocations,
        misses + snap.oversize_allocations_total,
        "slab allocations vs the pool's misses + Oversize allocations"
    );

    assert_eq!(pool.trim(), snap.idle_bytes);
    assert_eq!(live_slabs(), (0, 0), "live slabs after trim");

    // 7. Slabs left idle (in this thread's cache and the shared lists) when the pool itself
    //    goes: its drop frees them.
    let mut classes = vec![(100, PoolClass::Small), (5000, PoolClass::Medium)];
    if big {
        classes.push((100_000, PoolClass::Large));
    }
    let again: Vec<PooledBuf> = classes
        .iter()
        .map(|&(n, class)| acquire(&pool, n, class))
        .collect();
    drop(again);
    assert!(live_slabs().0 > 0, "slabs idle again");
    drop(tenant);
    drop(pool);
    TRACKING.store(false, Ordering::Relaxed);
    assert_eq!(live_slabs(), (0, 0), "live slabs after the pool dropped");

    let (overflowed, unknown_frees) = {
        let ledger = ledger();
        (ledger.overflowed, ledger.unknown_frees)
    };
    assert_eq!(overflowed, 0, "ledger overflowed");
    assert_eq!(unknown_frees, 0, "frees of blocks not live: double frees?");
    for r in &records() {
        assert_eq!(r.frees, 1, "{r:?} freed {} times", r.frees);
        assert_eq!(
            (r.freed_size, r.freed_align),
            (r.size, r.align),
            "{r:?} freed with another layout"
        );
    }
}
