//! `collect_body_chain` / `collect_body_chain_wait` (feature `http-body`), and chains that
//! wait while holding memory: one completes or fails with `waiting_helps()` false, never a
//! hang.

use std::convert::Infallible;
use std::future::Future;
use std::task::Context;
use std::time::Duration;

use axon_buffer::{BufferPool, CollectError, PoolClass, PoolError, PooledChain};
use bytes::Bytes;
use futures_util::stream;
use http_body::{Body, Frame};
use http_body_util::{Full, StreamBody};

mod common;
use common::assert_nothing_live;
#[path = "common/bodies.rs"]
mod bodies;
use bodies::{chunked, exact, pattern};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn pool() -> BufferPool {
    BufferPool::builder()
        .idle_decay_thread(false)
        .idle_timeout(None)
        .build()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// `data` in frames of `chunk` bytes, then an error.
fn failing(data: &Bytes, chunk: usize) -> StreamBody<bodies::Frames<std::io::Error>> {
    let mut frames = bodies::frames(data, chunk);
    frames.push(Err(std::io::Error::other("connection reset")));
    StreamBody::new(stream::iter(frames))
}

/// `data` in frames of `chunk` bytes, no size hint, yielding to the runtime before each
/// frame (a slow client), so bodies collected side by side interleave.
fn slow(data: Bytes, chunk: usize) -> impl Body<Data = Bytes, Error = Infallible> {
    let frames = stream::unfold(0usize, move |at| {
        let data = data.clone();
        async move {
            if at >= data.len() {
                return None;
            }
            tokio::task::yield_now().await;
            let end = (at + chunk).min(data.len());
            Some((Ok(Frame::data(data.slice(at..end))), end))
        }
    });
    StreamBody::new(Box::pin(frames))
}

fn flat(chain: PooledChain) -> Vec<u8> {
    let frozen = chain.freeze();
    let mut out = Vec::new();
    for segment in &frozen {
        out.extend_from_slice(segment);
    }
    out
}

/// The figures: an 8 MiB hard limit refuses a 5 MiB body into one buffer (a
/// 10 MiB Huge slab) and admits it into a chain, charged 5 MiB; with or without a length.
#[test]
fn a_5_mib_body_fits_an_8_mib_limit() {
    let pool = pool();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(8 * MIB as u64));
    let data = pattern(5 * MIB);
    current_thread().block_on(async {
        let err = t
            .collect_body(Full::new(data.clone()), 16 * MIB)
            .await
            .unwrap_err();
        assert!(matches!(err, CollectError::Pool(_)), "{err:?}");

        let chain = t
            .collect_body_chain(exact(&data, 16 * KIB), 16 * MIB)
            .await
            .unwrap();
        assert_eq!((chain.len(), chain.capacity()), (5 * MIB, 5 * MIB));
        assert_eq!(chain.segments(), 5); // Large slabs, taken from the hint
        assert_eq!(t.live_bytes(), 5 * MIB as u64);
        assert_eq!(flat(chain), data);

        let chain = t
            .collect_body_chain(chunked(&data, 16 * KIB), 16 * MIB)
            .await
            .unwrap();
        assert_eq!(chain.len(), 5 * MIB);
        assert_eq!(chain.capacity(), 5 * MIB); // 80 Medium slabs
        assert_eq!(chain.segments(), 80);
        assert_eq!(flat(chain), data);
    });
    let snap = pool.snapshot();
    assert_nothing_live(&snap);
    assert_eq!(snap.oversize_allocations_total, 0);
}

/// Bodies held at once under a 64 MiB limit: 21 of 3 MiB (6 as contiguous buffers), and a
/// 200 KiB body holds 256 KiB instead of a 1 MiB Large slab.
#[test]
fn charges_follow_the_payload() {
    let pool = pool();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(64 * MIB as u64));
    let data = pattern(3 * MIB);
    current_thread().block_on(async {
        let mut held = Vec::new();
        loop {
            match t.collect_body_chain(exact(&data, 64 * KIB), 16 * MIB).await {
                Ok(chain) => held.push(chain),
                Err(CollectError::Pool(err)) => {
                    assert!(err.waiting_helps(), "{err}");
                    break;
                }
                Err(err) => panic!("{err}"),
            }
        }
        assert_eq!(held.len(), 21);
        assert!(held.len() >= 18);
        assert_eq!(t.live_bytes(), 63 * MIB as u64);
        drop(held);

        let small = pattern(200 * KIB);
        for body in [exact(&small, 8 * KIB), exact(&small, 200 * KIB)] {
            let chain = t.collect_body_chain(body, MIB).await.unwrap();
            assert_eq!(chain.capacity(), 256 * KIB);
        }
        let chain = t
            .collect_body_chain(chunked(&small, 8 * KIB), MIB)
            .await
            .unwrap();
        assert_eq!(chain.capacity(), 256 * KIB);
        assert_eq!(flat(chain), small);

        let tiny = pattern(3000);
        let chain = t
            .collect_body_chain(chunked(&tiny, 1000), MIB)
            .await
            .unwrap();
        assert_eq!((chain.capacity(), chain.segments()), (4 * KIB, 1));
        let empty = t
            .collect_body_chain(Full::new(Bytes::new()), MIB)
            .await
            .unwrap();
        assert_eq!((empty.len(), empty.capacity()), (0, 0));
    });
    assert_nothing_live(&pool.snapshot());
}

/// A collected chain outlives every handle of its tenant: with none left, and the tenant's
/// account pressed for eviction by others registering past `max_tenants`, it still grows
/// charged to that tenant (also by a step that waits for the tenant's limit), and every
/// figure is exact when it drops. A chain collected from an empty body holds a handle and
/// does the same.
#[test]
fn a_collected_chain_outlives_its_tenant_handle() {
    let pool = BufferPool::builder()
        .idle_decay_thread(false)
        .idle_timeout(None)
        .max_tenants(4)
        .build();
    let rt = current_thread();
    let press_eviction = || {
        for i in 0..16 {
            drop(pool.tenant(&format!("other-{i}")));
        }
    };
    let tenant = pool.tenant("acme");
    let (mut chain, mut chunk) = rt.block_on(async {
        let chain = tenant.collect_body_chain(exact(&pattern(10 * KIB), 4 * KIB), MIB);
        let chunk = tenant.collect_body_chain_wait(chunked(&pattern(3000), 1000), MIB);
        (chain.await.unwrap(), chunk.await.unwrap())
    });
    drop(tenant); // no handle of "acme" is left: only the chains' segments hold it
    press_eviction();
    chain.try_extend_from_slice(&pattern(100 * KIB)).unwrap();
    rt.block_on(chunk.reserve_wait(200 * KIB)).unwrap();
    let held = [&chain, &chunk].map(|c| (c.tenant(), c.capacity()));
    assert_eq!(
        held,
        [
            (Some("acme"), 128 * KIB),
            (Some("acme"), 4 * KIB + 256 * KIB)
        ]
    );
    let snap = pool.snapshot();
    assert_eq!(snap.tenant_live_bytes["acme"], (388 * KIB) as u64);
    assert_eq!(snap.live_bytes, (388 * KIB) as u64);

    let tenant = pool.tenant("acme");
    let mut empty = rt
        .block_on(tenant.collect_body_chain_wait(Full::new(Bytes::new()), MIB))
        .unwrap();
    drop(tenant);
    press_eviction();
    empty.try_extend_from_slice(&pattern(3000)).unwrap();
    assert_eq!((empty.tenant(), empty.capacity()), (Some("acme"), 4 * KIB));

    // A step that waits, charged through the first segment: the tenant's limit is full
    // until `chunk` drops.
    let acme = pool.tenant("acme");
    assert_eq!(acme.live_bytes(), (392 * KIB) as u64);
    acme.set_hard_limit(Some((392 * KIB) as u64));
    rt.block_on(async {
        let release = async {
            assert_eq!(pool.snapshot().waiters, 1); // the step waits
            drop(chunk)
        };
        let (grown, ()) = tokio::join!(chain.reserve_wait(100 * KIB), release);
        grown.unwrap();
    });
    assert_eq!(chain.capacity(), 256 * KIB);
    assert_eq!(acme.live_bytes(), (260 * KIB) as u64);
    let frozen = chain.freeze();
    drop(empty);
    assert_eq!(acme.live_bytes(), (128 * KIB) as u64); // unwritten segments went back
    assert_eq!(frozen.to_bytes().len(), 110 * KIB);
    drop(frozen);
    assert_eq!(acme.live_bytes(), 0);
    assert_nothing_live(&pool.snapshot());
}

/// Past 10 MiB: 12 and 41 MiB bodies, with and without a length, never Oversize, every
/// byte in order, the bound kept.
#[test]
fn large_bodies_stay_in_the_lists() {
    let pool = pool();
    current_thread().block_on(async {
        for size in [12 * MIB, 41 * MIB + 5] {
            let data = pattern(size);
            for with_length in [true, false] {
                let chain = if with_length {
                    pool.collect_body_chain(exact(&data, 256 * KIB), 64 * MIB)
                        .await
                } else {
                    pool.collect_body_chain(chunked(&data, 256 * KIB), 64 * MIB)
                        .await
                }
                .unwrap();
                assert_eq!(chain.len(), size);
                assert!(chain.capacity() <= size + 64 * KIB, "{}", chain.capacity());
                if with_length {
                    assert!(chain.segments() <= 6, "{}", chain.segments());
                }
                assert_eq!(flat(chain), data);
            }
        }
    });
    let snap = pool.snapshot();
    assert_eq!(snap.oversize_allocations_total, 0);
    assert_nothing_live(&snap);
}

/// Errors charge nothing and keep nothing: the body failing midway, `max` passed midway or
/// by the hint, a limit refusing a later segment.
#[test]
fn errors_charge_nothing_and_keep_nothing() {
    let pool = pool();
    let t = pool.tenant("t");
    let data = pattern(300 * KIB);
    current_thread().block_on(async {
        let err = t
            .collect_body_chain(failing(&data, 16 * KIB), MIB)
            .await
            .unwrap_err();
        assert!(matches!(err, CollectError::Body(_)), "{err:?}");

        let err = t
            .collect_body_chain(chunked(&data, 16 * KIB), 100 * KIB)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CollectError::TooLarge { max, .. } if max == 100 * KIB),
            "{err:?}"
        );

        let before = pool.snapshot();
        let err = t
            .collect_body_chain(exact(&data, 16 * KIB), 100 * KIB)
            .await
            .unwrap_err();
        assert!(matches!(err, CollectError::TooLarge { .. }), "{err:?}");
        assert_eq!(pool.snapshot().pool_hits, before.pool_hits); // refused from the hint

        t.set_hard_limit(Some(200 * KIB as u64));
        let err = t
            .collect_body_chain_wait(chunked(&data, 16 * KIB), MIB)
            .await
            .unwrap_err();
        let CollectError::Pool(err) = err else {
            panic!("{err:?}")
        };
        assert!(!err.waiting_helps(), "300 KiB can never fit 200 KiB: {err}");
    });
    assert_nothing_live(&pool.snapshot());
}

/// `collect_body_chain_wait` waits for room held by someone else, then reads the body.
#[test]
fn waiting_collect_is_served_when_room_frees() {
    let pool = pool();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(MIB as u64));
    let data = pattern(600 * KIB);
    let chain = current_thread().block_on(async {
        let earlier = t.acquire(MIB);
        let upload = t.collect_body_chain_wait(chunked(&data, 16 * KIB), 2 * MIB);
        let release = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(earlier);
        };
        let (chain, ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(upload, release)
        })
        .await
        .expect("the waiting collect was never served");
        chain.unwrap()
    });
    assert_eq!(chain.capacity(), 640 * KIB);
    assert_eq!(flat(chain), data);
    assert_nothing_live(&pool.snapshot());
}

/// Two chains of one tenant each hold part of its limit and wait for more: one fails with
/// an error waiting cannot fix; once it lets go, the other completes.
#[test]
fn two_waiting_chains_of_one_tenant_never_hang() {
    let pool = pool();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(MIB as u64));
    let outcomes = current_thread().block_on(async {
        let grow = |mut chain: PooledChain| async move {
            chain.try_reserve(400 * KIB).unwrap(); // 7 Medium slabs: 448 KiB held
            tokio::task::yield_now().await;
            chain
                .reserve_wait(900 * KIB)
                .await
                .map(|()| chain.capacity())
        };
        let a = tokio::spawn(grow(t.chain()));
        let b = tokio::spawn(grow(t.chain()));
        tokio::time::timeout(Duration::from_secs(10), async {
            (a.await.unwrap(), b.await.unwrap())
        })
        .await
        .expect("two waiting chains waited for each other")
    });
    let outcomes = [outcomes.0, outcomes.1];
    let ok: Vec<_> = outcomes.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok, [&(960 * KIB)], "{outcomes:?}");
    let err = outcomes.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(!err.waiting_helps(), "{err}");
    assert!(matches!(err, PoolError::WaitDeadlock { .. }), "{err:?}");
    let snap = pool.snapshot();
    assert_eq!(snap.waiters, 0);
    assert_nothing_live(&snap);
}

/// The same under `max_live_bytes`, across tenants and untenanted.
#[test]
fn waiting_chains_never_hang_under_max_live_bytes() {
    let pool = BufferPool::builder()
        .max_live_bytes(MIB as u64)
        .idle_decay_thread(false)
        .build();
    let outcomes = current_thread().block_on(async {
        let grow = |mut chain: PooledChain| async move {
            chain.try_reserve(300 * KIB).unwrap(); // 5 Medium slabs: 320 KiB held
            tokio::task::yield_now().await;
            chain
                .reserve_wait(700 * KIB)
                .await
                .map(|()| chain.capacity())
        };
        let a = tokio::spawn(grow(pool.chain()));
        let b = tokio::spawn(grow(pool.tenant("b").chain()));
        let c = tokio::spawn(grow(pool.tenant("c").chain()));
        tokio::time::timeout(Duration::from_secs(10), async {
            [a.await.unwrap(), b.await.unwrap(), c.await.unwrap()]
        })
        .await
        .expect("waiting chains waited for each other")
    });
    // Each waits for its whole step (384 KiB) at once while holding 320 KiB: with all
    // 960 KiB live held by the three waiters, the youngest fails; its 320 KiB let one
    // other through, and that one's return the last.
    let ok: Vec<_> = outcomes.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok, [&(704 * KIB), &(704 * KIB)], "{outcomes:?}");
    for err in outcomes.iter().filter_map(|r| r.as_ref().err()) {
        assert!(!err.waiting_helps(), "{err}");
        assert!(matches!(err, PoolError::WaitDeadlock { .. }), "{err:?}");
    }
    let snap = pool.snapshot();
    assert_eq!(snap.waiters, 0);
    assert_nothing_live(&snap);
    assert_eq!(snap.idle_slabs[&PoolClass::Huge], 0);
}

/// Two chunked bodies collected with waiting, each held halfway into a tenant's limit:
/// one completes, the other fails with `waiting_helps()` false; never a hang.
#[test]
fn two_waiting_bodies_never_hang() {
    let pool = pool();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(MIB as u64));
    let data = pattern(700 * KIB);
    let outcomes = current_thread().block_on(async {
        let collect = |t: axon_buffer::Tenant, data: Bytes| async move {
            t.collect_body_chain_wait(slow(data, 64 * KIB), 2 * MIB)
                .await
                .map(|chain| chain.len())
        };
        let a = tokio::spawn(collect(t.clone(), data.clone()));
        let b = tokio::spawn(collect(t.clone(), data.clone()));
        tokio::time::timeout(Duration::from_secs(10), async {
            (a.await.unwrap(), b.await.unwrap())
        })
        .await
        .expect("two waiting bodies waited for each other")
    });
    let outcomes = [outcomes.0, outcomes.1];
    let done: Vec<_> = outcomes.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(done, [&(700 * KIB)], "{outcomes:?}");
    let err = outcomes.iter().find_map(|r| r.as_ref().err()).unwrap();
    let CollectError::Pool(err) = err else {
        panic!("{err:?}")
    };
    assert!(!err.waiting_helps(), "{err}");
    assert!(matches!(err, PoolError::WaitDeadlock { .. }), "{err:?}");
    assert_nothing_live(&pool.snapshot());
}

/// A body of known length waits for its whole charge at once and holds nothing while it
/// waits: under a saturated limit such bodies queue as contiguous buffers do, instead of
/// each holding part of its payload (which makes waiters fail with `WaitDeadlock`).
#[test]
fn a_body_of_known_length_holds_nothing_while_it_waits() {
    let pool = pool();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(MIB as u64));
    let holder = t.reserve(512 * KIB as u64); // exactly 512 KiB
    current_thread().block_on(async {
        let body = Full::new(Bytes::from(vec![7u8; 640 * KIB]));
        let waiting = t.collect_body_chain_wait(body, MIB);
        let mut waiting = Box::pin(waiting);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        // Waiting a segment at a time, it would hold 512 KiB of Medium segments here.
        assert_eq!(t.live_bytes(), 512 * KIB as u64);
        assert_eq!(pool.snapshot().waiters, 1);
        drop(holder);
        let chain = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("served once the holder dropped")
            .unwrap();
        assert_eq!((chain.capacity(), chain.segments()), (640 * KIB, 10));
        assert_eq!(t.live_bytes(), 640 * KIB as u64);
    });
    let snap = pool.snapshot();
    assert_eq!(snap.waiters, 0);
    assert_nothing_live(&snap);
}
