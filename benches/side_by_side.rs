//! `side_by_side`: the Small 64-byte cycle of `cycle`, every arm measured in turn, a few
//! milliseconds each, round after round, so that each ratio compares arms measured within
//! the same fraction of a second.
//!
//! Why, beside criterion: this crate's machine is a shared 2-core VM whose speed drifts by
//! a factor of two or more over minutes (in one `cargo bench` run `Vec`'s 4 KiB cycle read
//! 75 ns where an earlier run read 31 ns). Criterion measures one arm for seconds, then the
//! next, so a drift between two arms lands in their ratio. Here each round measures every
//! arm once, in a rotating order, the ratio of two arms is taken within each round, and the
//! figure is the median over the rounds. Medians of per-arm times are printed too.
//!
//! ```sh
//! cargo bench --bench side_by_side            # 41 rounds
//! cargo bench --bench side_by_side -- 101     # more rounds
//! ```

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axon_buffer::BufferPool;
use lifeguard::{MaxSize, StartingSize, Supplier};
use opool::PoolAllocator;

const SIZE: usize = 4096;
const WRITE: usize = 64;
/// Cycles per arm per round: a few milliseconds.
const CYCLES: u32 = 100_000;

struct VecAlloc;

impl PoolAllocator<Vec<u8>> for VecAlloc {
    fn allocate(&self) -> Vec<u8> {
        Vec::with_capacity(SIZE)
    }

    fn reset(&self, obj: &mut Vec<u8>) {
        obj.clear();
    }

    fn is_valid(&self, obj: &Vec<u8>) -> bool {
        obj.capacity() == SIZE
    }
}

type Arm<'a> = (&'static str, Box<dyn FnMut() + 'a>);

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(41);
    let data = [7u8; WRITE];
    let data = &data[..];
    let pool = BufferPool::global();
    let tenant = pool.tenant("bench");
    // A tenant of its own for `axon-tenant-wait`: a handler that only ever calls
    // `acquire_wait` (the README's `collect_body_wait`) must reach the fast path by itself.
    let wait_tenant = pool.tenant("bench-wait");
    let built_decay = BufferPool::builder()
        .idle_timeout(Some(Duration::from_secs(20)))
        .build();
    let built_no_decay = BufferPool::builder().idle_timeout(None).build();
    let lifeguard_pool = lifeguard::pool()
        .with(StartingSize(1))
        .with(MaxSize(64))
        .with(Supplier(|| Vec::<u8>::with_capacity(SIZE)))
        .build();
    let opool_pool = opool::Pool::new(64, VecAlloc);
    let object_pool = object_pool::Pool::new(1, || Vec::with_capacity(SIZE));
    let mut reused = Vec::with_capacity(SIZE);
    let mut cx = Context::from_waker(Waker::noop());

    let mut arms: Vec<Arm<'_>> = vec![
        (
            "axon",
            Box::new(|| {
                let mut buf = pool.acquire(black_box(SIZE));
                buf.extend_from_slice(black_box(data));
                black_box(&buf);
            }),
        ),
        (
            "axon-tenant",
            Box::new(|| {
                let mut buf = tenant.acquire(black_box(SIZE));
                buf.extend_from_slice(black_box(data));
                black_box(&buf);
            }),
        ),
        (
            "axon-tenant-wait",
            Box::new(|| {
                let mut wait = pin!(wait_tenant.acquire_wait(black_box(SIZE)));
                let Poll::Ready(Ok(mut buf)) = wait.as_mut().poll(&mut cx) else {
                    unreachable!("nobody waits: ready at once");
                };
                buf.extend_from_slice(black_box(data));
                black_box(&buf);
            }),
        ),
        (
            "built-decay",
            Box::new(|| {
                let mut buf = built_decay.acquire(black_box(SIZE));
                buf.extend_from_slice(black_box(data));
                black_box(&buf);
            }),
        ),
        (
            "built-no-decay",
            Box::new(|| {
                let mut buf = built_no_decay.acquire(black_box(SIZE));
                buf.extend_from_slice(black_box(data));
                black_box(&buf);
            }),
        ),
        (
            "vec",
            Box::new(|| {
                let mut buf = Vec::with_capacity(black_box(SIZE));
                buf.extend_from_slice(black_box(data));
                black_box(&buf);
            }),
        ),
        (
            "lifeguard",
            Box::new(|| {
                let mut buf = lifeguard_pool.new();
                buf.extend_from_slice(black_box(data));
                black_box(&buf);
            }),
        ),
        (
            "opool",
            Box::new(|| {
                let mut buf = opool_pool.get();
                buf.extend_from_slice(black_box(data));
                black_box(&buf);
            }),
        ),
        (
            "object-pool",
            Box::new(|| {
                let mut buf = object_pool.pull(|| Vec::with_capacity(SIZE));
                buf.clear();
                buf.extend_from_slice(black_box(data));
                black_box(&buf);
            }),
        ),
        (
            "floor",
            Box::new(|| {
                reused.clear();
                reused.extend_from_slice(black_box(data));
                black_box(&reused);
            }),
        ),
    ];
    // Warm up every arm (caches, stocks, first allocations).
    for (_, run) in arms.iter_mut() {
        for _ in 0..CYCLES {
            run();
        }
    }
    let n = arms.len();
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        for i in 0..n {
            let (_, run) = &mut arms[(i + round) % n];
            let start = Instant::now();
            for _ in 0..CYCLES {
                run();
            }
            let ns = start.elapsed().as_nanos() as f64 / f64::from(CYCLES);
            times[(i + round) % n].push(ns);
        }
    }
    let names: Vec<&str> = arms.iter().map(|(name, _)| *name).collect();
    let index = |name: &str| names.iter().position(|n| *n == name).unwrap();
    println!("side_by_side: Small (4 KiB) acquire + 64-byte write + drop, {rounds} rounds of {CYCLES} cycles per arm\n");
    println!("| arm | median | min | max |");
    println!("|---|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        let t = &times[i];
        let min = t.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = t.iter().cloned().fold(0.0, f64::max);
        println!(
            "| `{name}` | {:.1} ns | {min:.1} ns | {max:.1} ns |",
            median(t.clone())
        );
    }
    println!("\n| ratio (median of per-round ratios) | value | limit |");
    println!("|---|---|---|");
    for (a, b, limit) in [
        ("axon-tenant", "axon", "≤ 1.2"),
        ("axon", "lifeguard", "≤ 1"),
        ("axon", "vec", "≤ 0.40"),
        ("axon", "opool", "< 1"),
        ("axon", "object-pool", "< 1"),
        ("axon", "floor", ""),
        ("axon-tenant-wait", "axon-tenant", "≈ 1 (issue 10)"),
        ("built-decay", "built-no-decay", "≈ 1 (issue 11)"),
    ] {
        let (ta, tb) = (&times[index(a)], &times[index(b)]);
        let ratios: Vec<f64> = ta.iter().zip(tb).map(|(x, y)| x / y).collect();
        println!("| `{a}` / `{b}` | {:.2} | {limit} |", median(ratios));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
