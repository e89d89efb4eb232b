//! `sharing`: what choosing whom to serve costs when many tenants wait for the pool's
//! `max_live_bytes` (`src/inner/ledger/share.rs`: a `BTreeSet` of ranks).
//!
//! `sharing-serve/N`: `N` tenants each have one `acquire_wait(4096)` queued, and the pool
//! is full. One step drops one of the buffers that fill the pool (the pass serves the
//! waiting tenant of least rank), takes the served buffer (it fills the pool in turn), and
//! queues a new waiter for that tenant. The figure is the time of one step: a debit that
//! serves, two polls that take (a granted waiter yields once), a registration. It should
//! grow as `log N`, not `N`.
//!
//! ```sh
//! cargo bench --bench sharing
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use axon_buffer::{BufferPool, PoolError, PooledBuf, Tenant};
use criterion::{criterion_group, criterion_main, Criterion};

mod common;
use common::config;

const SIZE: usize = 4096;
/// Buffers that fill the pool.
const FILL: usize = 16;

type Wait = Pin<Box<dyn Future<Output = Result<PooledBuf, PoolError>>>>;

/// Wakes by recording which tenant's waiter was served.
struct Served {
    tenant: usize,
    log: Arc<Mutex<Vec<usize>>>,
}

impl Wake for Served {
    fn wake(self: Arc<Self>) {
        self.log.lock().unwrap().push(self.tenant);
    }
}

struct Queued {
    tenants: Vec<Tenant>,
    waits: Vec<Option<Wait>>,
    wakers: Vec<Waker>,
    log: Arc<Mutex<Vec<usize>>>,
    fill: VecDeque<PooledBuf>,
    _pool: BufferPool,
}

impl Queued {
    fn new(n: usize) -> Queued {
        let pool = BufferPool::builder()
            .max_live_bytes((FILL * SIZE) as u64)
            .build();
        let fill = (0..FILL).map(|_| pool.acquire(SIZE)).collect();
        let log = Arc::new(Mutex::new(Vec::new()));
        let tenants: Vec<Tenant> = (0..n).map(|i| pool.tenant(&format!("t{i}"))).collect();
        let wakers = (0..n)
            .map(|tenant| {
                let log = Arc::clone(&log);
                Waker::from(Arc::new(Served { tenant, log }))
            })
            .collect();
        let mut queued = Queued {
            waits: (0..n).map(|_| None).collect(),
            tenants,
            wakers,
            log,
            fill,
            _pool: pool,
        };
        for i in 0..n {
            queued.queue(i);
        }
        queued
    }

    fn queue(&mut self, i: usize) {
        let tenant = self.tenants[i].clone();
        let mut wait: Wait = Box::pin(async move { tenant.acquire_wait(SIZE).await });
        let mut cx = Context::from_waker(&self.wakers[i]);
        assert!(wait.as_mut().poll(&mut cx).is_pending(), "the pool is full");
        self.waits[i] = Some(wait);
    }

    /// One buffer of the fill drops; the served waiter's buffer joins the fill, and its
    /// tenant queues again.
    fn step(&mut self) {
        drop(self.fill.pop_front());
        let served = self.log.lock().unwrap().pop().expect("a waiter was served");
        let mut wait = self.waits[served].take().expect("it waited");
        // A granted waiter yields once (it wakes its own task, here a no-op waker, so the
        // log only records serves), then takes its buffer.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(wait.as_mut().poll(&mut cx).is_pending(), "the yield");
        let Poll::Ready(Ok(buf)) = wait.as_mut().poll(&mut cx) else {
            panic!("the served waiter takes its buffer");
        };
        self.fill.push_back(black_box(buf));
        self.queue(served);
    }
}

fn serve(c: &mut Criterion) {
    let mut group = c.benchmark_group("sharing-serve");
    for n in [1, 100, 10_000] {
        group.bench_function(format!("{n}"), |b| {
            let mut queued = Queued::new(n);
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    queued.step();
                }
                start.elapsed()
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config().measurement_time(Duration::from_secs(3));
    targets = serve
}
criterion_main!(benches);
