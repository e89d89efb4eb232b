//! `registry`: what a tenant id costs.
//!
//! - `registry-hostile-ids`: 20 000 new ids, each looked up once and its handle dropped
//!   (a flood of hostile ids), against a pool whose `max_tenants` (10 000) accounts are
//!   all held by handles (`map-full`: every new id goes to the overflow tenant), or all
//!   but one (`one-slot-free`: each new id evicts the previous one, which departed). The
//!   figure is the time per id.
//! - `registry-lookup`: a handle for a known id, as a handler takes one per request:
//!   `pool.tenant(id)` (a shared lock and a hash lookup) against `tenant.clone()`, both
//!   dropped at once.

use std::hint::black_box;
use std::time::{Duration, Instant};

use axon_buffer::{BufferPool, Tenant};
use criterion::{criterion_group, criterion_main, Criterion};

mod common;
use common::config;

const MAX_TENANTS: usize = 10_000;
const HOSTILE: usize = 20_000;

/// A pool with `held` of its `MAX_TENANTS` accounts held by handles.
fn filled(held: usize) -> (BufferPool, Vec<Tenant>) {
    let pool = BufferPool::builder().max_tenants(MAX_TENANTS).build();
    let handles = (0..held)
        .map(|i| pool.tenant(&format!("resident-{i}")))
        .collect();
    (pool, handles)
}

fn hostile_ids(c: &mut Criterion) {
    let ids: Vec<String> = (0..HOSTILE).map(|i| format!("hostile-{i}")).collect();
    let mut group = c.benchmark_group("registry-hostile-ids");
    group.sample_size(10);
    for (arm, held) in [
        ("map-full", MAX_TENANTS),
        ("one-slot-free", MAX_TENANTS - 1),
    ] {
        group.bench_function(arm, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (pool, handles) = filled(held);
                    let start = Instant::now();
                    for id in &ids {
                        drop(black_box(pool.tenant(id)));
                    }
                    total += start.elapsed() / HOSTILE as u32;
                    drop((handles, pool));
                }
                total
            })
        });
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let (pool, handles) = filled(1_000);
    let mut group = c.benchmark_group("registry-lookup");
    group.bench_function("pool-tenant", |b| {
        b.iter(|| drop(black_box(pool.tenant(black_box("resident-500")))))
    });
    let tenant = &handles[500];
    group.bench_function("tenant-clone", |b| {
        b.iter(|| drop(black_box(black_box(tenant).clone())))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = hostile_ids, lookup
}
criterion_main!(benches);
