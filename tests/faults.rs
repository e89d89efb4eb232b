//! Faults: panics while buffers, reservations and `Bytes` clones are held; drops from
//! thread-local destructors and after the last pool handle is gone; and eight threads of
//! random operations with cross-thread drops. After each, every figure is exact.

use std::cell::RefCell;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

use axon_buffer::{BufferPool, PoolClass, PoolError, PooledBuf, Reservation};
use bytes::{BufMut, Bytes};

mod common;
use common::assert_nothing_live;

const MIB: usize = 1024 * 1024;

/// Holds one of everything a handler might hold: buffers of several classes (one promoted
/// through io::Write), a reservation, a frozen buffer with clones and slices. Returns the
/// bytes it charged to `tenant`.
fn hold_everything(pool: &BufferPool, tenant: &str) -> (Vec<PooledBuf>, Reservation, Vec<Bytes>) {
    let tenant = pool.tenant(tenant);
    let mut promoted = tenant.acquire(10);
    promoted.write_all(&[1; 5000]).unwrap(); // Small -> Medium
    let mut frozen = tenant.acquire(100_000);
    frozen.put_bytes(2, 100);
    let frozen = frozen.freeze();
    let bytes = vec![frozen.clone(), frozen.slice(10..20), frozen];
    let bufs = vec![
        promoted,
        tenant.acquire(0),
        tenant.acquire(2 * MIB),
        pool.acquire(64 * 1024), // no tenant
        tenant.acquire(10 * MIB + 1),
    ];
    (bufs, tenant.reserve(12_345), bytes)
}

/// What `hold_everything` charges to its tenant, and to the pool.
const HELD_TENANT: u64 = (64 * 1024 + MIB + 4096 + 10 * MIB + 10 * MIB + 1 + 12_345) as u64;
const HELD_POOL: u64 = HELD_TENANT + 64 * 1024;

#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn a_panic_while_holding_everything_leaves_nothing_live() {
    let pool = BufferPool::default();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let held = hold_everything(&pool, "victim");
        let snap = pool.snapshot();
        assert_eq!(snap.tenant_live_bytes["victim"], HELD_TENANT);
        assert_eq!(snap.live_bytes, HELD_POOL);
        assert_eq!(snap.reserved_bytes, 12_345);
        assert_eq!(snap.tenant_outstanding_buffers["victim"], 5);
        let _keep = held;
        panic!("handler failed");
    }));
    assert!(result.is_err());
    let snap = pool.snapshot();
    assert_nothing_live(&snap);
    // Every pooled slab came back (the Small one the promotion left was reused by
    // acquire(0)); the Oversize one was freed.
    assert_eq!(snap.idle_slabs[&PoolClass::Small], 1);
    assert_eq!(snap.idle_slabs[&PoolClass::Medium], 2);
    assert_eq!(snap.idle_slabs[&PoolClass::Large], 1);
    assert_eq!(snap.idle_slabs[&PoolClass::Huge], 1);
    assert_eq!(snap.discarded_total[&PoolClass::Oversize], 1);
}

#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn a_panic_in_another_thread_while_holding_everything_leaves_nothing_live() {
    let pool = BufferPool::default();
    let shared = pool.tenant("shared").acquire(10).freeze();
    let worker = {
        let pool = pool.clone();
        let shared = shared.clone();
        thread::spawn(move || {
            let _held = hold_everything(&pool, "victim");
            let _shared = shared;
            panic!("worker failed");
        })
    };
    assert!(worker.join().is_err());
    let snap = pool.snapshot();
    assert_eq!(
        snap.live_bytes, 4096,
        "only the main thread's clone is left"
    );
    assert_eq!(snap.tenant_live_bytes["victim"], 0);
    drop(shared);
    assert_nothing_live(&pool.snapshot());
}

#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn a_panic_in_the_middle_of_a_write_leaves_a_consistent_buffer() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("t");
    let mut buf = tenant.acquire(1);
    // The source panics after the buffer promoted (twice natively), byte by byte.
    let (pushed, class) = if cfg!(miri) {
        (5_000, PoolClass::Medium)
    } else {
        (70_000, PoolClass::Large)
    };
    let mut n = 0usize;
    let result = catch_unwind(AssertUnwindSafe(|| {
        buf.extend(std::iter::from_fn(|| {
            n += 1;
            assert!(n <= pushed, "source failed");
            Some(3u8)
        }));
    }));
    assert!(result.is_err());
    assert_eq!(buf.len(), pushed);
    assert_eq!(buf.class(), class);
    assert_eq!(tenant.live_bytes(), class.capacity() as u64);
    let snap = pool.snapshot();
    assert_eq!(snap.promotions_total, if cfg!(miri) { 1 } else { 2 });
    assert_eq!(snap.idle_slabs[&PoolClass::Small], 1);
    assert_eq!(snap.idle_slabs[&PoolClass::Medium], u64::from(!cfg!(miri)));

    // A Display that panics halfway through write!.
    struct Half;
    impl std::fmt::Display for Half {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("half")?;
            panic!("display failed");
        }
    }
    buf.clear();
    let result = catch_unwind(AssertUnwindSafe(|| write!(buf, "{}", Half)));
    assert!(result.is_err());
    assert_eq!(&buf[..], b"half");
    drop(buf);
    assert_nothing_live(&pool.snapshot());
}

#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn a_drop_that_panics_still_drops_the_buffers_it_owns() {
    struct Handler {
        _buf: PooledBuf,
        _bytes: Bytes,
        _reservation: Reservation,
    }
    impl Drop for Handler {
        fn drop(&mut self) {
            panic!("handler drop failed");
        }
    }
    let pool = BufferPool::default();
    let tenant = pool.tenant("t");
    let handler = Handler {
        _buf: tenant.acquire(1),
        _bytes: tenant.acquire(5000).freeze(),
        _reservation: tenant.reserve(7),
    };
    assert_eq!(tenant.live_bytes(), 4096 + 64 * 1024 + 7);
    assert!(catch_unwind(AssertUnwindSafe(|| drop(handler))).is_err());
    assert_nothing_live(&pool.snapshot());
}

// ---------------------------------------------------------------------------------------
// Drops from thread-local destructors

thread_local! {
    static HELD_BUFS: RefCell<Vec<PooledBuf>> = const { RefCell::new(Vec::new()) };
    static HELD_BYTES: RefCell<Vec<Bytes>> = const { RefCell::new(Vec::new()) };
    static HELD_RESERVATION: RefCell<Option<Reservation>> = const { RefCell::new(None) };
}

#[test]
fn drops_inside_thread_local_destructors_return_everything() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("tls");
    let main_clone = {
        let mut buf = tenant.acquire(100);
        buf.extend_from_slice(b"shared");
        buf.freeze()
    };
    let worker = {
        let tenant = tenant.clone();
        let shared = main_clone.clone();
        thread::spawn(move || {
            let mut promoted = tenant.acquire(1);
            promoted.put_bytes(9, 5000); // Small -> Medium
            HELD_BUFS.with(|h| h.borrow_mut().extend([tenant.acquire(1), promoted]));
            HELD_BYTES.with(|h| {
                h.borrow_mut()
                    .extend([shared, tenant.acquire(2 * MIB).freeze()])
            });
            HELD_RESERVATION.with(|h| *h.borrow_mut() = Some(tenant.reserve(99)));
            // The thread ends here; its locals drop in their destructors.
        })
    };
    worker.join().unwrap(); // returns once the thread, destructors included, is gone
    let snap = pool.snapshot();
    assert_eq!(
        snap.tenant_live_bytes["tls"], 4096,
        "only main's clone is left"
    );
    assert_eq!(snap.reserved_bytes, 0);
    assert_eq!(snap.idle_slabs[&PoolClass::Huge], 1);
    assert_eq!(snap.idle_slabs[&PoolClass::Medium], 1);
    drop(main_clone);
    let snap = pool.snapshot();
    assert_nothing_live(&snap);
    assert_eq!(snap.idle_slabs[&PoolClass::Small], 2);
}

thread_local! {
    /// Touched before the thread's first acquire, so its destructor runs after the pool's
    /// own thread-locals are gone (destructors run in reverse order of first use).
    static HELD_LATE: RefCell<Vec<PooledBuf>> = const { RefCell::new(Vec::new()) };
}

/// Buffers that drop after the thread's magazines were given back (and the cache of the
/// last pool's magazine with them) take the slow path and return everything.
#[test]
fn drops_after_the_threads_magazines_are_gone_return_everything() {
    let pool = BufferPool::builder()
        .idle_decay_thread(false)
        .idle_timeout(None)
        .build();
    let tenant = pool.tenant("late");
    let worker = {
        let tenant = tenant.clone();
        thread::spawn(move || {
            HELD_LATE.with(|h| h.borrow_mut().reserve(3)); // first use: destroyed last
            let bufs = [tenant.acquire(10), tenant.acquire(5000), tenant.acquire(20)];
            drop(tenant.acquire(30)); // a cycle on the thread's magazine
            HELD_LATE.with(|h| h.borrow_mut().extend(bufs));
        })
    };
    worker.join().unwrap();
    let snap = pool.snapshot();
    assert_nothing_live(&snap);
    assert_eq!(snap.idle_slabs[&PoolClass::Small], 3);
    assert_eq!(snap.idle_slabs[&PoolClass::Medium], 1);
    drop(tenant.acquire(10)); // and the pool goes on from this thread
    assert_nothing_live(&pool.snapshot());
}

#[test]
fn thread_local_destructors_of_the_global_pool() {
    // The only test of this binary that touches the global pool, so its figures are ours.
    let pool = BufferPool::global();
    let worker = thread::spawn(|| {
        let tenant = BufferPool::global().tenant("global-tls");
        HELD_BUFS.with(|h| h.borrow_mut().push(tenant.acquire(5000)));
        HELD_BYTES.with(|h| h.borrow_mut().push(tenant.acquire(10).freeze()));
    });
    worker.join().unwrap();
    let snap = pool.snapshot();
    assert_nothing_live(&snap);
    assert_eq!(snap.idle_slabs[&PoolClass::Small], 1);
    assert_eq!(snap.idle_slabs[&PoolClass::Medium], 1);
}

// ---------------------------------------------------------------------------------------
// After the last pool handle is gone

#[test]
fn buffers_outlive_their_pool_handle_and_return_to_it() {
    let pool = BufferPool::builder().max_idle_per_class(4).build();
    let tenant = pool.tenant("survivor");
    let mut buf = tenant.acquire(10);
    let bytes = tenant.acquire(100).freeze();
    drop(pool); // the last BufferPool handle
                // The buffer still works: it writes, promotes (taking a slab from the pool), and drops.
    buf.put_bytes(1, 5000);
    assert_eq!(buf.class(), PoolClass::Medium);
    assert_eq!(tenant.live_bytes(), 64 * 1024 + 4096);
    drop(buf);
    let other_thread = thread::spawn(move || drop(bytes));
    other_thread.join().unwrap();
    assert_eq!(tenant.live_bytes(), 0);
    // And the tenant handle can still acquire from the pool it keeps alive: a hit.
    let again = tenant.acquire(10);
    assert_eq!(tenant.live_bytes(), 4096);
    drop(again);
    assert_eq!(tenant.live_bytes(), 0);
}

#[test]
fn the_last_owner_of_a_pool_can_be_a_buffer_or_a_bytes() {
    // No handle is left to read figures from; Miri (with leak checks on) proves that the
    // pool's state is freed exactly once, by the last owner, on whatever thread.
    let pool = BufferPool::default();
    let buf = pool.tenant("t").acquire(10);
    let mut bytes = pool.acquire(10);
    bytes.extend_from_slice(b"last");
    let bytes = bytes.freeze();
    let reservation = pool.tenant("r").reserve(5);
    drop(pool);
    drop(reservation);
    drop(buf);
    let clone = bytes.clone();
    drop(bytes);
    thread::spawn(move || {
        assert_eq!(&clone[..], b"last");
        drop(clone); // frees the pool's shared state on this thread
    })
    .join()
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// Eight threads of random operations

/// A tiny LCG (Knuth's MMIX constants): deterministic per seed, no dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

enum Item {
    Buf(PooledBuf),
    Bytes(Bytes),
    Reservation { _held: Reservation },
}

#[derive(Debug, Default)]
struct Tally {
    acquisitions: u64,
    promotions: u64,
    refusals: u64,
    sent: u64,
    received: u64,
}

const THREADS: usize = 8;
const TENANTS: usize = 50;
const MAX_IDLE_PER_CLASS: usize = 16;
const MAX_IDLE_BYTES: u64 = 64 * MIB as u64;

fn random_size(rng: &mut Lcg) -> usize {
    let roll = rng.below(100);
    let (lo, hi) = match roll {
        0..=54 => (0, 4096),
        55..=79 => (4097, 64 * 1024),
        80..=91 => (64 * 1024 + 1, MIB),
        92..=97 => (MIB + 1, 10 * MIB),
        _ => (10 * MIB + 1, 12 * MIB),
    };
    lo + rng.below((hi - lo + 1) as u64) as usize
}

fn worker(
    me: usize,
    pool: &BufferPool,
    inbox: mpsc::Receiver<Item>,
    outboxes: Vec<mpsc::Sender<Item>>,
    steps: usize,
) -> (Tally, mpsc::Receiver<Item>) {
    let mut rng = Lcg(0x9E37_79B9_7F4A_7C15 ^ me as u64);
    let tenants: Vec<_> = (0..TENANTS)
        .map(|i| pool.tenant(&format!("tenant-{i:02}")))
        .collect();
    let mut held: Vec<Item> = Vec::new();
    let mut tally = Tally::default();
    for _ in 0..steps {
        while let Ok(item) = inbox.try_recv() {
            tally.received += 1;
            held.push(item);
        }
        let pick = |rng: &mut Lcg, len: usize| rng.below(len.max(1) as u64) as usize;
        match rng.below(100) {
            0..=29 => {
                let size = random_size(&mut rng);
                let who = rng.below(TENANTS as u64 + 5) as usize;
                let result = match tenants.get(who) {
                    Some(tenant) => tenant.try_acquire(size),
                    None => pool.try_acquire(size),
                };
                match result {
                    Ok(buf) => {
                        tally.acquisitions += 1;
                        held.push(Item::Buf(buf));
                    }
                    Err(PoolError::TenantHardLimit { .. } | PoolError::PoolLimit { .. }) => {
                        tally.refusals += 1;
                    }
                    Err(other) => panic!("unexpected {other:?}"),
                }
            }
            30..=44 => {
                let i = pick(&mut rng, held.len());
                if let Some(Item::Buf(buf)) = held.get_mut(i) {
                    let more = if rng.below(10) == 0 {
                        rng.below(2 * MIB as u64) as usize
                    } else {
                        rng.below(6000) as usize
                    };
                    let capacity = buf.capacity();
                    match buf.try_reserve(more) {
                        Ok(()) => {
                            tally.promotions += u64::from(buf.capacity() != capacity);
                            buf.put_bytes(me as u8, more);
                        }
                        Err(_) => {
                            assert_eq!(buf.capacity(), capacity);
                            tally.refusals += 1;
                        }
                    }
                }
            }
            45..=54 => {
                let i = pick(&mut rng, held.len());
                if matches!(held.get(i), Some(Item::Buf(_))) {
                    let Item::Buf(buf) = held.swap_remove(i) else {
                        unreachable!()
                    };
                    let bytes = buf.freeze();
                    if !bytes.is_empty() && rng.below(2) == 0 {
                        held.push(Item::Bytes(bytes.slice(..bytes.len() / 2)));
                    }
                    held.push(Item::Bytes(bytes));
                }
            }
            55..=62 => {
                let i = pick(&mut rng, held.len());
                if let Some(Item::Bytes(bytes)) = held.get(i) {
                    let clone = bytes.clone();
                    held.push(Item::Bytes(clone));
                }
            }
            63..=74 => {
                if !held.is_empty() {
                    let item = held.swap_remove(pick(&mut rng, held.len()));
                    let to = (me + 1 + pick(&mut rng, THREADS - 1)) % THREADS;
                    // A finished thread's inbox is still open (main holds it): never fails.
                    outboxes[to].send(item).expect("inbox open");
                    tally.sent += 1;
                }
            }
            75..=82 => {
                let tenant = &tenants[pick(&mut rng, TENANTS)];
                match tenant.try_reserve(rng.below(100_000)) {
                    Ok(r) => held.push(Item::Reservation { _held: r }),
                    Err(_) => tally.refusals += 1,
                }
            }
            _ => {
                if !held.is_empty() {
                    drop(held.swap_remove(pick(&mut rng, held.len())));
                }
            }
        }
        while held.len() > 12 {
            drop(held.swap_remove(0));
        }
    }
    drop(held);
    (tally, inbox)
}

#[test]
#[cfg_attr(miri, ignore)] // seconds natively, hours under Miri
fn eight_threads_of_random_operations_end_exact() {
    let steps = if cfg!(miri) { 50 } else { 10_000 };
    let pool = BufferPool::builder()
        .max_idle_per_class(MAX_IDLE_PER_CLASS)
        .max_idle_bytes(MAX_IDLE_BYTES)
        .max_live_bytes(1024 * MIB as u64)
        .build();
    for i in (0..TENANTS).step_by(5) {
        pool.tenant(&format!("tenant-{i:02}"))
            .set_hard_limit(Some(3 * MIB as u64));
    }
    let (outboxes, inboxes): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel()).unzip();
    let done = AtomicBool::new(false);
    let (tallies, inboxes) = thread::scope(|s| {
        // A monitor: the per-class cap holds at every moment (each class is read under its
        // own lock; the cross-class byte total is checked once everything has settled).
        let monitor = s.spawn(|| {
            let mut looks = 0u64;
            while !done.load(Ordering::Relaxed) {
                let snap = pool.snapshot();
                for class in PoolClass::non_oversize() {
                    assert!(snap.idle_slabs[&class] <= MAX_IDLE_PER_CLASS as u64);
                }
                looks += 1;
                thread::sleep(std::time::Duration::from_millis(1));
            }
            looks
        });
        let workers: Vec<_> = inboxes
            .into_iter()
            .enumerate()
            .map(|(me, inbox)| {
                let outboxes = outboxes.clone();
                let pool = &pool;
                s.spawn(move || worker(me, pool, inbox, outboxes, steps))
            })
            .collect();
        let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        done.store(true, Ordering::Relaxed);
        assert!(monitor.join().unwrap() > 0);
        results.into_iter().unzip::<_, _, Vec<_>, Vec<_>>()
    });
    drop(outboxes);
    // Items still in flight are dropped here, on the main thread.
    let mut in_flight = 0;
    for inbox in inboxes {
        in_flight += inbox.try_iter().map(drop).count() as u64;
    }

    let acquisitions: u64 = tallies.iter().map(|t| t.acquisitions).sum();
    let promotions: u64 = tallies.iter().map(|t| t.promotions).sum();
    let sent: u64 = tallies.iter().map(|t| t.sent).sum();
    let received: u64 = tallies.iter().map(|t| t.received).sum();
    let refusals: u64 = tallies.iter().map(|t| t.refusals).sum();
    assert_eq!(sent, received + in_flight);
    assert!(acquisitions > 0 && promotions > 0 && sent > 0 && refusals > 0);

    let snap = pool.snapshot();
    assert_nothing_live(&snap);
    assert_eq!(snap.tenant_live_bytes.len(), TENANTS);
    for class in PoolClass::non_oversize() {
        assert!(
            snap.idle_slabs[&class] <= MAX_IDLE_PER_CLASS as u64,
            "{class}"
        );
    }
    assert!(snap.idle_bytes <= MAX_IDLE_BYTES, "{}", snap.idle_bytes);
    assert_eq!(snap.acquisitions_total(), acquisitions + promotions);
    assert_eq!(snap.promotions_total, promotions);
    assert_eq!(snap.alloc_failures_total, 0);
    assert_eq!(snap.too_large_total, 0);
    println!(
        "{acquisitions} acquisitions, {promotions} promotions, {refusals} refusals, \
         {sent} sent across threads, idle {} bytes",
        snap.idle_bytes
    );
    assert_eq!(pool.trim(), snap.idle_bytes);
}
