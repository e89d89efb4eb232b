//! Issue 19: buffers made on one thread and frozen, then dropped on a consumer thread that
//! never acquires (a channel's receiver, tokio's blocking pool), batch after batch. Every
//! figure stays exact at rest while the consumer lives and after it exits, the idle caps
//! hold, `trim` reaches every idle slab, and nothing that fits is refused. These hold
//! whichever path the consumer's drops take (the shared lists today; a magazine of the
//! consumer's own, with idle units and a pool stock, if it ever gets one), so they guard
//! any faster remote-free path.

use std::sync::mpsc;
use std::thread;

use axon_buffer::{BufferPool, PoolClass, PooledBuf};
use bytes::Bytes;

const SMALL: usize = 4096;

/// A consumer thread that drops every batch it is sent and acks it; it exits when the
/// sender hangs up.
struct Consumer {
    to: Option<mpsc::SyncSender<Vec<Bytes>>>,
    acks: mpsc::Receiver<()>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Consumer {
    fn start() -> Consumer {
        let (to, batches) = mpsc::sync_channel::<Vec<Bytes>>(0);
        let (ack, acks) = mpsc::channel();
        let thread = thread::spawn(move || {
            for batch in batches {
                drop(batch);
                ack.send(()).unwrap();
            }
        });
        Consumer {
            to: Some(to),
            acks,
            thread: Some(thread),
        }
    }

    /// Hands `batch` over and waits until it is dropped.
    fn drop_batch(&self, batch: Vec<Bytes>) {
        self.to.as_ref().unwrap().send(batch).unwrap();
        self.acks.recv().unwrap();
    }

    /// Waits for the thread's exit (its magazine has come home once this returns).
    fn exit(mut self) {
        self.to = None;
        self.thread.take().unwrap().join().unwrap();
    }
}

fn batch(make: impl Fn() -> PooledBuf, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|_| {
            let mut buf = make();
            buf.extend_from_slice(&[7; 64]);
            buf.freeze()
        })
        .collect()
}

fn small_idle(pool: &BufferPool) -> u64 {
    pool.snapshot().idle_slabs[&PoolClass::Small]
}

fn assert_at_rest(pool: &BufferPool, acquired: u64, what: &str) {
    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 0, "{what}: live bytes");
    assert_eq!(pool.live_bytes(), 0, "{what}: live bytes (figure)");
    for (tenant, live) in &snap.tenant_live_bytes {
        assert_eq!(*live, 0, "{what}: tenant {tenant}");
    }
    let small = PoolClass::Small;
    assert_eq!(
        snap.pool_hits[&small] + snap.pool_misses[&small],
        acquired,
        "{what}: every acquire is one hit or one miss"
    );
    assert_eq!(
        snap.idle_bytes,
        snap.idle_slabs[&small] * SMALL as u64,
        "{what}: idle bytes are the idle slabs'"
    );
    assert_eq!(snap.outstanding_buffers[&small], 0, "{what}: outstanding");
}

#[test]
fn a_consumer_that_only_drops_keeps_every_figure_exact_while_it_lives() {
    let pool = BufferPool::builder().build();
    let tenant = pool.tenant("t");
    let consumer = Consumer::start();
    let mut acquired = 0;
    for round in 0..20 {
        let n = 1 + round % 17;
        let bufs = if round % 2 == 0 {
            batch(|| pool.acquire(SMALL), n)
        } else {
            batch(|| tenant.acquire(SMALL), n)
        };
        acquired += n as u64;
        consumer.drop_batch(bufs);
        assert_at_rest(&pool, acquired, &format!("round {round}"));
        assert_eq!(tenant.live_bytes(), 0, "round {round}");
    }
    // Trim reaches every idle slab while the consumer lives (wherever it keeps them).
    let idle = pool.snapshot().idle_bytes;
    assert!(idle > 0);
    assert_eq!(
        pool.trim(),
        idle,
        "trim frees every idle slab, the consumer's too"
    );
    assert_eq!(small_idle(&pool), 0);
    consumer.exit();
    assert_at_rest(&pool, acquired, "after the consumer exited");
}

#[test]
fn consumers_that_exit_leave_their_slabs_to_be_reused() {
    let pool = BufferPool::builder().build();
    let mut acquired = 0;
    for generation in 0..4 {
        // Each consumer drops three batches and exits.
        let consumer = Consumer::start();
        for _ in 0..3 {
            consumer.drop_batch(batch(|| pool.acquire(SMALL), 16));
            acquired += 16;
        }
        let before = small_idle(&pool);
        consumer.exit();
        assert_eq!(
            small_idle(&pool),
            before,
            "generation {generation}: slabs kept"
        );
        assert_at_rest(&pool, acquired, &format!("generation {generation}"));
    }
    // What the consumers returned is reused: a batch now hits.
    let snap = pool.snapshot();
    let bufs = batch(|| pool.acquire(SMALL), 16);
    let hits = pool.snapshot().pool_hits[&PoolClass::Small] - snap.pool_hits[&PoolClass::Small];
    assert_eq!(hits, 16, "every slab came back to be reused");
    drop(bufs);
}

#[test]
fn the_idle_caps_hold_with_a_consumer() {
    let pool = BufferPool::builder()
        .max_idle_per_class(5)
        .max_idle_bytes(6 * SMALL as u64)
        .build();
    let consumer = Consumer::start();
    let mut acquired = 0;
    for round in 0..10 {
        consumer.drop_batch(batch(|| pool.acquire(SMALL), 16));
        acquired += 16;
        let snap = pool.snapshot();
        assert!(
            snap.idle_slabs[&PoolClass::Small] <= 5,
            "round {round}: {snap:?}"
        );
        assert!(snap.idle_bytes <= 6 * SMALL as u64, "round {round}");
        assert_at_rest(&pool, acquired, &format!("round {round}"));
    }
    consumer.exit();
    assert!(small_idle(&pool) <= 5);
    // Every unit came home: the whole cap is free for this thread's returns.
    pool.trim();
    let bufs: Vec<_> = (0..5).map(|_| pool.acquire(SMALL)).collect();
    let discarded = pool.snapshot().discarded_total[&PoolClass::Small];
    drop(bufs);
    let snap = pool.snapshot();
    assert_eq!(snap.idle_slabs[&PoolClass::Small], 5);
    assert_eq!(snap.discarded_total[&PoolClass::Small], discarded);
}

#[test]
fn nothing_that_fits_is_refused_after_a_consumer_dropped() {
    let limit = 16 * SMALL as u64;
    let pool = BufferPool::builder().max_live_bytes(limit).build();
    let tenant = pool.tenant("t");
    tenant.set_hard_limit(Some(limit));
    let consumer = Consumer::start();
    for round in 0..8 {
        // The whole budget each round: whatever the consumer's drops left in a stock must
        // be taken back for it to fit.
        let bufs: Vec<Bytes> = (0..16)
            .map(|i| {
                let buf = if (round + i) % 2 == 0 {
                    tenant.try_acquire(SMALL)
                } else {
                    pool.try_acquire(SMALL)
                };
                buf.unwrap_or_else(|err| panic!("round {round}, buffer {i}: {err}"))
                    .freeze()
            })
            .collect();
        assert_eq!(pool.live_bytes(), limit);
        consumer.drop_batch(bufs);
        assert_eq!(pool.live_bytes(), 0, "round {round}");
        assert_eq!(tenant.live_bytes(), 0, "round {round}");
    }
    consumer.exit();
    assert_eq!(pool.snapshot().pool_limit_refusals_total, 0);
}

#[test]
fn consumers_of_the_global_pool_keep_its_live_bytes_exact() {
    let pool = BufferPool::global();
    let before = pool.live_bytes();
    let consumers: Vec<_> = (0..3).map(|_| Consumer::start()).collect();
    for round in 0..6 {
        for consumer in &consumers {
            consumer.drop_batch(batch(|| pool.acquire(SMALL), 9));
        }
        // Other tests in this binary use their own pools: the global pool is ours.
        assert_eq!(pool.live_bytes(), before, "round {round}");
    }
    for consumer in consumers {
        consumer.exit();
    }
    assert_eq!(pool.live_bytes(), before);
}

#[test]
fn a_pool_dropped_while_a_consumer_keeps_its_magazine() {
    // The consumer's drops leave slabs in a magazine of its own (the pool's spare, adopted)
    // while the pool has a new spare; the pool goes first, the consumer's thread after.
    // Nothing may leak or be freed twice (Miri checks both).
    let pool = BufferPool::builder().build();
    let consumer = Consumer::start();
    for _ in 0..2 {
        consumer.drop_batch(batch(|| pool.acquire(SMALL), 6));
    }
    assert_at_rest(&pool, 12, "before the pool's drop");
    assert!(small_idle(&pool) > 0);
    drop(pool);
    consumer.exit();
}
