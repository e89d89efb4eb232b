//! `collect_body` (feature `http-body`): how many acquisitions and promotions a body costs,
//! what is refused and how, that nothing is charged or kept on any error, the HTTP status
//! of each refusal, and (feature `axum`) the responses and a real loopback server.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use axon_buffer::{BufferPool, BufferPoolSnapshot, CollectError, PoolClass, PoolError};
use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::channel::Channel;
use http_body_util::{Full, StreamBody};

mod common;
use common::assert_nothing_live;
#[path = "common/bodies.rs"]
mod bodies;
use bodies::{chunked, exact, pattern, Exact};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn acquisitions(snap: &BufferPoolSnapshot, class: PoolClass) -> u64 {
    snap.pool_hits[&class] + snap.pool_misses[&class]
}

#[track_caller]
fn assert_same(got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "length");
    // Not assert_eq!: a failure would print megabytes.
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    assert_eq!(first, None, "first differing byte");
}

#[test]
fn collect_body_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let pool = BufferPool::default();
    let tenant = pool.tenant("acme");
    assert_send(&tenant.collect_body(Full::new(Bytes::new()), 1));
    assert_send(&pool.collect_body(chunked(&pattern(10), 3), 1));
}

#[tokio::test]
async fn exact_hint_is_one_acquire_in_the_final_class() {
    let cases = [
        (1000, PoolClass::Small, 4 * KIB),
        (50_000, PoolClass::Medium, 64 * KIB),
        (300_000, PoolClass::Large, MIB),
        (3 * MIB + 17, PoolClass::Huge, 10 * MIB),
        (12 * MIB, PoolClass::Oversize, 12 * MIB),
    ];
    for (len, class, capacity) in cases {
        let pool = BufferPool::default();
        let tenant = pool.tenant("acme");
        let data = pattern(len);
        // In 64 KiB frames, as hyper delivers a Content-Length body.
        let buf = tenant
            .collect_body(exact(&data, 64 * KIB), 16 * MIB)
            .await
            .unwrap();
        assert_same(&buf, &data);
        assert_eq!(
            (buf.class(), buf.capacity()),
            (class, capacity),
            "{len} bytes"
        );

        let snap = pool.snapshot();
        assert_eq!(snap.promotions_total, 0, "{len} bytes: promoted");
        assert_eq!(snap.acquisitions_total(), 1, "{len} bytes: acquisitions");
        if class != PoolClass::Oversize {
            assert_eq!(acquisitions(&snap, class), 1, "{len} bytes");
        }
        assert_eq!(snap.tenant_live_bytes["acme"], capacity as u64);
        drop(buf);
        assert_nothing_live(&pool.snapshot());
    }
}

#[tokio::test]
async fn full_body_is_one_acquire_of_its_length() {
    let pool = BufferPool::default();
    let data = pattern(300_000);
    let buf = pool
        .collect_body(Full::new(data.clone()), MIB)
        .await
        .unwrap();
    assert_same(&buf, &data);
    assert_eq!(buf.class(), PoolClass::Large);
    assert_eq!(buf.tenant(), None);
    let snap = pool.snapshot();
    assert_eq!(snap.pool_misses[&PoolClass::Large], 1);
    assert_eq!(snap.acquisitions_total(), 1);
    assert_eq!(snap.live_bytes, MIB as u64);
    drop(buf);
    assert_nothing_live(&pool.snapshot());
}

#[tokio::test]
async fn exact_hint_of_max_is_accepted() {
    let pool = BufferPool::default();
    let data = pattern(64 * KIB);
    let buf = pool
        .tenant("acme")
        .collect_body(exact(&data, 4000), 64 * KIB)
        .await
        .unwrap();
    assert_same(&buf, &data);
    assert_eq!(buf.class(), PoolClass::Medium);
    assert_eq!(pool.snapshot().promotions_total, 0);
}

#[tokio::test]
async fn empty_body_gives_an_empty_buffer() {
    let pool = BufferPool::default();
    let buf = pool
        .tenant("acme")
        .collect_body(Full::new(Bytes::new()), 0)
        .await
        .unwrap();
    assert!(buf.is_empty());
    assert_eq!(buf.class(), PoolClass::Small);
    assert_eq!(pool.snapshot().acquisitions_total(), 1);

    let none = chunked(&Bytes::new(), 10);
    let buf = pool.tenant("acme").collect_body(none, 0).await.unwrap();
    assert!(buf.is_empty());
}

#[tokio::test]
async fn chunked_body_grows_and_content_is_exact() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("acme");
    let data = pattern(3 * MIB + 123);
    let buf = tenant
        .collect_body(chunked(&data, 64 * KIB), 16 * MIB)
        .await
        .unwrap();
    assert_same(&buf, &data);
    assert_eq!(buf.class(), PoolClass::Huge);

    // The first buffer fits the first chunk (Medium), then Large, then Huge.
    let snap = pool.snapshot();
    assert_eq!(snap.promotions_total, 2);
    for class in [PoolClass::Medium, PoolClass::Large, PoolClass::Huge] {
        assert_eq!(acquisitions(&snap, class), 1, "{class:?}");
    }
    assert_eq!(acquisitions(&snap, PoolClass::Small), 0);
    assert_eq!(snap.tenant_live_bytes["acme"], 10 * MIB as u64);
    drop(buf);
    assert_nothing_live(&pool.snapshot());
}

#[tokio::test]
async fn chunked_body_of_small_ragged_frames() {
    let pool = BufferPool::default();
    let data = pattern(100_003);
    let buf = pool
        .tenant("acme")
        .collect_body(chunked(&data, 999), MIB)
        .await
        .unwrap();
    assert_same(&buf, &data);
    assert_eq!(buf.class(), PoolClass::Large);
    let snap = pool.snapshot();
    // Small (the first 999 bytes), Medium, Large.
    assert_eq!(snap.promotions_total, 2);
    assert_eq!(acquisitions(&snap, PoolClass::Small), 1);
}

#[tokio::test]
async fn trailers_and_empty_frames_are_skipped() {
    let pool = BufferPool::default();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let frames: Vec<Result<_, Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b""))),
        Ok(Frame::data(Bytes::from_static(b"hello "))),
        Ok(Frame::data(Bytes::from_static(b"world"))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = StreamBody::new(stream::iter(frames));
    let buf = pool.tenant("acme").collect_body(body, 64).await.unwrap();
    assert_eq!(&buf[..], b"hello world");
    assert_eq!(pool.snapshot().acquisitions_total(), 1);
}

#[tokio::test]
async fn hint_above_max_is_refused_with_nothing_acquired() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("acme");
    let err = tenant
        .collect_body(Full::new(pattern(2 * MIB)), MIB)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CollectError::TooLarge { max, at_least } if max == MIB && at_least == 2 * MIB as u64),
        "{err:?}"
    );
    assert_eq!(err.status_code(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(err.retry_after(), None);

    // A lower bound alone (no upper) passing max is refused the same way.
    let mut hint = SizeHint::new();
    hint.set_lower(MIB as u64 + 1);
    struct Lower(SizeHint);
    impl Body for Lower {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            panic!("a body refused from its hint is never read")
        }
        fn size_hint(&self) -> SizeHint {
            self.0
        }
    }
    let err = tenant.collect_body(Lower(hint), MIB).await.unwrap_err();
    assert!(matches!(err, CollectError::TooLarge { at_least, .. } if at_least == MIB as u64 + 1));

    let snap = pool.snapshot();
    assert_eq!(snap.acquisitions_total(), 0);
    assert_eq!(snap.promotions_total, 0);
    assert_nothing_live(&snap);
}

#[tokio::test]
async fn body_longer_than_max_is_refused_and_nothing_kept() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("acme");
    let err = tenant
        .collect_body(chunked(&pattern(2 * MIB), 64 * KIB), MIB)
        .await
        .unwrap_err();
    // Refused at the frame that passed max, without reading the rest.
    assert!(
        matches!(err, CollectError::TooLarge { max, at_least } if max == MIB && at_least == (MIB + 64 * KIB) as u64),
        "{err:?}"
    );
    assert_eq!(err.status_code(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(tenant.live_bytes(), 0);
    let snap = pool.snapshot();
    assert!(snap.acquisitions_total() > 0);
    assert_nothing_live(&snap);

    // A Content-Length that lies low: the bytes delivered count, not the hint.
    let lying = Exact {
        body: chunked(&pattern(200), 50),
        hint: 100,
    };
    let err = tenant.collect_body(lying, 150).await.unwrap_err();
    assert!(
        matches!(
            err,
            CollectError::TooLarge {
                max: 150,
                at_least: 200
            }
        ),
        "{err:?}"
    );
    assert_nothing_live(&pool.snapshot());
}

#[tokio::test]
async fn body_error_is_the_body_variant_and_nothing_kept() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("acme");

    // 300 KiB arrive, then the connection breaks.
    let (mut sender, body) = Channel::<Bytes, std::io::Error>::new(8);
    let data = pattern(300 * KIB);
    for at in (0..data.len()).step_by(100 * KIB) {
        sender
            .try_send(Frame::data(data.slice(at..at + 100 * KIB)))
            .unwrap();
    }
    sender.abort(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "peer went away",
    ));
    let err = tenant.collect_body(body, 16 * MIB).await.unwrap_err();
    let CollectError::Body(ref source) = err else {
        panic!("expected the body variant, got {err:?}");
    };
    assert_eq!(source.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(
        std::error::Error::source(&err).map(ToString::to_string),
        Some("peer went away".to_owned())
    );
    assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
    assert_eq!(err.retry_after(), None);
    assert_eq!(tenant.live_bytes(), 0);
    let snap = pool.snapshot();
    assert!(snap.acquisitions_total() > 0);
    assert_nothing_live(&snap);

    // An error before any data: no buffer was ever taken.
    let pool = BufferPool::default();
    let (sender, body) = Channel::<Bytes, std::io::Error>::new(1);
    sender.abort(std::io::Error::other("refused"));
    let err = pool
        .tenant("acme")
        .collect_body(body, MIB)
        .await
        .unwrap_err();
    assert!(matches!(err, CollectError::Body(_)));
    assert_eq!(pool.snapshot().acquisitions_total(), 0);
}

#[tokio::test]
async fn tenant_hard_limit_is_the_pool_variant() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("capped");
    tenant.set_hard_limit(Some(MIB as u64));

    // The tenant is at its limit: this small body fits once the held buffer drops.
    let held = tenant.acquire(MIB);
    let err = tenant
        .collect_body(Full::new(pattern(10 * KIB)), 16 * MIB)
        .await
        .unwrap_err();
    let CollectError::Pool(ref refusal) = err else {
        panic!("expected the pool variant, got {err:?}");
    };
    assert!(
        matches!(refusal, PoolError::TenantHardLimit { .. }),
        "{refusal:?}"
    );
    assert!(refusal.waiting_helps());
    assert_eq!(err.status_code(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    drop(held);
    assert_eq!(tenant.live_bytes(), 0);

    // 2 MiB with Content-Length: never fits 1 MiB.
    let err = tenant
        .collect_body(Full::new(pattern(2 * MIB)), 16 * MIB)
        .await
        .unwrap_err();
    let CollectError::Pool(ref refusal) = err else {
        panic!("expected the pool variant, got {err:?}");
    };
    assert!(
        matches!(refusal, PoolError::TenantHardLimit { needed, limit, .. } if *needed > *limit && *limit == MIB as u64),
        "{refusal:?}"
    );
    assert!(!refusal.waiting_helps());
    assert_eq!(err.status_code(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(err.retry_after(), None);

    // The same body chunked: it grows to Large (1 MiB, equal to the limit, allowed), and
    // the step to Huge is refused; the buffer it had is dropped.
    let err = tenant
        .collect_body(chunked(&pattern(2 * MIB), 64 * KIB), 16 * MIB)
        .await
        .unwrap_err();
    let CollectError::Pool(ref refusal) = err else {
        panic!("expected the pool variant, got {err:?}");
    };
    assert!(!refusal.waiting_helps(), "{refusal:?}");
    assert_eq!(err.status_code(), StatusCode::PAYLOAD_TOO_LARGE);

    let snap = pool.snapshot();
    assert_eq!(snap.hard_limit_refusals_total["capped"], 3);
    assert_nothing_live(&snap);
    // Nothing was left charged: the whole limit can be reserved at rest.
    drop(tenant.try_reserve(MIB as u64).unwrap());
}

#[tokio::test]
async fn pool_limits_are_the_pool_variant() {
    // max_live_bytes: waiting helps -> 503 with a retry hint.
    let pool = BufferPool::builder().max_live_bytes(MIB as u64).build();
    let held = pool.acquire(MIB);
    let err = pool
        .collect_body(Full::new(pattern(100)), MIB)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CollectError::Pool(PoolError::PoolLimit { .. })),
        "{err:?}"
    );
    assert_eq!(err.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    drop(held);
    // ... and never fits -> 413.
    let err = pool
        .collect_body(Full::new(pattern(2 * MIB)), 16 * MIB)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CollectError::Pool(PoolError::PoolLimit { .. })),
        "{err:?}"
    );
    assert_eq!(err.status_code(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_nothing_live(&pool.snapshot());

    // max_request_bytes below the body's max: the pool's TooLarge, 413.
    let pool = BufferPool::builder().max_request_bytes(MIB).build();
    let err = pool
        .tenant("acme")
        .collect_body(Full::new(pattern(2 * MIB)), 16 * MIB)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CollectError::Pool(PoolError::TooLarge { .. })),
        "{err:?}"
    );
    assert_eq!(err.status_code(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(err.retry_after(), None);
    assert_nothing_live(&pool.snapshot());
}

/// A buffer or chain holding more than `max_request_bytes` (a lower-bound hint of 4500
/// bytes takes a 64 KiB slab) still refuses the bytes past it: a body that sends more than
/// its hint is `TooLarge` at `max_request_bytes`, with room left in the slab, in every
/// collect form, and nothing is kept.
#[tokio::test]
async fn max_request_bytes_bounds_a_body_within_its_slab() {
    let pool = BufferPool::builder().max_request_bytes(5000).build();
    let tenant = pool.tenant("acme");
    let data = pattern(6000);
    let lying = || Exact {
        body: chunked(&data, 1500),
        hint: 4500,
    };
    let errors = [
        tenant.collect_body(lying(), MIB).await.err(),
        tenant.collect_body_wait(lying(), MIB).await.err(),
        tenant.collect_body_chain(lying(), MIB).await.err(),
        tenant.collect_body_chain_wait(lying(), MIB).await.err(),
    ];
    for err in errors {
        assert!(
            matches!(err, Some(CollectError::Pool(PoolError::TooLarge { .. }))),
            "{err:?}"
        );
    }
    let snap = pool.snapshot();
    assert_eq!(acquisitions(&snap, PoolClass::Medium), 4); // the slabs were taken
    assert_nothing_live(&snap);
}

/// A body whose frames are all ready at once is not copied in one poll: after each MiB
/// copied, `collect_body` and `collect_body_chain` wake their task and return `Pending`, so
/// one large upload does not hold an executor's thread for its whole copy.
#[test]
fn collecting_yields_after_each_mib_copied() {
    struct Wakes(AtomicUsize);
    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }
    /// Polls `fut` to the end: its output and how often it returned `Pending`, checking
    /// that each `Pending` woke the task first.
    fn polled<F: Future>(fut: F) -> (F::Output, usize) {
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let mut fut = pin!(fut);
        let mut pending = 0;
        loop {
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(out) => return (out, pending),
                Poll::Pending => {
                    pending += 1;
                    assert_eq!(wakes.0.load(Relaxed), pending, "a yield wakes its task");
                }
            }
        }
    }

    let pool = BufferPool::default();
    let tenant = pool.tenant("acme");
    let data = pattern(3 * MIB + 100);
    let (buf, pending) = polled(tenant.collect_body(exact(&data, 16 * KIB), 4 * MIB));
    assert_same(&buf.unwrap(), &data);
    assert_eq!(pending, 3, "a yield after each of the 3 whole MiB");
    let (chain, pending) = polled(tenant.collect_body_chain(chunked(&data, 16 * KIB), 4 * MIB));
    assert_same(&chain.unwrap().freeze().to_bytes(), &data);
    assert_eq!(pending, 3, "a yield after each of the 3 whole MiB");
    let (buf, pending) = polled(tenant.collect_body(exact(&data.slice(..MIB), 16 * KIB), MIB));
    assert_eq!(buf.unwrap().len(), MIB);
    assert_eq!(pending, 0, "the body ends with its first MiB");
    assert_nothing_live(&pool.snapshot());
}

/// The yield after each MiB wakes the task through the waker it was polled with, whatever
/// runs it: a collect driven by another executor on a tokio worker thread (here
/// `futures::executor::block_on` inside a task) completes. A yield through
/// `tokio::task::yield_now` (tried on 2026-12-07) hands the wake to the tokio worker,
/// which never gets it back while its task blocks, and this hung.
#[test]
fn collecting_under_another_executor_on_a_tokio_worker_completes() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let len = rt.block_on(async {
            tokio::spawn(async {
                let pool = BufferPool::default();
                let tenant = pool.tenant("acme");
                let data = pattern(4 * MIB);
                let body = chunked(&data, 64 * KIB);
                let buf = futures_executor::block_on(tenant.collect_body(body, 8 * MIB));
                let len = buf.unwrap().len();
                assert_nothing_live(&pool.snapshot());
                len
            })
            .await
            .unwrap()
        });
        done.send(len).unwrap();
    });
    let len = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the collect never woke again");
    assert_eq!(len, 4 * MIB);
}

#[test]
fn status_code_of_every_error() {
    let refusals = [
        (
            PoolError::TooLarge {
                requested: 2,
                max: 1,
            },
            413,
            None,
        ),
        (
            PoolError::AllocFailed {
                class: PoolClass::Huge,
                bytes: 10 * MIB,
            },
            503,
            None,
        ),
        (
            PoolError::TenantHardLimit {
                tenant: "a".into(),
                requested: 10,
                live: 95,
                limit: 100,
                needed: 10,
            },
            429,
            Some(1),
        ),
        (
            PoolError::TenantHardLimit {
                tenant: "a".into(),
                requested: 200,
                live: 0,
                limit: 100,
                needed: 200,
            },
            413,
            None,
        ),
        (
            PoolError::PoolLimit {
                requested: 10,
                live: 95,
                limit: 100,
                needed: 100,
            },
            503,
            Some(1),
        ),
        (
            PoolError::PoolLimit {
                requested: 10,
                live: 95,
                limit: 100,
                needed: 101,
            },
            413,
            None,
        ),
        (PoolError::GlobalAlreadyInitialized, 500, None),
    ];
    for (err, status, retry) in refusals {
        let retry = retry.map(Duration::from_secs);
        assert_eq!(err.status_code().as_u16(), status, "{err:?}");
        assert_eq!(err.retry_after(), retry, "{err:?}");
        let wrapped = CollectError::<Infallible>::from(err.clone());
        assert_eq!(wrapped.status_code().as_u16(), status, "{err:?}");
        assert_eq!(wrapped.retry_after(), retry, "{err:?}");
    }
    let broken = CollectError::Body(std::io::Error::other("reset"));
    assert_eq!(broken.status_code(), StatusCode::BAD_REQUEST);
    let large = CollectError::<Infallible>::TooLarge {
        max: 1,
        at_least: 2,
    };
    assert_eq!(large.status_code(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        large.to_string(),
        "request body of at least 2 bytes passes the 1-byte maximum"
    );
}

/// The hard limit does not refuse what fits it: 41 MiB arriving in 64 KiB chunks, with no
/// size hint, under a 64 MiB hard limit (and a 64 MiB `max`). Growth by doubling alone
/// would take the buffer to 80 MiB on the way; it must grow only to what is needed once
/// doubling would pass the limit.
#[tokio::test]
async fn chunked_41_mib_upload_fits_a_64_mib_hard_limit() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("uploader");
    tenant.set_hard_limit(Some(64 * MIB as u64));
    let data = pattern(41 * MIB);
    let result = tenant
        .collect_body(chunked(&data, 64 * KIB), 64 * MIB)
        .await;
    let buf = result.expect("a 41 MiB chunked upload fits a 64 MiB hard limit");
    assert_same(&buf, &data);
    assert!(buf.capacity() <= 64 * MIB, "capacity {}", buf.capacity());
    assert!(tenant.live_bytes() <= 64 * MIB as u64);
    let refusals = pool
        .snapshot()
        .hard_limit_refusals_total
        .get("uploader")
        .copied();
    assert_eq!(refusals.unwrap_or(0), 0);
    drop(buf);
    assert_nothing_live(&pool.snapshot());
}

/// Growth never doubles past the body's `max`: a 41 MiB chunked upload with `max` 45 MiB
/// ends in a buffer of at most 45 MiB (doubling from 40 MiB would ask 80).
#[tokio::test]
async fn growth_stops_at_max() {
    let pool = BufferPool::default();
    let data = pattern(41 * MIB);
    let buf = pool
        .collect_body(chunked(&data, 256 * KIB), 45 * MIB)
        .await
        .unwrap();
    assert_same(&buf, &data);
    assert!(buf.capacity() <= 45 * MIB, "capacity {}", buf.capacity());
    assert_eq!(pool.snapshot().live_bytes, buf.capacity() as u64);
}

/// `collect_body_wait`: the first buffer and each growth step wait for the tenant's room
/// (the body is not read meanwhile); what can never fit fails at once; a wait cut short by
/// a timeout charges nothing.
#[tokio::test]
async fn collect_body_wait_waits_for_room() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("waiter");
    tenant.set_hard_limit(Some(12 * MIB as u64)); // one Huge (10 MiB) slab and change
    let data = pattern(1536 * KIB); // a Huge buffer

    // The first buffer waits: a Huge buffer is held.
    let held = tenant.acquire(2 * MIB);
    let upload = tenant.collect_body_wait(exact(&data, 64 * KIB), 16 * MIB);
    let (buf, ()) = tokio::join!(upload, async {
        tokio::task::yield_now().await;
        drop(held);
    });
    let buf = buf.unwrap();
    assert_same(&buf, &data);
    assert!(pool.snapshot().tenant_wait_time_total["waiter"] > Duration::ZERO);
    drop(buf);

    // A growth step waits: a chunked body grows to Large, then waits for its Huge step
    // while a Huge buffer is held.
    let held = tenant.acquire(2 * MIB);
    let upload = tenant.collect_body_wait(chunked(&data, 64 * KIB), 16 * MIB);
    let (buf, ()) = tokio::join!(upload, async {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        drop(held);
    });
    let buf = buf.unwrap();
    assert_same(&buf, &data);
    assert_eq!(buf.class(), PoolClass::Huge);
    drop(buf);

    // Never fits the limit: at once, a pool refusal waiting cannot help.
    let big = pattern(13 * MIB);
    let err = tenant
        .collect_body_wait(exact(&big, 256 * KIB), 16 * MIB)
        .await
        .unwrap_err();
    match err {
        CollectError::Pool(err) => assert!(!err.waiting_helps(), "{err}"),
        other => panic!("{other}"),
    }

    // Cut short: nothing charged, nobody left waiting.
    let held = tenant.acquire(2 * MIB);
    let waited = tokio::time::timeout(
        Duration::from_millis(20),
        tenant.collect_body_wait(exact(&data, 64 * KIB), 16 * MIB),
    )
    .await;
    assert!(waited.is_err());
    assert_eq!(tenant.live_bytes(), 10 * MIB as u64, "only the held buffer");
    drop(held);
    let snap = pool.snapshot();
    assert_nothing_live(&snap);
    assert_eq!(snap.waiters, 0);
}

#[cfg(feature = "axum")]
mod axum_responses {
    use axum_core::response::IntoResponse;
    use http_body_util::BodyExt;

    use super::*;

    async fn text(response: axum_core::response::Response) -> String {
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn refusals_answer_with_status_retry_after_and_a_reason() {
        let pool = BufferPool::default();
        let tenant = pool.tenant("secret-tenant-id");
        tenant.set_hard_limit(Some(MIB as u64));
        let held = tenant.acquire(MIB);
        let err = tenant
            .collect_body(Full::new(Bytes::from_static(b"private payload")), MIB)
            .await
            .unwrap_err();
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        let reason = text(response).await;
        assert_eq!(
            reason,
            "the tenant's memory limit is reached: this request is charged 4 KiB (any buffer \
             up to 4 KiB is charged its 4 KiB Small slab) and the tenant holds 1 MiB of its \
             1 MiB hard limit; retry later\n"
        );
        assert!(!reason.contains("secret-tenant-id") && !reason.contains("private payload"));
        drop(held);

        // Never fits: 413, no Retry-After.
        let err = tenant
            .collect_body(Full::new(pattern(2 * MIB)), 16 * MIB)
            .await
            .unwrap_err();
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(response.headers().get(http::header::RETRY_AFTER).is_none());
        assert_eq!(
            text(response).await,
            "request larger than the tenant's memory limit: this request is charged 10 MiB \
             (any buffer above 1 MiB up to 10 MiB is charged its 10 MiB Huge slab), more than \
             the tenant's 1 MiB hard limit\n"
        );

        // The plain PoolError answers the same way.
        let response = PoolError::PoolLimit {
            requested: 1,
            live: 100,
            limit: 100,
            needed: 1,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
    }

    #[tokio::test]
    async fn body_errors_and_max_answer_400_and_413() {
        let broken = CollectError::Body(std::io::Error::other("secret detail"));
        let response = broken.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get(http::header::RETRY_AFTER).is_none());
        assert_eq!(text(response).await, "broken request body\n");

        let large = CollectError::<Infallible>::TooLarge {
            max: 1024,
            at_least: 4096,
        };
        let response = large.into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            text(response).await,
            "request body too large: at most 1 KiB\n"
        );
    }
}

/// The same over real HTTP: an axum server on loopback, hyper's client.
#[cfg(feature = "axum")]
mod over_http {
    use axum::body::Body as AxumBody;
    use axum::extract::{Path, State};
    use axum::routing::post;
    use axum::Router;
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    use super::*;

    async fn ingest(
        State(pool): State<BufferPool>,
        Path(tenant): Path<String>,
        body: AxumBody,
    ) -> Result<Bytes, CollectError<axum::Error>> {
        let mut body = body;
        match pool.tenant(&tenant).collect_body(&mut body, 16 * MIB).await {
            Ok(buf) => Ok(buf.freeze()), // echoed back, from the pooled slab
            Err(err) => {
                // hyper closes a connection whose request body was left unread, and a
                // client still sending would see the reset, not this answer: read the
                // rest first (bounded in time).
                let rest = async { while let Some(Ok(_)) = body.frame().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(5), rest).await;
                Err(err)
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn content_length_is_one_acquire_and_chunked_grows() {
        let pool = BufferPool::default();
        pool.tenant("capped").set_hard_limit(Some(4 * MIB as u64));
        let app = Router::new()
            .route("/ingest/{tenant}", post(ingest))
            .with_state(pool.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::builder(TokioExecutor::new()).build_http();
        let url = |tenant: &str| format!("http://{addr}/ingest/{tenant}");

        // Content-Length: hyper's body has an exact hint, so one Huge acquire.
        let data = pattern(3 * MIB);
        let request = http::Request::post(url("acme"))
            .body(Full::new(data.clone()).boxed())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_same(
            &response.into_body().collect().await.unwrap().to_bytes(),
            &data,
        );
        let snap = pool.snapshot();
        assert_eq!(snap.promotions_total, 0);
        assert_eq!(snap.acquisitions_total(), 1);
        assert_eq!(acquisitions(&snap, PoolClass::Huge), 1);

        // Chunked (no Content-Length): grows, content exact.
        let request = http::Request::post(url("acme"))
            .body(chunked(&data, 64 * KIB).boxed())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_same(
            &response.into_body().collect().await.unwrap().to_bytes(),
            &data,
        );
        assert!(pool.snapshot().promotions_total > 0);

        // 5 MiB never fits a 4 MiB hard limit: 413 before any of the body is collected.
        let request = http::Request::post(url("capped"))
            .body(Full::new(pattern(5 * MIB)).boxed())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(pool.snapshot().acquisitions_total(), 4); // none for the refused body

        server.abort();
        assert_nothing_live(&pool.snapshot());
    }
}
