//! Threads acquiring, freezing and dropping on other threads: the figures stay exact.

use std::sync::mpsc;

use axon_buffer::{BufferPool, PoolClass};
use bytes::Bytes;

const THREADS: usize = 4;
fn rounds() -> usize {
    if cfg!(miri) {
        20
    } else {
        2_000
    }
}

#[test]
fn threads_cycle_buffers_and_every_figure_adds_up() {
    let pool = BufferPool::builder().max_idle_per_class(8).build();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let pool = pool.clone();
            s.spawn(move || {
                let tenant = pool.tenant(&format!("t{t}"));
                for i in 0..rounds() {
                    let size = [10, 5000, 70_000][(i + t) % 3];
                    let mut buf = tenant.acquire(size);
                    buf.extend_from_slice(&[t as u8; 100]);
                    assert!(buf[..100].iter().all(|&b| b == t as u8));
                }
            });
        }
    });
    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 0);
    assert_eq!(snap.acquisitions_total(), (THREADS * rounds()) as u64);
    for class in PoolClass::non_oversize() {
        assert!(snap.idle_slabs[&class] <= 8);
        assert_eq!(snap.outstanding_buffers[&class], 0);
    }
    assert!(snap.tenant_live_bytes.values().all(|&v| v == 0));
}

#[test]
fn frozen_bytes_dropped_by_consumers_on_other_threads() {
    let pool = BufferPool::default();
    let (tx, rx) = mpsc::channel::<Bytes>();
    let rx = std::sync::Mutex::new(rx);
    let consumed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let next = rx.lock().unwrap().recv();
                match next {
                    Ok(bytes) => {
                        assert!(bytes.iter().all(|&b| b == bytes[0]));
                        consumed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(_) => break,
                }
            });
        }
        let tenant = pool.tenant("producer");
        for i in 0..rounds() {
            let mut buf = tenant.acquire(3000);
            buf.resize(3000, i as u8);
            let bytes = buf.freeze();
            tx.send(bytes.slice(10..)).unwrap();
            tx.send(bytes).unwrap();
        }
        drop(tx);
    });
    assert_eq!(
        consumed.load(std::sync::atomic::Ordering::Relaxed),
        2 * rounds()
    );
    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 0);
    assert_eq!(snap.tenant_live_bytes["producer"], 0);
    assert_eq!(snap.outstanding_buffers[&PoolClass::Small], 0);
    assert_eq!(
        snap.pool_hits[&PoolClass::Small] + snap.pool_misses[&PoolClass::Small],
        rounds() as u64
    );
}

#[test]
fn hard_limit_holds_exactly_under_contention() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("capped");
    tenant.set_hard_limit(Some(10 * 4096));
    let peak = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                let mut held = Vec::new();
                for _ in 0..rounds() {
                    match tenant.try_acquire(1) {
                        Ok(buf) => held.push(buf),
                        Err(_) => held.clear(),
                    }
                    peak.fetch_max(tenant.live_bytes(), std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    assert!(peak.into_inner() <= 10 * 4096);
    assert_eq!(tenant.live_bytes(), 0);
    assert!(pool.snapshot().hard_limit_refusals_total["capped"] > 0);
}

#[test]
fn trim_and_snapshot_run_while_threads_work() {
    let pool = BufferPool::default();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..rounds() {
                    let buf = pool.acquire(100);
                    drop(buf);
                }
            });
        }
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let snap = pool.snapshot();
                assert!(snap.idle_bytes <= 256 << 20);
                pool.trim();
                std::thread::yield_now();
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(if cfg!(miri) {
            1
        } else {
            50
        }));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(pool.snapshot().live_bytes, 0);
}
