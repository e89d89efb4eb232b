//! The sampled leak tracker: which outstanding buffers it reports, in what order, with what.

use std::time::Duration;

use axon_buffer::{BufferPool, PoolClass};

#[test]
fn off_by_default_reports_nothing() {
    let pool = BufferPool::default();
    let _buf = pool.acquire(10);
    assert!(pool.oldest_outstanding(10).is_empty());
}

#[test]
fn samples_one_in_n_per_thread() {
    let pool = BufferPool::builder().leak_tracking(4).build();
    // A fresh thread starts its countdown at zero: buffers 0, 4, 8 are sampled.
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            let held: Vec<_> = (0..12).map(|_| pool.acquire(10)).collect();
            let report = pool.oldest_outstanding(100);
            drop(held);
            report
        })
        .join()
        .unwrap()
    });
    assert_eq!(report.len(), 3);
    assert!(
        pool.oldest_outstanding(100).is_empty(),
        "records close on drop"
    );
}

#[test]
fn reports_oldest_first_with_class_tenant_and_promotion() {
    let pool = BufferPool::builder().leak_tracking(1).build();
    let first = pool.tenant("old").acquire(10);
    std::thread::sleep(Duration::from_millis(5));
    let mut second = pool.acquire(10);
    second.extend_from_slice(&[0; 5000]); // promoted to Medium
    let report = pool.oldest_outstanding(10);
    assert_eq!(report.len(), 2);
    assert_eq!(report[0].tenant.as_deref(), Some("old"));
    assert_eq!(report[0].class, PoolClass::Small);
    assert!(report[0].age >= report[1].age);
    assert!(report[0].age >= Duration::from_millis(5));
    assert_eq!(report[1].tenant, None);
    assert_eq!(report[1].class, PoolClass::Medium);
    assert_eq!(report[1].capacity, 64 * 1024);
    assert_eq!(pool.oldest_outstanding(1).len(), 1);
    drop(first);
    let report = pool.oldest_outstanding(10);
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].class, PoolClass::Medium);
    drop(second);
    assert!(pool.oldest_outstanding(10).is_empty());
}

#[test]
fn frozen_bytes_stay_reported_until_the_last_clone_drops_and_into_vec_closes() {
    let pool = BufferPool::builder().leak_tracking(1).build();
    let mut buf = pool.acquire(10);
    buf.extend_from_slice(b"x");
    let bytes = buf.freeze();
    let slice = bytes.slice(0..1); // (an empty slice would be a fresh Bytes, pinning nothing)
    drop(bytes);
    assert_eq!(pool.oldest_outstanding(10).len(), 1, "the slice pins it");
    drop(slice);
    assert!(pool.oldest_outstanding(10).is_empty());
    let vec = pool.acquire(10).into_vec();
    assert!(pool.oldest_outstanding(10).is_empty());
    drop(vec);
}
