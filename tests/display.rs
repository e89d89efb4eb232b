//! What a refusal says. The `Display` of every limit error (`PoolError`, `CollectError`)
//! names the charge asked for, what the buffer would hold in all, the live bytes and the
//! limit, and whether it can fit later; the HTTP reason text (feature `axum`) says what the
//! request is charged against which limit, never the tenant's id or the body's bytes.
//!
//! A buffer is charged its class's slab (4 KiB, 64 KiB, 1 MiB, 10 MiB; its exact size above
//! 10 MiB): a 5 MiB body is charged a 10 MiB Huge slab, which an 8 MiB hard limit refuses.

use std::error::Error as _;

use axon_buffer::{BufferPool, CollectError, PoolClass, PoolError};
use axum_core::response::IntoResponse;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A tenant "acme" with an 8 MiB hard limit.
fn acme(pool: &BufferPool) -> axon_buffer::Tenant {
    let tenant = pool.tenant("acme");
    tenant.set_hard_limit(Some(8 * MIB as u64));
    tenant
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// The status and the plain-text body of `response`.
fn answer(response: axum_core::response::Response) -> (StatusCode, String) {
    let status = response.status();
    let body = runtime().block_on(response.into_body().collect());
    let text = String::from_utf8(body.unwrap().to_bytes().to_vec()).unwrap();
    (status, text)
}

// ---------------------------------------------------------------------------------------
// PoolError's Display

#[test]
fn a_tenant_refusal_names_the_class_charge_the_live_bytes_and_the_limit() {
    let pool = BufferPool::default();
    let err = acme(&pool).try_acquire(5 * MIB).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tenant \"acme\" hard limit: a charge of 10 MiB (any buffer above 1 MiB up to 10 MiB \
         is charged its 10 MiB Huge slab) would take its live bytes from 0 bytes to 10 MiB, \
         past its limit of 8 MiB; never fits: 10 MiB is more than the limit itself"
    );
    assert!(!err.waiting_helps());
}

#[test]
fn a_tenant_refusal_that_fits_later_says_so() {
    let pool = BufferPool::default();
    let tenant = acme(&pool);
    let held = tenant.reserve((7 * MIB + 512 * KIB) as u64);
    let err = tenant.try_acquire(300_000).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tenant \"acme\" hard limit: a charge of 1 MiB (any buffer above 64 KiB up to 1 MiB \
         is charged its 1 MiB Large slab) would take its live bytes from 7.5 MiB to 8.5 MiB, \
         past its limit of 8 MiB; fits once other buffers and reservations drop"
    );
    assert!(err.waiting_helps());
    drop(held);
}

#[test]
fn a_growth_refusal_names_the_step_and_the_whole_buffer() {
    let pool = BufferPool::default();
    let mut buf = acme(&pool).acquire(MIB);
    buf.resize(MIB, 7);
    let err = buf.try_reserve(4 * MIB).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tenant \"acme\" hard limit: a charge of 9 MiB more, for a buffer of 10 MiB in all \
         (any buffer above 1 MiB up to 10 MiB is charged its 10 MiB Huge slab) would take its \
         live bytes from 1 MiB to 10 MiB, past its limit of 8 MiB; never fits: 10 MiB is \
         more than the limit itself"
    );
    assert_eq!(buf.class(), PoolClass::Large); // refused: nothing moved
}

#[test]
fn reservations_and_oversize_buffers_are_charged_exactly() {
    let pool = BufferPool::default();
    let tenant = acme(&pool);
    assert_eq!(
        tenant.try_reserve(9_000_000).unwrap_err().to_string(),
        "tenant \"acme\" hard limit: a charge of 9000000 bytes (8.6 MiB) would take its live \
         bytes from 0 bytes to 9000000 bytes (8.6 MiB), past its limit of 8 MiB; never fits: \
         9000000 bytes (8.6 MiB) is more than the limit itself"
    );
    assert_eq!(
        tenant.try_acquire(12 * MIB).unwrap_err().to_string(),
        "tenant \"acme\" hard limit: a charge of 12 MiB would take its live bytes from 0 bytes \
         to 12 MiB, past its limit of 8 MiB; never fits: 12 MiB is more than the limit itself"
    );
}

#[test]
fn a_pool_limit_refusal_names_the_same_figures() {
    let pool = BufferPool::builder().max_live_bytes(8 * MIB as u64).build();
    assert_eq!(
        pool.try_acquire(5 * MIB).unwrap_err().to_string(),
        "pool limit (max_live_bytes): a charge of 10 MiB (any buffer above 1 MiB up to 10 MiB \
         is charged its 10 MiB Huge slab) would take the pool's live bytes from 0 bytes to \
         10 MiB, past its limit of 8 MiB; never fits: 10 MiB is more than the limit itself"
    );
    let held: Vec<_> = (0..8).map(|_| pool.acquire(MIB)).collect();
    let err = pool.try_acquire(100).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pool limit (max_live_bytes): a charge of 4 KiB (any buffer up to 4 KiB is charged its \
         4 KiB Small slab) would take the pool's live bytes from 8 MiB to 8196 KiB, past its \
         limit of 8 MiB; fits once other buffers and reservations drop"
    );
    assert!(err.waiting_helps());
    drop(held);
}

#[test]
fn too_large_alloc_failed_and_wait_deadlock_name_their_figures() {
    let pool = BufferPool::builder().max_request_bytes(64 * MIB).build();
    assert_eq!(
        pool.try_acquire(100 * MIB).unwrap_err().to_string(),
        "a request of 100 MiB is too large (maximum 64 MiB)"
    );
    let overflow = PoolError::TooLarge {
        requested: u64::MAX,
        max: 64 * MIB as u64,
    };
    assert_eq!(
        overflow.to_string(),
        "a request whose size overflows is too large (maximum 64 MiB)"
    );
    let failed = PoolError::AllocFailed {
        class: PoolClass::Huge,
        bytes: 10 * MIB,
    };
    assert_eq!(
        failed.to_string(),
        "the allocator refused 10 MiB for a huge slab"
    );
    let deadlock = PoolError::WaitDeadlock {
        tenant: Some("acme".into()),
        requested: 9 * MIB as u64,
        held: MIB as u64,
        live: 8 * MIB as u64,
        limit: 8 * MIB as u64,
    };
    let shown = deadlock.to_string();
    for figure in ["\"acme\"", "8 MiB", "9 MiB", "1 MiB"] {
        assert!(shown.contains(figure), "{figure} missing from {shown:?}");
    }
}

#[test]
#[should_panic(
    expected = "a charge of 10 MiB (any buffer above 1 MiB up to 10 MiB is \
                           charged its 10 MiB Huge slab) would take its live bytes from 0 \
                           bytes to 10 MiB, past its limit of 8 MiB; never fits: 10 MiB is \
                           more than the limit itself (use Tenant::try_acquire"
)]
fn the_panic_of_acquire_carries_the_same_message() {
    let pool = BufferPool::default();
    let _buf = acme(&pool).acquire(5 * MIB);
}

// ---------------------------------------------------------------------------------------
// CollectError's Display and the HTTP reasons

#[test]
fn a_refused_body_logs_the_figures_once() {
    let pool = BufferPool::default();
    let tenant = acme(&pool);
    let body = Full::new(Bytes::from(vec![0u8; 5 * MIB]));
    let err = runtime()
        .block_on(tenant.collect_body(body, 16 * MIB))
        .unwrap_err();
    let CollectError::Pool(inner) = &err else {
        panic!("not a pool refusal: {err:?}");
    };
    assert_eq!(
        err.to_string(),
        format!("the pool refused memory for the request body: {inner}")
    );
    assert!(err.to_string().contains("a charge of 10 MiB"));
    // The figures are in the message, so a report of the chain prints them once.
    assert!(err.source().is_none());
    assert_eq!(pool.snapshot().live_bytes, 0);
}

#[test]
fn a_413_says_what_the_body_is_charged_against_the_tenant_limit() {
    let pool = BufferPool::default();
    let tenant = acme(&pool);
    let body = Full::new(Bytes::from(vec![0u8; 5 * MIB]));
    let err = runtime()
        .block_on(tenant.collect_body(body, 16 * MIB))
        .unwrap_err();
    let (status, text) = answer(err.into_response());
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        text,
        "request larger than the tenant's memory limit: this request is charged 10 MiB (any \
         buffer above 1 MiB up to 10 MiB is charged its 10 MiB Huge slab), more than the \
         tenant's 8 MiB hard limit\n"
    );
    assert!(!text.contains("acme"));
}

#[test]
fn a_429_says_what_the_tenant_holds() {
    let pool = BufferPool::default();
    let tenant = acme(&pool);
    let held = tenant.reserve(7 * MIB as u64 + 512 * KIB as u64);
    let (status, text) = answer(tenant.try_acquire(300_000).unwrap_err().into_response());
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        text,
        "the tenant's memory limit is reached: this request is charged 1 MiB (any buffer above \
         64 KiB up to 1 MiB is charged its 1 MiB Large slab) and the tenant holds 7.5 MiB of \
         its 8 MiB hard limit; retry later\n"
    );
    drop(held);
}

#[test]
fn pool_limit_answers_say_the_charge_not_what_others_hold() {
    let pool = BufferPool::builder().max_live_bytes(8 * MIB as u64).build();
    let (status, text) = answer(pool.try_acquire(5 * MIB).unwrap_err().into_response());
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        text,
        "request larger than the server's memory limit: this request is charged 10 MiB (any \
         buffer above 1 MiB up to 10 MiB is charged its 10 MiB Huge slab), more than the \
         server's 8 MiB limit\n"
    );
    let held: Vec<_> = (0..8).map(|_| pool.acquire(MIB)).collect();
    let (status, text) = answer(pool.try_acquire(100).unwrap_err().into_response());
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        text,
        "the server's memory limit is reached: this request is charged 4 KiB (any buffer up to \
         4 KiB is charged its 4 KiB Small slab); retry later\n"
    );
    drop(held);
}

#[test]
fn too_large_and_deadlock_answers_carry_their_figures() {
    let pool = BufferPool::builder().max_request_bytes(64 * MIB).build();
    let (status, text) = answer(pool.try_acquire(100 * MIB).unwrap_err().into_response());
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(text, "request too large: 100 MiB asked, at most 64 MiB\n");

    let deadlock = PoolError::WaitDeadlock {
        tenant: Some("acme".into()),
        requested: 9 * MIB as u64,
        held: MIB as u64,
        live: 8 * MIB as u64,
        limit: 8 * MIB as u64,
    };
    let response = deadlock.into_response();
    assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
    let (status, text) = answer(response);
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        text,
        "the tenant's memory limit is held by its waiting requests: this request's buffer \
         holds 1 MiB and needs 9 MiB more, and every byte under the 8 MiB limit is held by \
         requests waiting like it; retry later\n"
    );
}

#[test]
fn a_refused_guarantee_names_what_was_asked_the_others_and_the_budget() {
    let pool = axon_buffer::BufferPool::builder()
        .max_live_bytes(8 << 20)
        .build();
    pool.tenant("big").set_guarantee(Some(6 << 20)).unwrap();
    let err = pool
        .tenant("acme")
        .set_guarantee(Some(3 << 20))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tenant \"acme\" guarantee of 3 MiB: with the other tenants' 6 MiB it would set aside \
         more than the pool's max_live_bytes of 8 MiB"
    );
    assert!(!err.waiting_helps());
}
