//! Leaks on purpose: `mem::forget` and `Box::leak` of buffers, `Bytes` clones and
//! reservations. A leak is safe Rust, so the pool must stay usable, and the figures must show
//! exactly what the leaked objects charged (that is how an operator finds a leak).
//!
//! Run under Miri with `-Zmiri-ignore-leaks`: these tests leak by design.

use std::mem;

use axon_buffer::{BufferPool, BufferPoolSnapshot, PoolClass, PoolError};
use bytes::BufMut;

/// Outstanding buffers, summed over classes.
fn outstanding(snap: &BufferPoolSnapshot) -> u64 {
    snap.outstanding_buffers.values().sum()
}

#[test]
fn a_forgotten_buffer_stays_charged_and_the_pool_keeps_working() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("leaky");
    let mut buf = tenant.acquire(5000);
    buf.extend_from_slice(b"never returned");
    mem::forget(buf);

    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 64 * 1024);
    assert_eq!(snap.tenant_live_bytes["leaky"], 64 * 1024);
    assert_eq!(snap.outstanding_buffers[&PoolClass::Medium], 1);
    assert_eq!(outstanding(&snap), 1);
    assert_eq!(snap.tenant_outstanding_buffers["leaky"], 1);
    assert_eq!(snap.idle_slabs[&PoolClass::Medium], 0);

    // Acquire and drop still work; the leaked slab is simply gone from the pool's point of view.
    for _ in 0..3 {
        let mut again = tenant.acquire(5000);
        again.extend_from_slice(b"fine");
        assert_eq!(tenant.live_bytes(), 2 * 64 * 1024);
        drop(again);
    }
    let snap = pool.snapshot();
    assert_eq!(snap.pool_misses[&PoolClass::Medium], 2);
    assert_eq!(snap.pool_hits[&PoolClass::Medium], 2);
    assert_eq!(snap.idle_slabs[&PoolClass::Medium], 1);
    assert_eq!(snap.live_bytes, 64 * 1024);
    assert_eq!(snap.outstanding_buffers[&PoolClass::Medium], 1);

    // trim frees what is idle, not what leaked.
    assert_eq!(pool.trim(), 64 * 1024);
    let snap = pool.snapshot();
    assert_eq!(snap.idle_bytes, 0);
    assert_eq!(snap.live_bytes, 64 * 1024);
    assert_eq!(snap.tenant_outstanding_buffers["leaky"], 1);
}

#[test]
fn a_box_leaked_buffer_is_a_working_static_buffer() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("static");
    let leaked: &'static mut axon_buffer::PooledBuf = Box::leak(Box::new(tenant.acquire(10)));
    leaked.extend_from_slice(b"static");
    leaked.put_bytes(0, 5000); // promotes: the Small slab returns, the charge moves to Medium
    assert_eq!(leaked.class(), PoolClass::Medium);
    assert_eq!(&leaked[..6], b"static");

    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 64 * 1024);
    assert_eq!(snap.tenant_live_bytes["static"], 64 * 1024);
    assert_eq!(snap.outstanding_buffers[&PoolClass::Medium], 1);
    assert_eq!(snap.outstanding_buffers[&PoolClass::Small], 0);
    assert_eq!(snap.idle_slabs[&PoolClass::Small], 1);
    assert_eq!(snap.tenant_outstanding_buffers["static"], 1);

    let other = tenant.acquire(10); // the Small slab the promotion gave back: a hit
    assert_eq!(pool.snapshot().pool_hits[&PoolClass::Small], 1);
    drop(other);
    leaked.clear();
    assert_eq!(pool.snapshot().live_bytes, 64 * 1024);
}

#[test]
fn a_forgotten_bytes_clone_pins_the_slab_after_every_other_clone_drops() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("frozen");
    let mut buf = tenant.acquire(100_000);
    buf.put_bytes(1, 100);
    let bytes = buf.freeze();
    let slice = bytes.slice(5..10);
    mem::forget(bytes.clone());
    drop((bytes, slice));

    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 1024 * 1024);
    assert_eq!(snap.tenant_live_bytes["frozen"], 1024 * 1024);
    assert_eq!(snap.outstanding_buffers[&PoolClass::Large], 1);
    assert_eq!(snap.idle_slabs[&PoolClass::Large], 0);
    assert_eq!(snap.tenant_outstanding_buffers["frozen"], 1);

    drop(tenant.acquire(100_000));
    assert_eq!(pool.snapshot().idle_slabs[&PoolClass::Large], 1);
}

#[test]
fn a_forgotten_reservation_stays_reserved() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("reserver");
    mem::forget(tenant.reserve(777));
    let kept = tenant.reserve(23);
    let snap = pool.snapshot();
    assert_eq!(snap.reserved_bytes, 800);
    assert_eq!(snap.live_bytes, 800);
    assert_eq!(snap.tenant_live_bytes["reserver"], 800);
    assert_eq!(outstanding(&snap), 0, "a reservation is not a buffer");
    drop(kept);
    let snap = pool.snapshot();
    assert_eq!(snap.reserved_bytes, 777);
    assert_eq!(snap.live_bytes, 777);
}

#[test]
fn leaked_bytes_count_against_the_hard_limit_for_good() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("capped");
    tenant.set_hard_limit(Some(8192));
    mem::forget(tenant.acquire(1));
    let second = tenant.try_acquire(1).unwrap();
    assert!(matches!(
        tenant.try_acquire(1),
        Err(PoolError::TenantHardLimit {
            live: 8192,
            limit: 8192,
            ..
        })
    ));
    drop(second);
    let third = tenant.try_acquire(1).unwrap();
    assert_eq!(tenant.live_bytes(), 8192);
    drop(third);
    assert_eq!(tenant.live_bytes(), 4096);
}

#[test]
fn a_leaked_buffer_pins_its_tenant_account_against_eviction() {
    let pool = BufferPool::builder().max_tenants(2).build();
    mem::forget(pool.tenant("pinned").acquire(1)); // no handle left, but 4096 live bytes
    for i in 0..20 {
        drop(pool.tenant(&format!("churn-{i}")).acquire(1));
    }
    let snap = pool.snapshot();
    assert_eq!(snap.tenant_live_bytes["pinned"], 4096);
    assert_eq!(snap.tenant_outstanding_buffers["pinned"], 1);
    assert!(snap.tenant_live_bytes.len() <= 3);
    assert_eq!(snap.live_bytes, 4096);
}

#[test]
fn many_leaks_of_every_class_add_up_exactly() {
    let rounds = if cfg!(miri) { 12 } else { 200 };
    let pool = BufferPool::default();
    let tenants: Vec<_> = (0..5).map(|i| pool.tenant(&format!("t{i}"))).collect();
    let sizes = [0, 4096, 4097, 65_536, 65_537, 1 << 20, (1 << 20) + 1];
    let mut expected_live = 0u64;
    let mut expected_class = [0u64; 5];
    for i in 0..rounds {
        let buf = tenants[i % 5].acquire(sizes[i % sizes.len()]);
        let class = buf.class();
        let kept = tenants[(i + 1) % 5].acquire(sizes[(i + 3) % sizes.len()]);
        match i % 3 {
            0 => mem::forget(buf),
            1 => {
                Box::leak(Box::new(buf));
            }
            _ => mem::forget(buf.freeze()),
        }
        expected_live += class.capacity() as u64;
        expected_class[class as usize] += 1;
        drop(kept);
    }
    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, expected_live);
    assert_eq!(snap.tenant_live_bytes.values().sum::<u64>(), expected_live);
    assert_eq!(outstanding(&snap), rounds as u64);
    assert_eq!(
        snap.tenant_outstanding_buffers.values().sum::<u64>(),
        rounds as u64
    );
    for class in PoolClass::non_oversize() {
        assert_eq!(
            snap.outstanding_buffers[&class],
            expected_class[class as usize]
        );
    }
}

#[test]
fn a_leaked_buffer_keeps_its_dropped_pool_alive() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("orphan");
    let leaked = Box::leak(Box::new(tenant.acquire(10)));
    drop((pool, tenant));
    // The pool's shared state lives on behind the leaked buffer, which still works.
    leaked.put_bytes(7, 5000);
    assert_eq!(leaked.class(), PoolClass::Medium);
    assert_eq!(leaked.tenant(), Some("orphan"));
}

/// The leak tracker names a forgotten buffer, with where it was acquired.
#[test]
#[cfg_attr(
    miri,
    ignore = "capturing a backtrace needs getcwd, which Miri's isolation refuses"
)]
fn forgotten_buffer_is_reported_with_its_backtrace() {
    let pool = BufferPool::builder()
        .leak_tracking(1)
        .leak_backtraces(true)
        .build();
    std::mem::forget(pool.tenant("leaky").acquire(100));
    let report = pool.oldest_outstanding(10);
    assert_eq!(report.len(), 1);
    let backtrace = report[0].backtrace.as_deref().expect("backtraces are on");
    assert!(!backtrace.is_empty());
    assert!(
        !format!("{:?}", report[0]).contains(backtrace),
        "Debug abbreviates it"
    );
    // The leak shows in the figures too.
    let snap = pool.snapshot();
    assert_eq!(snap.outstanding_buffers[&PoolClass::Small], 1);
    assert_eq!(snap.tenant_live_bytes["leaky"], 4096);
}
