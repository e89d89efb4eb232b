//! Tenant accounting: charges, soft and hard limits, reservations, the overflow tenant.

use axon_buffer::{BufferPool, PoolClass, PoolError, MAX_TENANT_ID_LEN, OVERFLOW_TENANT_ID};

#[test]
fn tenant_is_charged_the_slab_capacity_and_debited_on_drop() {
    let pool = BufferPool::default();
    let t = pool.tenant("video");
    let a = t.acquire(1);
    let b = t.acquire(2 << 20);
    let c = t.acquire(20 << 20);
    assert_eq!(t.live_bytes(), 4096 + (10 << 20) + (20 << 20));
    assert_eq!(pool.snapshot().tenant_outstanding_buffers["video"], 3);
    assert_eq!(a.tenant(), Some("video"));
    drop((a, b, c));
    assert_eq!(t.live_bytes(), 0);
    assert_eq!(pool.snapshot().tenant_outstanding_buffers["video"], 0);
}

#[test]
fn soft_limit_counts_every_charge_above_it_and_never_refuses() {
    let pool = BufferPool::new(10_000);
    let t = pool.tenant("t");
    let a = t.acquire(100); // 4096: under
    let b = t.acquire(100); // 8192: under
    let c = t.acquire(100); // 12288: over -> 1
    let r = t.reserve(1); // over -> 2
    drop(c);
    let d = t.acquire(100); // 12289: over -> 3
    assert_eq!(pool.snapshot().tenant_soft_limit_exceeded_total["t"], 3);
    assert_eq!(t.soft_limit(), 10_000);
    t.set_soft_limit(1 << 20);
    let e = t.acquire(100); // under the new limit
    assert_eq!(pool.snapshot().tenant_soft_limit_exceeded_total["t"], 3);
    drop((a, b, r, d, e));
}

#[test]
fn hard_limit_refuses_above_and_allows_equal() {
    let pool = BufferPool::default();
    let t = pool.tenant("capped");
    assert_eq!(t.hard_limit(), None);
    t.set_hard_limit(Some(8192));
    let a = t.acquire(10);
    let b = t.acquire(10); // exactly at the limit: allowed
    assert_eq!(t.live_bytes(), 8192);
    let before = pool.snapshot();
    let err = t.try_acquire(10).unwrap_err();
    assert_eq!(
        err,
        PoolError::TenantHardLimit {
            tenant: "capped".into(),
            requested: 4096,
            live: 8192,
            limit: 8192,
            needed: 4096,
        }
    );
    let err = t.try_reserve(1).unwrap_err();
    assert!(matches!(
        err,
        PoolError::TenantHardLimit { requested: 1, .. }
    ));
    let after = pool.snapshot();
    assert_eq!(after.hard_limit_refusals_total["capped"], 2);
    // Nothing else moved.
    assert_eq!(after.live_bytes, before.live_bytes);
    assert_eq!(after.pool_misses, before.pool_misses);
    assert_eq!(after.pool_hits, before.pool_hits);
    assert_eq!(after.idle_slabs, before.idle_slabs);
    drop(a);
    let c = t.acquire(10);
    drop((b, c));
    assert_eq!(t.live_bytes(), 0);
}

#[test]
#[should_panic(expected = "try_acquire")]
fn tenant_acquire_panics_naming_try_acquire() {
    let pool = BufferPool::default();
    let t = pool.tenant("capped");
    t.set_hard_limit(Some(100));
    let _buf = t.acquire(10);
}

#[test]
#[should_panic(expected = "try_reserve")]
fn tenant_reserve_panics_naming_try_reserve() {
    let pool = BufferPool::default();
    let t = pool.tenant("capped");
    t.set_hard_limit(Some(100));
    let _r = t.reserve(101);
}

#[test]
fn pool_max_live_bytes_limits_every_buffer() {
    let pool = BufferPool::builder().max_live_bytes(3 * 4096).build();
    let t = pool.tenant("t");
    let a = pool.acquire(1);
    let b = t.acquire(1);
    let c = t.reserve(4096);
    let err = pool.try_acquire(1).unwrap_err();
    assert_eq!(
        err,
        PoolError::PoolLimit {
            requested: 4096,
            live: 3 * 4096,
            limit: 3 * 4096,
            needed: 4096,
        }
    );
    assert!(matches!(t.try_acquire(1), Err(PoolError::PoolLimit { .. })));
    let snap = pool.snapshot();
    assert_eq!(snap.pool_limit_refusals_total, 2);
    // The tenant's charge was rolled back when the pool refused.
    assert_eq!(snap.tenant_live_bytes["t"], 2 * 4096);
    drop((a, b, c));
    assert_eq!(pool.live_bytes(), 0);
}

#[test]
fn reservations_charge_exactly_and_count_as_reserved() {
    let pool = BufferPool::new(1 << 20);
    let t = pool.tenant("t");
    let r1 = t.reserve(1000);
    let r2 = t.reserve(0);
    let buf = t.acquire(1);
    let snap = pool.snapshot();
    assert_eq!(snap.reserved_bytes, 1000);
    assert_eq!(snap.live_bytes, 1000 + 4096);
    assert_eq!(r1.bytes(), 1000);
    assert_eq!(r1.tenant(), "t");
    drop((r1, r2, buf));
    let snap = pool.snapshot();
    assert_eq!(snap.reserved_bytes, 0);
    assert_eq!(snap.live_bytes, 0);
}

#[test]
fn reservations_that_could_wrap_a_counter_are_refused() {
    let pool = BufferPool::default();
    let t = pool.tenant("t");
    let max = i64::MAX as u64;
    // u64::MAX is refused outright: the pool keeps reservations below 2^63, so no sum of
    // its figures can wrap.
    let err = t.try_reserve(u64::MAX).unwrap_err();
    assert_eq!(
        err,
        PoolError::TooLarge {
            requested: u64::MAX,
            max
        }
    );
    let big = t.reserve(max);
    let err = t.try_reserve(1).unwrap_err();
    assert!(matches!(err, PoolError::TooLarge { requested: 1, .. }));
    // Another tenant cannot push the pool's total over either.
    assert!(pool.tenant("u").try_reserve(1).is_err());
    let snap = pool.snapshot();
    assert_eq!(snap.tenant_live_bytes["t"], max);
    assert_eq!(snap.tenant_live_bytes["u"], 0);
    assert_eq!(snap.live_bytes, max);
    assert_eq!(snap.too_large_total, 3);
    drop(big);
    assert_eq!(pool.live_bytes(), 0);
}

#[test]
fn handles_share_one_account() {
    let pool = BufferPool::default();
    let a = pool.tenant("same");
    let b = pool.tenant("same");
    let c = a.clone();
    let buf = b.acquire(1);
    assert_eq!(a.live_bytes(), 4096);
    assert_eq!(c.live_bytes(), 4096);
    pool.set_tenant_soft_limit("same", 5);
    assert_eq!(c.soft_limit(), 5);
    drop(buf);
}

#[test]
fn long_ids_and_the_reserved_id_go_to_the_overflow_tenant() {
    let pool = BufferPool::default();
    let long = "x".repeat(MAX_TENANT_ID_LEN + 1);
    let exact = "y".repeat(MAX_TENANT_ID_LEN);
    let t = pool.tenant(&long);
    assert!(t.is_overflow());
    assert_eq!(t.id(), OVERFLOW_TENANT_ID);
    assert!(!pool.tenant(&exact).is_overflow());
    assert!(pool.tenant(OVERFLOW_TENANT_ID).is_overflow());
    let buf = t.acquire(1);
    let snap = pool.snapshot();
    assert_eq!(snap.tenant_live_bytes[OVERFLOW_TENANT_ID], 4096);
    assert!(!snap.tenant_live_bytes.contains_key(&long));
    drop(buf);
}

#[test]
fn tenants_past_max_go_to_overflow_until_one_departs() {
    let pool = BufferPool::builder().max_tenants(2).build();
    let a = pool.tenant("a");
    let b = pool.tenant("b");
    let c = pool.tenant("c");
    assert!(!a.is_overflow() && !b.is_overflow());
    assert!(c.is_overflow());
    let buf = c.acquire(1);
    assert_eq!(pool.snapshot().tenant_live_bytes.len(), 3); // max + overflow
    drop(a); // "a" has no handle and no bytes: it may be evicted
    let d = pool.tenant("d");
    assert!(!d.is_overflow());
    let snap = pool.snapshot();
    assert!(!snap.tenant_live_bytes.contains_key("a"));
    assert_eq!(snap.tenant_live_bytes.len(), 3);
    drop(buf);
}

#[test]
fn accounts_with_bytes_or_limits_are_never_evicted() {
    let pool = BufferPool::builder().max_tenants(2).build();
    let held = pool.tenant("held").acquire(1); // bytes outstanding, handle dropped
    pool.set_tenant_soft_limit("configured", 123); // a limit set by hand
    assert!(pool.tenant("new").is_overflow());
    let snap = pool.snapshot();
    assert_eq!(snap.tenant_live_bytes["held"], 4096);
    assert!(snap.tenant_live_bytes.contains_key("configured"));
    drop(held);
}

#[test]
fn promotion_charges_the_tenant_one_net_difference() {
    let pool = BufferPool::new(1 << 30);
    let t = pool.tenant("t");
    let mut buf = t.acquire(10);
    buf.extend_from_slice(&[1; 5000]);
    assert_eq!(buf.class(), PoolClass::Medium);
    assert_eq!(t.live_bytes(), 64 * 1024);
    assert_eq!(pool.snapshot().tenant_outstanding_buffers["t"], 1);
    drop(buf);
    assert_eq!(t.live_bytes(), 0);
}
