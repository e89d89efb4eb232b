//! Sharing `max_live_bytes` between tenants (DESIGN.md "Sharing max_live_bytes"): the
//! waiting tenant that holds least is served first, nothing starves, and a guarantee sets
//! room aside that no other tenant takes, from any thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Waker};

use axon_buffer::{BufferPool, PoolError, PooledBuf, Tenant};

mod common;
use common::assert_nothing_live;

const KIB: usize = 1024;
const MIB: usize = 1 << 20;

fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(Waker::noop()))
}

/// Whether a waiter still waits: two polls, both `Pending`. (A granted waiter's first poll
/// after the grant returns `Pending` too, once: it yields; the second would be `Ready`.)
fn still_waits<F: Future + Unpin>(fut: &mut F) -> bool {
    poll_once(fut).is_pending() && poll_once(fut).is_pending()
}

/// Expects the buffer: a waiter granted its charge yields once (its first poll after the
/// grant wakes itself and returns `Pending`), so it gets up to two polls.
#[track_caller]
fn ready<F: Future<Output = Result<PooledBuf, PoolError>> + Unpin>(fut: &mut F) -> PooledBuf {
    let polled = match poll_once(fut) {
        Poll::Pending => poll_once(fut),
        ready => ready,
    };
    match polled {
        Poll::Ready(result) => result.expect("served"),
        Poll::Pending => panic!("expected the waiter to be served"),
    }
}

/// Two tenants wait for the pool's room; the heavy one arrived first. When room frees,
/// the one that holds less is served first (arrival order across tenants was the old rule).
#[test]
fn the_waiting_tenant_that_holds_least_is_served_first() {
    let pool = BufferPool::builder().max_live_bytes(MIB as u64).build();
    let (heavy, light) = (pool.tenant("heavy"), pool.tenant("light"));
    let heavy_held: Vec<_> = (0..14).map(|_| heavy.acquire(64 * KIB)).collect();
    let light_held = light.acquire(64 * KIB);
    let filler = pool.acquire(64 * KIB); // the pool is full: 1 MiB
    let mut heavy_wait = Box::pin(heavy.acquire_wait(64 * KIB));
    let mut light_wait = Box::pin(light.acquire_wait(64 * KIB));
    assert!(still_waits(&mut heavy_wait));
    assert!(still_waits(&mut light_wait));
    assert_eq!(pool.snapshot().waiters, 2);

    drop(filler); // room for one
    let light_buf = ready(&mut light_wait);
    assert!(still_waits(&mut heavy_wait), "holds 14x more: after");
    drop(light_held); // room for the next
    let heavy_buf = ready(&mut heavy_wait);

    // A try of a tenant that holds more than every waiter ahead is refused while they
    // wait; one that holds less is not held up by them.
    let mut again = Box::pin(heavy.reserve_wait(128 * KIB as u64));
    assert!(still_waits(&mut again));
    assert!(
        matches!(
            pool.tenant("third").try_acquire(4 * KIB),
            Err(PoolError::PoolLimit { .. })
        ),
        "the pool is full"
    );
    drop(light_buf); // 64 KiB free: too little for the heavy waiter
    assert!(still_waits(&mut again));
    let third = pool.tenant("third").try_acquire(4 * KIB);
    assert!(
        third.is_ok(),
        "holds nothing: ranks before the heavy waiter"
    );
    drop((third, again, heavy_buf, heavy_held));
    let snap = pool.snapshot();
    assert_eq!(snap.waiters, 0);
    assert_nothing_live(&snap);
}

/// A large request of a tenant that holds nothing is overtaken by nobody: a stream of
/// small requests from tenants that hold more waits behind it, and it gets through as
/// soon as drops free its size.
#[test]
fn a_large_request_is_not_starved_by_small_ones() {
    let pool = BufferPool::builder().max_live_bytes(MIB as u64).build();
    let flood = pool.tenant("flood");
    let mut held: Vec<_> = (0..16).map(|_| flood.acquire(64 * KIB)).collect();
    let big_tenant = pool.tenant("big");
    let mut big = Box::pin(big_tenant.acquire_wait(MIB)); // a whole Large slab
    assert!(still_waits(&mut big));
    let small = pool.tenant("small");
    let mut smalls = Vec::new();
    for round in 0..16 {
        // The flood lets one go and asks again at once, a small tenant asks too: neither
        // overtakes the large request, which needs every byte.
        drop(held.pop());
        assert!(flood.try_acquire(64 * KIB).is_err(), "round {round}");
        let mut s = Box::pin(small.acquire_wait(4 * KIB));
        if round == 0 {
            assert!(still_waits(&mut s), "ranks with big, arrived later");
        }
        smalls.push(s);
        if round < 15 {
            assert!(still_waits(&mut big), "round {round}");
        }
    }
    let big_buf = ready(&mut big);
    assert_eq!(big_buf.capacity(), MIB);
    for s in &mut smalls {
        assert!(still_waits(s), "big holds the whole budget");
    }
    drop(big_buf);
    // Now the small requests go, in their tenant's order.
    let got: Vec<_> = smalls.iter_mut().map(ready).collect();
    assert_eq!(got.len(), 16);
    drop((got, smalls, big));
    assert_nothing_live(&pool.snapshot());
}

#[test]
fn guarantees_together_never_pass_max_live_bytes() {
    let pool = BufferPool::builder().max_live_bytes(MIB as u64).build();
    let (a, b) = (pool.tenant("a"), pool.tenant("b"));
    assert_eq!(a.guarantee(), None);
    a.set_guarantee(Some(768 * KIB as u64)).unwrap();
    let err = b.set_guarantee(Some(512 * KIB as u64)).unwrap_err();
    assert!(
        matches!(
            err,
            PoolError::GuaranteesPastLimit { ref tenant, requested, others, limit }
                if tenant == "b" && requested == 512 * KIB as u64
                    && others == 768 * KIB as u64 && limit == MIB as u64
        ),
        "{err:?}"
    );
    assert!(!err.waiting_helps());
    assert_eq!(b.guarantee(), None, "refused: nothing changed");
    assert_eq!(a.guarantee(), Some(768 * KIB as u64));
    b.set_guarantee(Some(256 * KIB as u64)).unwrap(); // exactly the budget: allowed
    a.set_guarantee(Some(512 * KIB as u64)).unwrap(); // lowering is always allowed
    b.set_guarantee(Some(512 * KIB as u64)).unwrap();
    a.set_guarantee(None).unwrap();
    assert_eq!(a.guarantee(), None);
    let snap = pool.snapshot();
    assert_eq!(snap.tenant_guarantee_bytes.get("a"), None);
    assert_eq!(snap.tenant_guarantee_bytes["b"], 512 * KIB as u64);

    // Without max_live_bytes a guarantee is recorded and protects nothing.
    let unbounded = BufferPool::builder().build();
    let t = unbounded.tenant("t");
    t.set_guarantee(Some(u64::MAX)).unwrap();
    assert_eq!(t.guarantee(), Some(u64::MAX));
    drop(unbounded.tenant("u").acquire(MIB));
}

/// A pool of 1 MiB whose tenant `quiet` is guaranteed 256 KiB and whose tenant `flood`
/// holds all the rest, in twelve 64 KiB buffers.
fn full_but_for_a_guarantee() -> (BufferPool, Tenant, Tenant, Vec<PooledBuf>) {
    let pool = BufferPool::builder().max_live_bytes(MIB as u64).build();
    let (quiet, flood) = (pool.tenant("quiet"), pool.tenant("flood"));
    quiet.set_guarantee(Some(256 * KIB as u64)).unwrap();
    let taken = (0..12).map(|_| flood.acquire(64 * KIB)).collect();
    (pool, quiet, flood, taken)
}

/// Others are refused (or wait) rather than take a guarantee; within it the tenant never
/// waits, even while others wait for the budget; a request past the budget less the
/// others' guarantees fails at once.
#[test]
fn a_guarantee_is_room_only_its_tenant_uses() {
    let (pool, quiet, flood, taken) = full_but_for_a_guarantee();
    let refused = flood.try_acquire(64 * KIB).unwrap_err();
    assert!(
        matches!(refused, PoolError::PoolLimit { live, limit, .. }
            if live == 768 * KIB as u64 && limit == 768 * KIB as u64),
        "{refused:?}"
    );
    assert!(refused.waiting_helps());
    let mut flood_wait = Box::pin(flood.acquire_wait(64 * KIB));
    assert!(still_waits(&mut flood_wait));
    let mut untenanted = Box::pin(pool.acquire_wait(64 * KIB));
    assert!(still_waits(&mut untenanted));

    // Within its guarantee: at once, both forms, though others wait for the budget.
    let a = quiet.try_acquire(64 * KIB).unwrap();
    let mut b = Box::pin(quiet.acquire_wait(64 * KIB));
    let b = ready(&mut b);
    let c = quiet.try_reserve(128 * KIB as u64).unwrap();
    // Past it, the quiet tenant is one more tenant of the budget, which is full.
    assert!(matches!(
        quiet.try_acquire(4 * KIB),
        Err(PoolError::PoolLimit { .. })
    ));
    assert_eq!(pool.snapshot().live_bytes, MIB as u64);

    // Needs more than 1 MiB less the quiet tenant's 256 KiB: never fits, fails at once.
    let mut never = Box::pin(flood.reserve_wait(800 * KIB as u64));
    match poll_once(&mut never) {
        Poll::Ready(Err(err @ PoolError::PoolLimit { .. })) => {
            assert!(!err.waiting_helps(), "{err}")
        }
        other => panic!("expected a refusal at once, got {other:?}"),
    }
    // A guarantee that grows under a waiter makes it impossible: it fails at once.
    drop((a, b, c));
    let mut big = Box::pin(flood.reserve_wait(700 * KIB as u64));
    assert!(still_waits(&mut big));
    pool.tenant("quiet")
        .set_guarantee(Some(400 * KIB as u64))
        .unwrap();
    assert!(matches!(
        poll_once(&mut big),
        Poll::Ready(Err(PoolError::PoolLimit { .. }))
    ));
    drop(taken);
    // The flood's and the untenanted waiters are served as room frees.
    drop(ready(&mut flood_wait));
    drop(ready(&mut untenanted));
    drop((flood_wait, untenanted, never, big));
    let snap = pool.snapshot();
    assert_eq!(snap.waiters, 0);
    assert_nothing_live(&snap);
}

/// The output of `fut`'s first poll, which must be ready and `Ok`.
#[track_caller]
fn at_first_poll<T, E: std::fmt::Debug>(
    fut: impl Future<Output = Result<T, E>>,
    what: &str,
    round: usize,
) -> T {
    match poll_once(&mut Box::pin(fut)) {
        Poll::Ready(Ok(out)) => out,
        Poll::Ready(Err(err)) => panic!("round {round}: {what} failed: {err:?}"),
        Poll::Pending => panic!("round {round}: {what} was not done at its first poll"),
    }
}

/// Within its guarantee a tenant is served at its first poll while others wait for the
/// budget: not queued, and not even a yield, so a guaranteed request beside a flood is
/// never sent to the back of its executor's queue. The four waiting forms that take new
/// room: `acquire_wait`, `reserve_wait`, and the bodies' (with a length).
#[test]
fn a_guaranteed_tenant_is_served_at_its_first_poll_while_others_wait() {
    let (pool, quiet, _flood, taken) = full_but_for_a_guarantee();
    // `thin` ranks as low as the quiet tenant (neither holds anything beyond a guarantee)
    // and came first: the fair order alone would queue the quiet tenant's requests behind
    // it.
    let thin = pool.tenant("thin");
    let mut thin_wait = Box::pin(thin.acquire_wait(64 * KIB));
    assert!(still_waits(&mut thin_wait));
    assert_eq!(pool.snapshot().waiters, 1);

    let rounds = if cfg!(miri) { 2 } else { 100 };
    for round in 0..rounds {
        let buf = at_first_poll(quiet.acquire_wait(64 * KIB), "acquire_wait", round);
        let reserved = at_first_poll(quiet.reserve_wait(64 * KIB as u64), "reserve_wait", round);
        let body = http_body_util::Full::new(bytes::Bytes::from(vec![7u8; 2 * KIB]));
        let pooled = at_first_poll(
            quiet.collect_body_wait(body, MIB),
            "collect_body_wait",
            round,
        );
        let body = http_body_util::Full::new(bytes::Bytes::from(vec![7u8; 60 * KIB]));
        let chain = quiet.collect_body_chain_wait(body, MIB);
        let chain = at_first_poll(chain, "collect_body_chain_wait", round);
        assert_eq!((pooled.len(), chain.len()), (2 * KIB, 60 * KIB));
        assert_eq!(
            quiet.live_bytes(),
            (64 + 64 + 4) as u64 * KIB as u64 + chain.capacity() as u64
        );
        assert!(quiet.live_bytes() <= 256 * KIB as u64);
        assert_eq!(
            pool.snapshot().waiters,
            1,
            "round {round}: `thin` still waits"
        );
        drop((buf, reserved, pooled, chain));
    }
    assert_eq!(quiet.live_bytes(), 0);
    drop(taken);
    drop(ready(&mut thin_wait));
    drop(thin_wait);
    let snap = pool.snapshot();
    assert_eq!(snap.waiters, 0);
    assert_nothing_live(&snap);
}

/// Four flooding threads (two tenants, and untenanted buffers) take all the budget they
/// can, from their stocks and the slow path, hand half their buffers to a thread that only
/// drops, and exit; meanwhile the guaranteed tenant takes its whole guarantee again and
/// again from the main thread, and is never refused. At rest every figure is exact.
#[test]
fn a_guarantee_is_never_taken_by_another_tenant_from_any_thread() {
    let rounds = if cfg!(miri) { 20 } else { 4000 };
    let pool = BufferPool::builder().max_live_bytes(2 * MIB as u64).build();
    let quiet = pool.tenant("quiet");
    quiet.set_guarantee(Some(512 * KIB as u64)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let refused_others = Arc::new(AtomicU64::new(0));
    let (to_dropper, dropped) = mpsc::channel::<PooledBuf>();
    let dropper = std::thread::spawn(move || {
        for buf in dropped {
            drop(buf); // a thread that never acquired
        }
    });
    let floods: Vec<_> = (0..4)
        .map(|i| {
            let (pool, stop, refused) =
                (pool.clone(), Arc::clone(&stop), Arc::clone(&refused_others));
            let to_dropper = to_dropper.clone();
            std::thread::spawn(move || {
                let tenant = (i < 2).then(|| pool.tenant(&format!("flood-{i}")));
                let mut held = Vec::new();
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    let size = if n.is_multiple_of(3) {
                        64 * KIB
                    } else {
                        4 * KIB
                    };
                    let got = match &tenant {
                        Some(t) => t.try_acquire(size),
                        None => pool.try_acquire(size),
                    };
                    match got {
                        Ok(buf) => held.push(buf),
                        Err(_) => {
                            refused.fetch_add(1, Relaxed);
                            // Let go of half: some here, some on the dropping thread.
                            for (k, buf) in held.drain(..).enumerate() {
                                if k % 2 == 0 {
                                    drop(buf);
                                } else {
                                    to_dropper.send(buf).unwrap();
                                }
                            }
                        }
                    }
                    n += 1;
                }
                drop(held); // and the thread exits with its stocks
            })
        })
        .collect();
    drop(to_dropper);
    for round in 0..rounds {
        // The whole guarantee, in Small and Medium buffers and a reservation.
        let mine: Result<Vec<_>, _> = (0..4).map(|_| quiet.try_acquire(64 * KIB)).collect();
        let mine = mine.unwrap_or_else(|err| panic!("round {round}: {err}"));
        let reserved = quiet
            .try_reserve(252 * KIB as u64)
            .unwrap_or_else(|err| panic!("round {round}: {err}"));
        let small = quiet
            .try_acquire(KIB)
            .unwrap_or_else(|err| panic!("round {round}: {err}"));
        assert_eq!(quiet.live_bytes(), 512 * KIB as u64);
        drop((mine, reserved, small));
    }
    stop.store(true, Relaxed);
    for t in floods {
        t.join().unwrap();
    }
    dropper.join().unwrap();
    assert!(
        refused_others.load(Relaxed) > 0,
        "the floods filled the budget"
    );
    let snap = pool.snapshot();
    assert_eq!(snap.waiters, 0);
    assert_nothing_live(&snap);
    assert_eq!(snap.tenant_guarantee_bytes["quiet"], 512 * KIB as u64);
}
