//! Idle decay (DESIGN.md "Idle decay"): slabs idle longer than `idle_timeout` are freed, in
//! the shared lists and in every thread's cache, also of a thread that went quiet, by
//! `trim_idle`, by the pool's own slow paths, or by its decay thread. Timeouts are short;
//! the tests assert figures (what was freed, what was kept), not timings.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use axon_buffer::{BufferPool, PoolClass};

/// The idle timeout of these tests (longer under Miri, whose clock runs with its slow
/// interpretation).
const T: Duration = if cfg!(miri) {
    Duration::from_secs(2)
} else {
    Duration::from_millis(30)
};

fn decaying() -> BufferPool {
    BufferPool::builder().idle_timeout(Some(T)).build()
}

/// Waits out one timeout and runs a decay: the first one after the slabs went idle only
/// marks them (nothing proves how long they have been idle before a mark).
fn mark(pool: &BufferPool) {
    thread::sleep(T + Duration::from_millis(5));
    pool.trim_idle();
}

fn idle(pool: &BufferPool, class: PoolClass) -> u64 {
    pool.snapshot().idle_slabs[&class]
}

#[test]
fn idle_slabs_are_freed_from_the_lists_and_every_threads_cache() {
    let pool = decaying();
    // A live, quiet thread caches one slab of each class.
    let cached = Arc::new(Barrier::new(2));
    let done = Arc::new(Barrier::new(2));
    let quiet = {
        let (pool, cached, done) = (pool.clone(), Arc::clone(&cached), Arc::clone(&done));
        thread::spawn(move || {
            for size in [100, 10_000, 100_000, 2_000_000] {
                drop(pool.acquire(size));
            }
            cached.wait();
            done.wait();
        })
    };
    cached.wait();
    // A thread that never acquired puts three Small slabs on the shared list; this thread
    // caches two.
    let strays: Vec<_> = (0..3).map(|_| pool.acquire(1)).collect();
    drop([pool.acquire(1), pool.acquire(1)]);
    thread::spawn(move || drop(strays)).join().unwrap();
    let before = pool.snapshot();
    assert_eq!(before.idle_slabs[&PoolClass::Small], 1 + 2 + 3);
    assert_eq!(
        before.idle_bytes,
        6 * 4096 + 65_536 + (1 << 20) + 10 * (1 << 20)
    );

    mark(&pool);
    thread::sleep(T + Duration::from_millis(5));
    let freed = pool.trim_idle();
    assert_eq!(
        freed, before.idle_bytes,
        "everything had been idle a whole timeout"
    );
    let snap = pool.snapshot();
    assert_eq!(snap.idle_bytes, 0);
    for class in PoolClass::non_oversize() {
        assert_eq!(snap.idle_slabs[&class], 0, "{class}");
        let n = if class == PoolClass::Small { 6 } else { 1 };
        assert_eq!(snap.decayed_slabs_total[&class], n, "{class}");
        assert_eq!(
            snap.decayed_bytes_total[&class],
            n * class.capacity() as u64
        );
    }
    // Their idle budget went with them: 64 Small returns (the per-class cap) are all pooled.
    drop((0..64).map(|_| pool.acquire(1)).collect::<Vec<_>>());
    let snap = pool.snapshot();
    assert_eq!(snap.idle_slabs[&PoolClass::Small], 64);
    assert_eq!(snap.discarded_total[&PoolClass::Small], 0);
    done.wait();
    quiet.join().unwrap();
}

#[test]
fn a_slab_that_moved_since_the_mark_is_kept() {
    let pool = decaying();
    drop((0..4).map(|_| pool.acquire(1)).collect::<Vec<_>>()); // 4 idle Small slabs
    mark(&pool);
    // Busy meanwhile: one buffer at a time, so the top slab keeps moving.
    let until = Instant::now() + T + Duration::from_millis(5);
    while Instant::now() < until {
        drop(pool.acquire(1));
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        pool.trim_idle(),
        3 * 4096,
        "the three below the low-water mark"
    );
    assert_eq!(idle(&pool, PoolClass::Small), 1);
    assert_eq!(pool.snapshot().decayed_slabs_total[&PoolClass::Small], 3);
}

#[test]
fn nothing_is_freed_before_a_whole_timeout() {
    let pool = decaying();
    drop(pool.acquire(1 << 20));
    assert_eq!(pool.trim_idle(), 0, "the mark is younger than the timeout");
    mark(&pool); // marks: the slab was idle, but not provably for a whole timeout
    assert_eq!(idle(&pool, PoolClass::Large), 1);
    assert_eq!(pool.trim_idle(), 0, "just marked");
    assert_eq!(idle(&pool, PoolClass::Large), 1);
}

#[test]
fn without_an_idle_timeout_nothing_decays() {
    let pool = BufferPool::builder().idle_timeout(None).build();
    drop(pool.acquire(1 << 20));
    for _ in 0..3 {
        mark(&pool);
    }
    assert_eq!(pool.trim_idle(), 0);
    assert_eq!(idle(&pool, PoolClass::Large), 1);
    assert_eq!(pool.trim(), 1 << 20, "trim still frees everything");
}

/// No call and no traffic: the decay thread frees the idle memory of a quiet pool, and
/// ends once the pool is gone.
#[test]
fn the_decay_thread_frees_a_quiet_pools_memory() {
    let pool = BufferPool::builder()
        .idle_timeout(Some(T))
        .idle_decay_thread(true)
        .build();
    drop([pool.acquire(1 << 20), pool.acquire(10 << 20)]);
    // A slab is counted decayed once its pages are gone, a moment after it stops being idle.
    let settled = |s: &axon_buffer::BufferPoolSnapshot| {
        s.idle_bytes == 0 && s.decayed_slabs_total.values().sum::<u64>() == 2
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !settled(&pool.snapshot()) && Instant::now() < deadline {
        thread::sleep(T / 2);
    }
    let snap = pool.snapshot();
    assert_eq!(snap.idle_bytes, 0);
    assert_eq!(snap.decayed_slabs_total[&PoolClass::Large], 1);
    assert_eq!(snap.decayed_slabs_total[&PoolClass::Huge], 1);
}

/// With traffic and no call: the pool looks at its clock every few hundred slow-path
/// events (here, misses), and decays what has been idle.
#[test]
fn slow_path_acquires_run_the_decay() {
    let pool = decaying();
    drop(pool.acquire(10 << 20)); // one idle Huge slab
    let mut held = Vec::new();
    for _ in 0..2 {
        thread::sleep(T + Duration::from_millis(5));
        // 300 misses: held, so each is a fresh slab.
        held.extend((0..300).map(|_| pool.acquire(1)));
    }
    let snap = pool.snapshot();
    assert_eq!(snap.decayed_slabs_total[&PoolClass::Huge], 1);
    assert_eq!(snap.idle_slabs[&PoolClass::Huge], 0);
    drop(held);
}
