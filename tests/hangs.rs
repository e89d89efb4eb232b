//! Waiting never hangs (DESIGN.md "Waiting never hangs"): a waiter is woken whichever path
//! the freeing drop takes, a limit lowered under a queued waiter fails it at once, and
//! waits made while holding memory of the same limit never wait for each other forever.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axon_buffer::{BufferPool, PoolError, PooledBuf};

mod common;
use common::assert_nothing_live;

const KIB: usize = 1024;

/// Polls `fut` once with a waker that does nothing.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(Waker::noop()))
}

/// Polls a waiter that should be decided by now: a waiter granted its charge yields once
/// (its first poll after the grant wakes itself and returns `Pending`), so it gets up to
/// two polls. `Pending` means it still waits.
fn poll_decided<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    match poll_once(fut) {
        Poll::Pending => poll_once(fut),
        ready => ready,
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// A pool waiter is first polled while another thread drops the buffer that holds the
/// room, on its fast path (into that thread's stock). Whatever the interleaving, the
/// waiter is served by the time the drop is over: the pass that queues it takes the stocks
/// back after it tells fast drops to stop stocking, and looks again.
#[test]
fn a_pool_waiter_is_served_when_a_stocked_drop_races_its_first_poll() {
    let tries = if cfg!(miri) { 4 } else { 3000 };
    for attempt in 0..tries {
        let pool = BufferPool::builder().max_live_bytes(6000).build();
        let start = Arc::new(Barrier::new(2));
        let (dropped, done) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let dropper = std::thread::spawn({
            let (pool, start) = (pool.clone(), Arc::clone(&start));
            let (dropped, done) = (Arc::clone(&dropped), Arc::clone(&done));
            move || {
                // A cycle first, so this thread's magazine holds a Small unit and a stock:
                // the drop below takes the fast path, into the stock.
                drop(pool.acquire(4 * KIB));
                let held = pool.acquire(4 * KIB);
                start.wait();
                start.wait();
                // Sweep the drop across the waiter's first poll, a few ns at a time.
                for _ in 0..attempt % 400 {
                    std::hint::spin_loop();
                }
                drop(held);
                // Alive until the waiter was looked at: a thread's exit gives its stock
                // back and serves the waiters, which would hide a lost wakeup.
                dropped.wait();
                done.wait();
            }
        });
        start.wait();
        let mut waiter = Box::pin(pool.acquire_wait(4 * KIB));
        start.wait();
        let first = poll_once(&mut waiter);
        dropped.wait();
        let served = match first {
            Poll::Ready(result) => result,
            Poll::Pending => match poll_decided(&mut waiter) {
                Poll::Ready(result) => result,
                Poll::Pending => panic!(
                    "try {attempt}: the room was freed but the waiter still waits \
                     (live {}, waiters {})",
                    pool.snapshot().live_bytes,
                    pool.snapshot().waiters
                ),
            },
        };
        done.wait();
        dropper.join().unwrap();
        let buf = served.expect("4 KiB fit 6000 bytes at rest");
        assert_eq!(pool.snapshot().waiters, 0);
        drop(buf);
        drop(waiter);
        assert_nothing_live(&pool.snapshot());
        // Nobody waits: a try of anyone is served (no flag left set).
        drop(pool.try_acquire(4 * KIB).unwrap());
        drop(pool.tenant("other").try_acquire(100).unwrap());
    }
}

/// A hard limit lowered below what a queued waiter needs fails that waiter at once, with
/// an error waiting cannot fix, and it no longer holds up its tenant.
#[test]
fn a_limit_lowered_under_a_queued_waiter_fails_it_at_once() {
    let pool = BufferPool::builder().build();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(128 * KIB as u64));
    let held = [t.acquire(64 * KIB), t.acquire(64 * KIB)];
    let mut waiter = Box::pin(t.acquire_wait(64 * KIB));
    assert!(poll_once(&mut waiter).is_pending());
    assert_eq!(pool.snapshot().tenant_waiters["t"], 1);

    t.set_hard_limit(Some(32 * KIB as u64));
    match poll_once(&mut waiter) {
        Poll::Ready(Err(err @ PoolError::TenantHardLimit { .. })) => {
            assert!(!err.waiting_helps(), "{err}");
            assert!(
                matches!(err, PoolError::TenantHardLimit { needed, limit, .. }
                if needed == 64 * KIB as u64 && limit == 32 * KIB as u64)
            );
        }
        other => panic!("expected the waiter to fail at once, got {other:?}"),
    }
    let snap = pool.snapshot();
    assert_eq!(snap.waiters, 0);
    assert_eq!(snap.tenant_waiters["t"], 0);
    drop(held);
    drop(waiter);
    assert_nothing_live(&pool.snapshot());
    // Nothing holds the tenant up any more.
    drop(t.try_acquire(100).expect("4 KiB fit 32 KiB at live 0"));
    drop(
        t.try_reserve(1000)
            .expect("1000 bytes fit 32 KiB at live 0"),
    );
    assert_nothing_live(&pool.snapshot());
}

/// The same for `max_live_bytes`: a waiter the pool's limit can never hold fails at once
/// when a tenant's lower limit makes it impossible, and the pool's waiters go on.
#[test]
fn a_lowered_limit_fails_a_pool_waiter_too_and_the_next_is_served() {
    let pool = BufferPool::builder()
        .max_live_bytes(128 * KIB as u64)
        .build();
    let t = pool.tenant("t");
    let held = [pool.acquire(64 * KIB), pool.acquire(64 * KIB)];
    let mut big = Box::pin(t.acquire_wait(64 * KIB));
    let mut small = Box::pin(pool.acquire_wait(KIB));
    assert!(poll_once(&mut big).is_pending());
    assert!(poll_once(&mut small).is_pending());
    t.set_hard_limit(Some(16 * KIB as u64));
    assert!(matches!(
        poll_once(&mut big),
        Poll::Ready(Err(PoolError::TenantHardLimit { .. }))
    ));
    drop(held);
    let buf = match poll_decided(&mut small) {
        Poll::Ready(result) => result.unwrap(),
        Poll::Pending => panic!("the room is free: the pool waiter must be served"),
    };
    assert_eq!(buf.capacity(), 4 * KIB);
    drop(buf);
    drop((big, small));
    assert_nothing_live(&pool.snapshot());
}

/// Two buffers of one tenant each hold part of its limit and wait to grow into the rest.
/// One of them fails with an error waiting cannot fix; once it lets go, the other grows.
#[test]
fn two_growing_buffers_of_one_tenant_never_wait_for_each_other() {
    let pool = BufferPool::builder().build();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(1 << 20));
    let outcomes = current_thread().block_on(async {
        let grow = |mut buf: PooledBuf| async move {
            let grown = buf.reserve_wait(700 * KIB).await;
            grown.map(|()| buf.capacity())
        };
        let a = tokio::spawn(grow(t.acquire(64 * KIB)));
        let b = tokio::spawn(grow(t.acquire(64 * KIB)));
        tokio::time::timeout(Duration::from_secs(10), async {
            (a.await.unwrap(), b.await.unwrap())
        })
        .await
        .expect("two growing buffers waited for each other")
    });
    let (ok, failed): (Vec<_>, Vec<_>) = [outcomes.0, outcomes.1]
        .into_iter()
        .partition(Result::is_ok);
    assert_eq!(ok.len(), 1, "{ok:?} {failed:?}");
    assert_eq!(ok[0], Ok(1 << 20));
    let err = failed[0].clone().unwrap_err();
    assert!(!err.waiting_helps(), "{err}");
    assert!(matches!(err, PoolError::WaitDeadlock { .. }), "{err:?}");
    let snap = pool.snapshot();
    assert_eq!(snap.waiters, 0);
    assert_eq!(snap.hard_limit_refusals_total["t"], 1);
    assert_nothing_live(&snap);
}

/// The same under the pool's `max_live_bytes`, untenanted and across tenants.
#[test]
fn growing_buffers_never_wait_for_each_other_under_max_live_bytes() {
    let pool = BufferPool::builder().max_live_bytes(1 << 20).build();
    let outcomes = current_thread().block_on(async {
        let grow = |mut buf: PooledBuf| async move {
            let grown = buf.reserve_wait(700 * KIB).await;
            grown.map(|()| buf.capacity())
        };
        let a = tokio::spawn(grow(pool.acquire(64 * KIB)));
        let b = tokio::spawn(grow(pool.tenant("b").acquire(64 * KIB)));
        let c = tokio::spawn(grow(pool.tenant("c").acquire(64 * KIB)));
        tokio::time::timeout(Duration::from_secs(10), async {
            [a.await.unwrap(), b.await.unwrap(), c.await.unwrap()]
        })
        .await
        .expect("growing buffers waited for each other")
    });
    let grown = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!(grown, 1, "{outcomes:?}");
    for err in outcomes.iter().filter_map(|r| r.as_ref().err()) {
        assert!(!err.waiting_helps(), "{err}");
        assert!(matches!(err, PoolError::WaitDeadlock { .. }), "{err:?}");
    }
    let snap = pool.snapshot();
    assert_eq!(snap.waiters, 0);
    assert_eq!(snap.pool_limit_refusals_total, 2);
    assert_nothing_live(&snap);
}

/// A memory holder that is not waiting (a reservation) keeps the waiters waiting: it may
/// still let go. Nobody fails until it does, and then both are served in turn.
#[test]
fn a_holder_that_does_not_wait_is_no_deadlock() {
    let pool = BufferPool::builder().build();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(1 << 20));
    let reserved = t.reserve(900 * KIB as u64);
    let mut buf = t.acquire(64 * KIB);
    let mut grow = Box::pin(buf.reserve_wait(100 * KIB));
    assert!(poll_once(&mut grow).is_pending());
    assert!(poll_once(&mut grow).is_pending(), "the reservation may go");
    drop(reserved);
    assert_eq!(poll_decided(&mut grow), Poll::Ready(Ok(())));
    drop(grow);
    assert_eq!(buf.capacity(), 1 << 20);
    drop(buf);
    assert_nothing_live(&pool.snapshot());
}

/// Two chunked bodies (no length) of one tenant, collected with waiting under a 1 MiB
/// hard limit: each grows to 64 KiB, then waits to be promoted while holding it. One
/// completes, the other fails with an error waiting cannot fix, at once.
#[test]
fn two_chunked_bodies_of_one_tenant_never_wait_for_each_other() {
    use bytes::Bytes;
    use http_body_util::StreamBody;

    let pool = BufferPool::builder().build();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(1 << 20));
    // A frame at a time, yielding between frames as a socket would: the two bodies grow
    // side by side.
    let body = || {
        StreamBody::new(futures_util::stream::unfold(0, |sent| async move {
            if sent == 700 {
                return None;
            }
            tokio::task::yield_now().await;
            let frame = hyper::body::Frame::data(Bytes::from(vec![7u8; KIB]));
            Some((Ok::<_, std::io::Error>(frame), sent + 1))
        }))
    };
    let outcomes = current_thread().block_on(async {
        let collect = |t: axon_buffer::Tenant| async move {
            t.collect_body_wait(body(), 4 << 20)
                .await
                .map(|buf| buf.len())
        };
        let a = tokio::spawn(collect(t.clone()));
        let b = tokio::spawn(collect(t.clone()));
        tokio::time::timeout(Duration::from_secs(10), async {
            (a.await.unwrap(), b.await.unwrap())
        })
        .await
        .expect("two bodies waited for each other")
    });
    let (a, b) = outcomes;
    let (done, failed) = match (a, b) {
        (Ok(n), Err(e)) | (Err(e), Ok(n)) => (n, e),
        other => panic!("expected one body read and one refused, got {other:?}"),
    };
    assert_eq!(done, 700 * KIB);
    assert!(
        matches!(
            failed,
            axon_buffer::CollectError::Pool(PoolError::WaitDeadlock { .. })
        ),
        "{failed:?}"
    );
    assert_nothing_live(&pool.snapshot());
}

/// Waits are observable while they last and after they are given up: the time of waits
/// in progress counts, and a wait dropped by a timeout counts as abandoned, per tenant too.
#[test]
fn waits_in_progress_and_abandoned_waits_are_counted() {
    let pool = BufferPool::builder().build();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(4 * KIB as u64));
    let held = t.acquire(4 * KIB);
    current_thread().block_on(async {
        let waits: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_millis(60), t.acquire_wait(KIB)).await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let snap = pool.snapshot();
        assert_eq!(snap.waiters, 4);
        assert!(
            snap.tenant_wait_time_total["t"] >= Duration::from_millis(4 * 15),
            "four waits of 20 ms so far: {:?}",
            snap.tenant_wait_time_total["t"]
        );
        assert_eq!(snap.wait_time_total, snap.tenant_wait_time_total["t"]);
        assert_eq!(snap.waits_abandoned_total, 0);
        for wait in waits {
            let elapsed = wait.await.unwrap();
            assert!(elapsed.is_err(), "nothing freed room in time");
            let answer = axon_buffer::WaitElapsed::new(Duration::from_millis(60));
            assert_eq!(answer.status_code(), http::StatusCode::SERVICE_UNAVAILABLE);
        }
    });
    let snap = pool.snapshot();
    assert_eq!(snap.waiters, 0);
    assert_eq!(snap.waits_abandoned_total, 4);
    assert_eq!(snap.tenant_waits_abandoned_total["t"], 4);
    assert!(snap.tenant_wait_time_total["t"] >= Duration::from_millis(4 * 55));
    drop(held);
    assert_nothing_live(&pool.snapshot());
}
