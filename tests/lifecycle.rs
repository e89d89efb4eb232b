//! A buffer's life: acquire, write, drop, and what every figure says at each step.

use std::collections::HashMap;

use axon_buffer::{BufferPool, PoolClass, PooledBuf};

fn assert_send_sync_static<T: Send + Sync + 'static>() {}

#[test]
fn handles_are_send_sync_static() {
    assert_send_sync_static::<PooledBuf>();
    assert_send_sync_static::<BufferPool>();
    assert_send_sync_static::<axon_buffer::Tenant>();
    assert_send_sync_static::<axon_buffer::Reservation>();
    assert_send_sync_static::<axon_buffer::PoolError>();
}

#[test]
fn fresh_pool_has_every_class_key_and_zero_figures() {
    let snap = BufferPool::default().snapshot();
    for class in PoolClass::non_oversize() {
        assert_eq!(snap.pool_hits[&class], 0);
        assert_eq!(snap.pool_misses[&class], 0);
        assert_eq!(snap.idle_slabs[&class], 0);
    }
    for class in PoolClass::all() {
        assert_eq!(snap.discarded_total[&class], 0);
        assert_eq!(snap.outstanding_buffers[&class], 0);
    }
    assert!(!snap.pool_hits.contains_key(&PoolClass::Oversize));
    assert_eq!(snap.live_bytes, 0);
    assert_eq!(snap.idle_bytes, 0);
    assert!(snap.tenant_live_bytes.is_empty());
}

#[test]
fn every_class_is_acquired_charged_and_returned() {
    let pool = BufferPool::default();
    let cases = [
        (0, PoolClass::Small),
        (4096, PoolClass::Small),
        (4097, PoolClass::Medium),
        (65_536, PoolClass::Medium),
        (65_537, PoolClass::Large),
        (1 << 20, PoolClass::Large),
        ((1 << 20) + 1, PoolClass::Huge),
        (10 << 20, PoolClass::Huge),
    ];
    for (size, class) in cases {
        let buf = pool.acquire(size);
        assert_eq!(buf.class(), class, "size {size}");
        assert_eq!(buf.capacity(), class.capacity());
        assert_eq!(buf.len(), 0);
        assert_eq!(pool.live_bytes(), class.capacity() as u64);
        assert_eq!(pool.snapshot().outstanding_buffers[&class], 1);
        drop(buf);
        assert_eq!(pool.live_bytes(), 0);
        assert_eq!(pool.snapshot().outstanding_buffers[&class], 0);
    }
    let snap = pool.snapshot();
    // Two sizes per class: the first misses, the second hits the slab the first returned.
    for class in PoolClass::non_oversize() {
        assert_eq!(snap.pool_misses[&class], 1, "{class}");
        assert_eq!(snap.pool_hits[&class], 1, "{class}");
        assert_eq!(snap.idle_slabs[&class], 1, "{class}");
    }
    let idle: u64 = PoolClass::non_oversize()
        .iter()
        .map(|c| c.capacity() as u64)
        .sum();
    assert_eq!(snap.idle_bytes, idle);
    assert_eq!(pool.trim(), idle);
    let snap = pool.snapshot();
    assert_eq!(snap.idle_bytes, 0);
    assert!(snap.idle_slabs.values().all(|&n| n == 0));
}

#[test]
fn reused_slab_comes_back_empty_and_never_shows_old_bytes() {
    let pool = BufferPool::default();
    let mut buf = pool.acquire(100);
    buf.extend_from_slice(&[0xAB; 4096]);
    let ptr = buf.as_ptr();
    drop(buf);
    let mut buf = pool.acquire(100);
    assert_eq!(buf.as_ptr(), ptr, "the same slab is reused");
    assert!(buf.is_empty());
    buf.resize(4096, 0);
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn idle_byte_cap_discards_what_does_not_fit() {
    let pool = BufferPool::builder()
        .max_idle_bytes(64 * 1024 + 2 * 4096)
        .build();
    let medium = pool.acquire(5000);
    let smalls: Vec<_> = (0..3).map(|_| pool.acquire(10)).collect();
    drop(medium); // 64 KiB idle
    drop(smalls); // two fit, the third would pass the cap
    let snap = pool.snapshot();
    assert_eq!(snap.idle_bytes, 64 * 1024 + 2 * 4096);
    assert_eq!(snap.idle_slabs[&PoolClass::Small], 2);
    assert_eq!(snap.discarded_total[&PoolClass::Small], 1);
}

#[test]
fn max_idle_per_class_zero_pools_nothing() {
    let pool = BufferPool::builder().max_idle_per_class(0).build();
    drop(pool.acquire(10));
    drop(pool.acquire(10));
    let snap = pool.snapshot();
    assert_eq!(snap.pool_misses[&PoolClass::Small], 2);
    assert_eq!(snap.pool_hits[&PoolClass::Small], 0);
    assert_eq!(snap.discarded_total[&PoolClass::Small], 2);
    assert_eq!(snap.idle_bytes, 0);
}

#[test]
fn into_vec_leaves_the_pool_for_good() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("t");
    let mut buf = tenant.acquire(10);
    buf.extend_from_slice(b"keep me");
    let vec = buf.into_vec();
    assert_eq!(vec, b"keep me");
    assert_eq!(vec.capacity(), 4096);
    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 0);
    assert_eq!(snap.tenant_live_bytes["t"], 0);
    assert_eq!(snap.tenant_outstanding_buffers["t"], 0);
    assert_eq!(snap.outstanding_buffers[&PoolClass::Small], 0);
    assert_eq!(snap.idle_slabs[&PoolClass::Small], 0);
    assert_eq!(snap.discarded_total[&PoolClass::Small], 0);
}

#[test]
fn buffers_keep_their_pool_alive() {
    let pool = BufferPool::builder().build();
    let tenant = pool.tenant("t");
    let mut buf = tenant.acquire(10);
    drop(pool);
    drop(tenant);
    buf.extend_from_slice(&[1; 5000]); // promotion still reaches the pool
    assert_eq!(buf.class(), PoolClass::Medium);
    drop(buf);
}

#[test]
fn global_pool_is_one_instance_and_cannot_be_reconfigured_after_use() {
    let a = BufferPool::global();
    let b = BufferPool::global();
    assert!(std::ptr::eq(a, b));
    drop(a.acquire(10));
    let err = BufferPool::builder().build_global().unwrap_err();
    assert_eq!(err, axon_buffer::PoolError::GlobalAlreadyInitialized);
}

#[test]
fn debug_never_prints_contents() {
    let pool = BufferPool::default();
    let mut buf = pool.tenant("acme").acquire(10);
    buf.extend_from_slice(b"SECRET-PAYLOAD");
    let shown = format!("{buf:?}");
    assert!(!shown.contains("SECRET"), "{shown}");
    assert!(shown.contains("Small") && shown.contains("acme"), "{shown}");
    let shown = format!("{:?}", buf.freeze());
    // Bytes' own Debug prints contents: that is bytes' choice, documented in the README.
    assert!(shown.contains("SECRET"));
}

#[test]
fn snapshot_maps_use_plain_tenant_ids() {
    let pool = BufferPool::new(1);
    let _a = pool.tenant("a").acquire(1);
    let _b = pool.tenant("b").reserve(7);
    let snap = pool.snapshot();
    let expected: HashMap<String, u64> = [("a".to_owned(), 4096), ("b".to_owned(), 7)].into();
    assert_eq!(snap.tenant_live_bytes, expected);
    assert_eq!(snap.live_bytes, 4096 + 7);
    assert_eq!(snap.reserved_bytes, 7);
}
