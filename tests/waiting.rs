//! Waiting for room instead of refusing (DESIGN.md "Waiting"): `Tenant::acquire_wait`,
//! `Tenant::reserve_wait`, `BufferPool::acquire_wait`, `PooledBuf::reserve_wait`.
//!
//! The order tests run on a current-thread tokio runtime, where "spawn, then yield" puts
//! each waiter in the queue in a known order. The stress test runs 64 tasks of 8 tenants
//! on a multi-thread runtime; one test runs on `futures-executor`, woken from a plain
//! thread.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axon_buffer::{BufferPool, PoolError, PooledBuf, Tenant};

mod common;
use common::assert_nothing_live;

const KIB: usize = 1024;

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// A tenant with hard limit `limit` in a pool of its own.
fn capped(limit: usize) -> (BufferPool, Tenant) {
    let pool = BufferPool::builder().build();
    let tenant = pool.tenant("t");
    tenant.set_hard_limit(Some(limit as u64));
    (pool, tenant)
}

/// Polls `fut` once with a waker that does nothing.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::pin::Pin::new(fut).poll(&mut Context::from_waker(Waker::noop()))
}

/// Whether a waiter still waits: two polls, both `Pending`. (A granted waiter's first poll
/// after the grant returns `Pending` too, once: it yields; the second would be `Ready`.)
fn still_waits<F: Future + Unpin>(fut: &mut F) -> bool {
    poll_once(fut).is_pending() && poll_once(fut).is_pending()
}

/// Lets every spawned task run until it waits.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[test]
fn a_waiter_gets_its_buffer_when_the_tenant_drops_one() {
    let (pool, tenant) = capped(8 * KIB);
    current_thread().block_on(async {
        let held = [tenant.acquire(KIB), tenant.acquire(KIB)];
        let waiter = tokio::spawn({
            let tenant = tenant.clone();
            async move { tenant.acquire_wait(KIB).await }
        });
        settle().await;
        assert!(!waiter.is_finished(), "8 KiB are live: the waiter waits");
        let snap = pool.snapshot();
        assert_eq!(snap.waiters, 1);
        assert_eq!(snap.tenant_waiters["t"], 1);
        assert_eq!(
            snap.hard_limit_refusals_total["t"], 0,
            "a waiter is no refusal"
        );
        drop(held);
        let buf = waiter.await.unwrap().unwrap();
        assert_eq!(buf.tenant(), Some("t"));
        assert_eq!(tenant.live_bytes(), 4096);
        let snap = pool.snapshot();
        assert_eq!(snap.waiters, 0);
        assert_eq!(snap.tenant_waiters["t"], 0);
        assert!(snap.tenant_wait_time_total["t"] > Duration::ZERO);
        assert_eq!(snap.wait_time_total, snap.tenant_wait_time_total["t"]);
    });
    assert_nothing_live(&pool.snapshot());
}

#[test]
fn waiters_of_a_tenant_are_served_in_arrival_order() {
    let (pool, tenant) = capped(4 * KIB); // one Small buffer at a time
    let served = Arc::new(Mutex::new(Vec::new()));
    current_thread().block_on(async {
        let held = tenant.acquire(1);
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (tenant, served) = (tenant.clone(), Arc::clone(&served));
            tasks.push(tokio::spawn(async move {
                let buf = tenant.acquire_wait(100).await.unwrap();
                served.lock().unwrap().push(i);
                tokio::task::yield_now().await; // hold it a moment
                drop(buf);
            }));
            settle().await; // queued before the next one arrives
        }
        assert_eq!(pool.snapshot().tenant_waiters["t"], 5);
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
    });
    assert_eq!(*served.lock().unwrap(), [0, 1, 2, 3, 4]);
    assert_nothing_live(&pool.snapshot());
}

/// A large waiter at the head is served before the small requests that arrive after it,
/// waiting or not: the room the tenant's buffers free is the head's.
#[test]
fn a_large_waiter_is_not_starved_by_a_stream_of_small_ones() {
    let (pool, tenant) = capped(64 * KIB);
    let order = Arc::new(Mutex::new(Vec::new()));
    current_thread().block_on(async {
        let mut held: Vec<PooledBuf> = (0..16).map(|_| tenant.acquire(KIB)).collect();
        let large = tokio::spawn({
            let (tenant, order) = (tenant.clone(), Arc::clone(&order));
            async move {
                let buf = tenant.acquire_wait(64 * KIB).await.unwrap();
                order.lock().unwrap().push("large");
                drop(buf);
            }
        });
        settle().await;
        let mut small = Vec::new();
        for _ in 0..8 {
            // Each small request arrives after the large one and would fit once one of the
            // held buffers drops: a try_acquire is refused (the room is the head's), and
            // an acquire_wait queues behind it.
            held.pop();
            let err = tenant.try_acquire(KIB).unwrap_err();
            assert!(err.waiting_helps(), "{err}");
            small.push(tokio::spawn({
                let (tenant, order) = (tenant.clone(), Arc::clone(&order));
                async move {
                    let buf = tenant.acquire_wait(KIB).await.unwrap();
                    order.lock().unwrap().push("small");
                    drop(buf);
                }
            }));
            settle().await;
            assert!(order.lock().unwrap().is_empty(), "nobody jumped the queue");
        }
        held.clear(); // the last 8 held buffers: now the large one fits
        large.await.unwrap();
        for task in small {
            task.await.unwrap();
        }
    });
    let order = order.lock().unwrap();
    assert_eq!(order[0], "large");
    assert_eq!(order.len(), 9);
    assert_nothing_live(&pool.snapshot());
}

#[test]
fn raising_the_limit_serves_the_waiter() {
    let (pool, tenant) = capped(4 * KIB);
    current_thread().block_on(async {
        let held = tenant.acquire(1);
        let waiter = tokio::spawn({
            let tenant = tenant.clone();
            async move { tenant.acquire_wait(1).await }
        });
        settle().await;
        assert!(!waiter.is_finished());
        tenant.set_hard_limit(Some(8 * KIB as u64));
        let buf = waiter.await.unwrap().unwrap();
        assert_eq!(tenant.live_bytes(), 8 * KIB as u64);
        drop((held, buf));
    });
    assert_nothing_live(&pool.snapshot());
}

#[test]
fn what_waiting_cannot_fix_fails_at_once() {
    let pool = BufferPool::builder().max_request_bytes(1 << 20).build();
    let tenant = pool.tenant("t");
    tenant.set_hard_limit(Some(64 * KIB as u64));
    let _held = tenant.acquire(64 * KIB);
    let mut over_limit = pin!(tenant.acquire_wait(128 * KIB));
    match poll_once(&mut over_limit) {
        Poll::Ready(Err(err @ PoolError::TenantHardLimit { .. })) => {
            assert!(!err.waiting_helps(), "{err}");
        }
        other => panic!("expected a refusal at once, got {other:?}"),
    }
    let mut too_large = pin!(tenant.acquire_wait(2 << 20));
    assert!(matches!(
        poll_once(&mut too_large),
        Poll::Ready(Err(PoolError::TooLarge { .. }))
    ));
    let mut reservation = pin!(tenant.reserve_wait(1 << 20));
    assert!(matches!(
        poll_once(&mut reservation),
        Poll::Ready(Err(PoolError::TenantHardLimit { .. }))
    ));
    let snap = pool.snapshot();
    assert_eq!(snap.waiters, 0);
    assert_eq!(snap.hard_limit_refusals_total["t"], 2);
    assert_eq!(snap.too_large_total, 1);
}

/// Cancellation at every await point: before the first poll, while queued, and after the
/// ledger served the waiter but before the future took its buffer. Each time nothing stays
/// charged and the next waiter is served.
#[test]
fn a_dropped_future_charges_nothing_and_hands_its_turn_on() {
    let (pool, tenant) = capped(4 * KIB);
    let held = tenant.acquire(1);

    // Never polled.
    drop(tenant.acquire_wait(1));
    assert_eq!(pool.snapshot().waiters, 0);

    // Queued, then dropped: the one behind it is served.
    let mut first = Box::pin(tenant.acquire_wait(1));
    let mut second = Box::pin(tenant.acquire_wait(1));
    assert!(still_waits(&mut first));
    assert!(still_waits(&mut second));
    assert_eq!(pool.snapshot().tenant_waiters["t"], 2);
    drop(first);
    assert_eq!(pool.snapshot().tenant_waiters["t"], 1);
    drop(held);
    // The ledger served `second` on the drop (charged on its behalf), before any poll.
    assert_eq!(pool.snapshot().waiters, 0);
    assert_eq!(tenant.live_bytes(), 4 * KIB as u64);

    // Served, then dropped before taking the buffer: the charge is given back, and the
    // waiter behind it is served in turn.
    let mut third = Box::pin(tenant.acquire_wait(1));
    assert!(still_waits(&mut third));
    drop(second);
    assert_eq!(tenant.live_bytes(), 4 * KIB as u64, "third was served");
    let snap = pool.snapshot();
    assert_eq!(snap.waiters, 0);
    assert_eq!(snap.outstanding_buffers.values().sum::<u64>(), 0);
    drop(third);
    assert_nothing_live(&pool.snapshot());
    let snap = pool.snapshot();
    assert_eq!(snap.tenant_waiters["t"], 0);
    assert_eq!(snap.hard_limit_refusals_total["t"], 0);
    assert_eq!(snap.tenant_soft_limit_exceeded_total["t"], 0);
    // Room is free again for anyone.
    drop(tenant.try_acquire(4 * KIB).unwrap());
}

/// A waker that counts its wakes.
struct Counting(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A waiter granted its charge by a drop yields once (wakes itself, `Pending`) before it
/// returns; dropped while it yields, it charges nothing and hands its turn on.
#[test]
fn a_granted_waiter_yields_once_and_a_drop_then_charges_nothing() {
    let (pool, tenant) = capped(4 * KIB);
    let counting = Arc::new(Counting(Default::default()));
    let waker = Waker::from(Arc::clone(&counting));
    let mut cx = Context::from_waker(&waker);
    let wakes = || counting.0.load(std::sync::atomic::Ordering::Relaxed);

    for give_up in [false, true] {
        let held = tenant.acquire(1);
        let mut waiter = Box::pin(tenant.acquire_wait(1));
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
        let before = wakes();
        drop(held); // serves the waiter: its waker is woken
        assert_eq!(wakes(), before + 1);
        assert_eq!(tenant.live_bytes(), 4 * KIB as u64, "charged on its behalf");
        // The first poll after the grant yields: it wakes itself and returns Pending.
        assert!(waiter.as_mut().poll(&mut cx).is_pending());
        assert_eq!(wakes(), before + 2, "the yield wakes its own task");
        if give_up {
            let behind = tenant.acquire_wait(1);
            let mut behind = pin!(behind);
            assert!(behind.as_mut().poll(&mut cx).is_pending());
            assert_eq!(pool.snapshot().waiters, 1);
            drop(waiter); // granted, yielded, never taken: the charge goes to the next
            assert_eq!(wakes(), before + 3, "the one behind was served (woken)");
            let snap = pool.snapshot();
            assert_eq!(snap.waiters, 0);
            assert_eq!(snap.live_bytes, 4 * KIB as u64, "one charge, not two");
            // Its first poll yields, its second takes the buffer.
            assert!(behind.as_mut().poll(&mut cx).is_pending());
            let Poll::Ready(buf) = behind.as_mut().poll(&mut cx) else {
                panic!("the waiter behind takes the buffer on its second poll");
            };
            drop(buf.unwrap());
        } else {
            let Poll::Ready(buf) = waiter.as_mut().poll(&mut cx) else {
                panic!("the second poll after the grant returns the buffer");
            };
            assert_eq!(buf.unwrap().capacity(), 4 * KIB);
        }
        assert_nothing_live(&pool.snapshot());
        assert_eq!(pool.snapshot().waiters, 0);
    }
}

/// Why the yield: on tokio's multi-thread runtime a task woken by the running task goes
/// to the worker's LIFO slot and runs next, ahead of tasks that were ready before (tokio
/// 1.x's scheduler; without the yield this test fails, `["waiter", "ready before"]`; were
/// a tokio release to drop the LIFO slot, it would pass either way). A
/// waiter served by a drop no longer cuts in front of them (the noisy-neighbour issue:
/// a flood's uploads served by drops kept running before a quiet tenant's requests).
#[test]
fn a_waiter_served_by_a_drop_runs_after_tasks_that_were_ready_before() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let (pool, tenant) = capped(4 * KIB);
    let order = Arc::new(Mutex::new(Vec::new()));
    let driver = rt.spawn({
        let order = Arc::clone(&order);
        async move {
            let held = tenant.acquire(1);
            let waiter = tokio::spawn({
                let (tenant, order) = (tenant.clone(), Arc::clone(&order));
                async move {
                    let buf = tenant.acquire_wait(1).await.unwrap();
                    order.lock().unwrap().push("waiter");
                    drop(buf);
                }
            });
            settle().await; // the waiter queues
            let ready = tokio::spawn({
                let order = Arc::clone(&order);
                async move { order.lock().unwrap().push("ready before") }
            });
            drop(held); // wakes the waiter from this worker's running task
            (waiter, ready)
        }
    });
    let (waiter, ready) = rt.block_on(driver).unwrap();
    rt.block_on(async { (waiter.await.unwrap(), ready.await.unwrap()) });
    assert_eq!(*order.lock().unwrap(), ["ready before", "waiter"]);
    assert_nothing_live(&pool.snapshot());
}

#[test]
fn composes_with_tokio_timeout() {
    let (pool, tenant) = capped(4 * KIB);
    current_thread().block_on(async {
        let held = tenant.acquire(1);
        let timed_out =
            tokio::time::timeout(Duration::from_millis(20), tenant.acquire_wait(1)).await;
        assert!(timed_out.is_err(), "nothing freed room in time");
        assert_eq!(pool.snapshot().waiters, 0);
        drop(held);
        let buf = tokio::time::timeout(Duration::from_secs(5), tenant.acquire_wait(1))
            .await
            .expect("room is free")
            .unwrap();
        drop(buf);
    });
    assert_nothing_live(&pool.snapshot());
}

#[test]
fn reserve_wait_and_growth_wait_for_room() {
    let (pool, tenant) = capped(64 * KIB);
    current_thread().block_on(async {
        let reserved = tenant.reserve(60 * KIB as u64);
        let mut buf = tenant.acquire(1); // 4 KiB: the limit is reached
        let mut grow = Box::pin(buf.reserve_wait(10 * KIB)); // to Medium: 60 KiB more
        assert!(still_waits(&mut grow));
        let mut second = Box::pin(tenant.reserve_wait(1));
        assert!(still_waits(&mut second));
        drop(reserved);
        // The growth was first in line: served (its first poll yields once); the
        // reservation waits for room after it.
        assert!(poll_once(&mut grow).is_pending());
        assert_eq!(poll_once(&mut grow), Poll::Ready(Ok(())));
        drop(grow);
        assert_eq!(buf.capacity(), 64 * KIB);
        assert!(still_waits(&mut second));
        drop(buf);
        let reservation = second.await.unwrap();
        assert_eq!(reservation.bytes(), 1);
        assert_eq!(pool.snapshot().reserved_bytes, 1);
    });
    assert_nothing_live(&pool.snapshot());
}

#[test]
fn pool_waiters_wait_for_max_live_bytes_across_tenants() {
    let pool = BufferPool::builder()
        .max_live_bytes(64 * KIB as u64)
        .build();
    let (a, b) = (pool.tenant("a"), pool.tenant("b"));
    current_thread().block_on(async {
        let held = a.acquire(64 * KIB);
        let mut untenanted = Box::pin(pool.acquire_wait(64 * KIB));
        assert!(still_waits(&mut untenanted));
        let mut other = Box::pin(b.acquire_wait(1));
        assert!(still_waits(&mut other), "behind the first pool waiter");
        assert!(matches!(b.try_acquire(1), Err(PoolError::PoolLimit { .. })));
        drop(held);
        let first = untenanted.await.unwrap();
        assert!(still_waits(&mut other));
        drop(first);
        drop(other.await.unwrap());
    });
    let snap = pool.snapshot();
    assert_nothing_live(&snap);
    assert_eq!(snap.waiters, 0);
}

/// Another executor: `futures-executor`, the waiter woken by a drop on a plain thread.
#[test]
fn runs_on_futures_executor_woken_from_another_thread() {
    let (pool, tenant) = capped(4 * KIB);
    let held = tenant.acquire(1);
    let dropper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
    });
    let buf = futures_executor::block_on(tenant.acquire_wait(1)).unwrap();
    assert_eq!(buf.tenant(), Some("t"));
    dropper.join().unwrap();
    drop(buf);
    assert_nothing_live(&pool.snapshot());
}

/// 64 tasks of 8 tenants on a multi-thread runtime, each tenant's demand well above its
/// hard limit, buffers dropped by other tasks and by the blocking pool: every task ends,
/// nobody is left waiting, and every figure ends exactly 0.
#[test]
fn sixty_four_tasks_of_eight_tenants_end_exact() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    let pool = BufferPool::builder()
        .max_live_bytes(8 * 1024 * KIB as u64)
        .build();
    let rounds = if cfg!(miri) { 2 } else { 40 };
    // Each task holds at most one 64 KiB buffer: demand passes every limit (two tasks a
    // tenant under Miri, eight otherwise).
    let limit = if cfg!(miri) { 64 * KIB } else { 256 * KIB } as u64;
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..if cfg!(miri) { 16 } else { 64 } {
            let tenant = pool.tenant(&format!("tenant-{}", task % 8));
            tenant.set_hard_limit(Some(limit));
            tasks.push(tokio::spawn(async move {
                for round in 0..rounds {
                    let size = [KIB, 20 * KIB, 60 * KIB][(task + round) % 3]; // 4 KiB or 64 KiB slabs
                    let mut buf = tenant.acquire_wait(size).await.unwrap();
                    buf.extend_from_slice(&[task as u8; 64]);
                    let bytes = buf.freeze();
                    if round % 2 == 0 {
                        tokio::task::spawn_blocking(move || drop(bytes))
                            .await
                            .unwrap();
                    } else {
                        tokio::task::yield_now().await;
                        drop(bytes);
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    drop(runtime);
    let snap = pool.snapshot();
    assert_nothing_live(&snap);
    assert_eq!(snap.waiters, 0);
    assert!(snap.tenant_waiters.values().all(|&n| n == 0));
    assert!(snap.hard_limit_refusals_total.values().all(|&n| n == 0));
    // (Under Miri, whose threads run one at a time, the few tasks may never overlap.)
    if !cfg!(miri) {
        assert!(
            snap.wait_time_total > Duration::ZERO,
            "demand passed the limits: tasks waited"
        );
    }
    for i in 0..8 {
        // Nothing refused at rest: each tenant can take its whole limit.
        let tenant = pool.tenant(&format!("tenant-{i}"));
        drop(tenant.try_reserve(limit).unwrap());
    }
}
