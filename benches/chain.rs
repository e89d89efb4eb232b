//! `chain`: collecting a request body into a `PooledChain`, a `PooledBuf`, a `BytesMut` and
//! `http_body_util`'s `collect().to_bytes()`, with a length (an exact size hint) and
//! without (chunked), for bodies of 64 KiB, 3 MiB, 12 MiB and 41 MiB; and the Small-payload
//! cycle of a chain against a buffer's.
//!
//! Arms are interleaved, as in `side_by_side`: each round runs every arm once (a few tens
//! of milliseconds each), in a shuffled order, the ratio of two arms is taken within each
//! round, and the figures are medians over the rounds, so the drift of a shared 2-core
//! machine lands in no ratio. Every body arrives in 16 KiB frames of `Bytes` sliced from
//! one resident source (hyper hands its read buffer out the same way); every arm copies
//! each byte once, except `collect-to-bytes` (once, into one allocation, when there is more
//! than one frame) and `bytes-mut` without a length (its regrowth copies besides).
//!
//! Arms per body: `chain` (`Tenant::collect_body_chain`), `chain-idle1024` (the same from a
//! pool keeping 1024 idle slabs a class, to show what the default cap of 64 costs a body
//! of many Medium segments), `pooled-buf` (`Tenant::collect_body`), `bytes-mut`
//! (`BytesMut::with_capacity(lower bound)`, `extend_from_slice` per frame),
//! `collect-to-bytes` (`BodyExt::collect().await?.to_bytes()`).
//!
//! Before each arm the bench writes a 256 MiB scratch buffer, so every arm starts from
//! caches that no other arm warmed for it. Without that, the arms that use the allocator
//! (`bytes-mut`, `collect-to-bytes`, and `pooled-buf` past 10 MiB) share one freed block a
//! size and often start on it hot, while the chain arms start on slabs only they touch:
//! measured on a 2-core Xeon (2026-12-07), 12 MiB bodies read chain / `bytes-mut` 1.12x
//! with a length and 1.09x without in the old order, 1.01x and 1.06x with the scratch
//! pass, and 0.99x and 1.01x run alone (one arm a process); `-- warm` keeps the old order.
//!
//! ```sh
//! cargo bench --bench chain            # 15 rounds
//! cargo bench --bench chain -- 31      # more rounds
//! cargo bench --bench chain -- 31 warm # no scratch pass: arms inherit each other's caches
//! cargo bench --bench chain -- fresh 100  # chunked 12 MiB bodies in a fresh process
//! ```

use std::convert::Infallible;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axon_buffer::{BufferPool, Tenant};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const FRAME: usize = 16 * KIB;

/// A body of `data` in `FRAME`-byte frames, with an exact size hint or none.
struct Frames {
    data: Bytes,
    at: usize,
    exact: bool,
}

impl Frames {
    fn new(data: &Bytes, exact: bool) -> Frames {
        Frames {
            data: data.clone(),
            at: 0,
            exact,
        }
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let at = self.at;
        if at >= self.data.len() {
            return Poll::Ready(None);
        }
        let end = (at + FRAME).min(self.data.len());
        self.at = end;
        Poll::Ready(Some(Ok(Frame::data(self.data.slice(at..end)))))
    }

    fn size_hint(&self) -> SizeHint {
        let left = (self.data.len() - self.at) as u64;
        if self.exact {
            SizeHint::with_exact(left)
        } else {
            SizeHint::new()
        }
    }
}

/// What a handler does with a body when it has no pool: a `BytesMut` sized from the hint.
async fn bytes_mut(mut body: Frames) -> BytesMut {
    let mut buf = BytesMut::with_capacity(body.size_hint().lower() as usize);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            buf.extend_from_slice(&data);
        }
    }
    buf
}

type Arm<'a> = (String, Box<dyn FnMut() + 'a>);

/// Minor page faults of this process so far (Linux; 0 elsewhere): a slab whose pages went
/// back to the system faults them in again when written.
fn minor_faults() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let Some(end) = stat.rfind(')') else { return 0 };
    stat[end + 1..]
        .split_whitespace()
        .nth(7)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn body_arms<'a>(
    size: usize,
    exact: bool,
    data: &'a Bytes,
    tenant: &'a Tenant,
    roomy: &'a Tenant,
) -> Vec<Arm<'a>> {
    let mode = if exact { "length" } else { "chunked" };
    let max = 64 * MIB;
    // About 64 MiB copied per arm per round.
    let iters = (64 * MIB / size).max(2);
    let name = |arm: &str| format!("{}/{mode}/{arm}", label(size));
    vec![
        (
            name("chain"),
            Box::new(move || {
                for _ in 0..iters {
                    let body = Frames::new(data, exact);
                    let chain = futures_executor::block_on(tenant.collect_body_chain(body, max));
                    drop(black_box(chain.unwrap()));
                }
            }),
        ),
        (
            name("chain-idle1024"),
            Box::new(move || {
                for _ in 0..iters {
                    let body = Frames::new(data, exact);
                    let chain = futures_executor::block_on(roomy.collect_body_chain(body, max));
                    drop(black_box(chain.unwrap()));
                }
            }),
        ),
        (
            name("pooled-buf"),
            Box::new(move || {
                for _ in 0..iters {
                    let body = Frames::new(data, exact);
                    let buf = futures_executor::block_on(tenant.collect_body(body, max));
                    drop(black_box(buf.unwrap()));
                }
            }),
        ),
        (
            name("bytes-mut"),
            Box::new(move || {
                for _ in 0..iters {
                    let body = Frames::new(data, exact);
                    black_box(futures_executor::block_on(bytes_mut(body)));
                }
            }),
        ),
        (
            name("collect-to-bytes"),
            Box::new(move || {
                for _ in 0..iters {
                    let body = Frames::new(data, exact);
                    let collected = futures_executor::block_on(body.collect()).unwrap();
                    black_box(collected.to_bytes());
                }
            }),
        ),
    ]
}

fn label(size: usize) -> String {
    if size >= MIB {
        format!("{}MiB", size / MIB)
    } else {
        format!("{}KiB", size / KIB)
    }
}

/// The buffer written before each arm: larger than any last-level cache a 2-core machine
/// shares out.
const SCRATCH: usize = 256 * MIB;

/// Cycles per round of the Small-payload arms.
const CYCLES: usize = 100_000;

/// `-- fresh`: 12 MiB bodies without a length, first into chains, then into `BytesMut`,
/// first thing in the process, so the chain meets glibc's trim and mmap thresholds as a
/// fresh process has them (the interleaved arms raise them early: a 12 MiB block freed
/// lifts both). Prints each arm's median time a body and its minor page faults a body.
fn fresh(bodies: usize) {
    let data: Bytes = (0..12 * MIB)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let tenant = BufferPool::global().tenant("fresh");
    let max = 64 * MIB;
    let measure = |name: &str, collect: &dyn Fn()| {
        let before = minor_faults();
        let mut times: Vec<f64> = (0..bodies)
            .map(|_| {
                let start = Instant::now();
                collect();
                start.elapsed().as_secs_f64()
            })
            .collect();
        let faults = (minor_faults() - before) as f64 / bodies as f64;
        println!(
            "12MiB/chunked/{name:10} {:8.3} ms a body (median of {bodies}) {faults:8.0} minor faults a body",
            median(&mut times) * 1e3
        );
    };
    println!("chain bench, fresh process: 12 MiB bodies in 16 KiB frames, no length");
    measure("chain", &|| {
        let body = Frames::new(&data, false);
        let chain = futures_executor::block_on(tenant.collect_body_chain(body, max));
        drop(black_box(chain.unwrap()));
    });
    measure("bytes-mut", &|| {
        let body = Frames::new(&data, false);
        black_box(futures_executor::block_on(bytes_mut(body)));
    });
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(15);
    if std::env::args().any(|a| a == "fresh") {
        return fresh(rounds);
    }
    let pool = BufferPool::global();
    let tenant = pool.tenant("bench");
    let roomy_pool = BufferPool::builder().max_idle_per_class(1024).build();
    let roomy = roomy_pool.tenant("bench");
    let sizes = [64 * KIB, 3 * MIB, 12 * MIB, 41 * MIB];
    let sources: Vec<Bytes> = sizes
        .iter()
        .map(|&size| {
            (0..size)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>()
                .into()
        })
        .collect();
    let mut arms: Vec<Arm<'_>> = Vec::new();
    for (&size, data) in sizes.iter().zip(&sources) {
        for exact in [true, false] {
            arms.extend(body_arms(size, exact, data, &tenant, &roomy));
        }
    }
    let payload: &[u8] = &[7u8; 64];
    let small_tenant = &tenant;
    arms.push((
        "small-64B/chain-cycle".into(),
        Box::new(move || {
            for _ in 0..CYCLES {
                let mut chain = small_tenant.chain();
                chain.try_extend_from_slice(black_box(payload)).unwrap();
                black_box(&chain);
            }
        }),
    ));
    arms.push((
        "small-64B/pooled-buf-cycle".into(),
        Box::new(move || {
            for _ in 0..CYCLES {
                let mut buf = small_tenant.acquire(64);
                buf.extend_from_slice(black_box(payload));
                black_box(&buf);
            }
        }),
    ));
    arms.push((
        "small-64B/chain-freeze-cycle".into(),
        Box::new(move || {
            for _ in 0..CYCLES {
                let mut chain = small_tenant.chain();
                chain.try_extend_from_slice(black_box(payload)).unwrap();
                black_box(chain.freeze());
            }
        }),
    ));
    arms.push((
        "small-64B/pooled-buf-freeze-cycle".into(),
        Box::new(move || {
            for _ in 0..CYCLES {
                let mut buf = small_tenant.acquire(64);
                buf.extend_from_slice(black_box(payload));
                black_box(buf.freeze());
            }
        }),
    ));

    // Warm-up: one pass of every arm fills the free lists and the page tables.
    for (_, arm) in arms.iter_mut() {
        arm();
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); arms.len()];
    let mut faults: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); arms.len()];
    // Evicts what the previous arm left in the caches (see the module docs).
    let mut scratch = (!std::env::args().any(|a| a == "warm")).then(|| vec![0u8; SCRATCH]);
    // A fresh order every round (a seeded shuffle, not a rotation): a rotation keeps every
    // arm behind the same predecessor, and an arm that runs right after one that freed a
    // block of its size reuses that block hot in the caches (measured: `bytes-mut` right
    // after `pooled-buf`, both 12 MiB, read 1.5x faster than `chain`).
    let mut order: Vec<usize> = (0..arms.len()).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..rounds {
        for k in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(k, (seed % (k as u64 + 1)) as usize);
        }
        for &i in &order {
            if let Some(scratch) = scratch.as_mut() {
                // Read and written through the caches (a `fill` may stream past them).
                scratch.iter_mut().for_each(|b| *b = b.wrapping_add(1));
                black_box(&scratch);
            }
            let before = minor_faults();
            let start = Instant::now();
            (arms[i].1)();
            times[i].push(start.elapsed().as_secs_f64());
            faults[i].push((minor_faults() - before) as f64);
        }
    }
    let index = |name: &str| arms.iter().position(|(n, _)| n == name).unwrap();
    println!(
        "chain bench: {rounds} rounds, arms interleaved; per-arm medians: ms per round, minor page faults per round"
    );
    for (i, (name, _)) in arms.iter().enumerate() {
        let mut t = times[i].clone();
        let mut f = faults[i].clone();
        println!(
            "{name:45} {:9.3} {:9.0}",
            median(&mut t) * 1e3,
            median(&mut f)
        );
    }
    let ratio = |a: &str, b: &str| {
        let (a, b) = (index(a), index(b));
        let mut r: Vec<f64> = times[a].iter().zip(&times[b]).map(|(x, y)| x / y).collect();
        median(&mut r)
    };
    println!("\nratios (median over rounds of the within-round ratio)");
    for &size in &sizes {
        for mode in ["length", "chunked"] {
            let p = format!("{}/{mode}", label(size));
            println!(
                "{p:16} chain/bytes-mut {:.3}  chain/collect-to-bytes {:.3}  chain/pooled-buf {:.3}  chain-idle1024/chain {:.3}",
                ratio(&format!("{p}/chain"), &format!("{p}/bytes-mut")),
                ratio(&format!("{p}/chain"), &format!("{p}/collect-to-bytes")),
                ratio(&format!("{p}/chain"), &format!("{p}/pooled-buf")),
                ratio(&format!("{p}/chain-idle1024"), &format!("{p}/chain")),
            );
        }
    }
    println!(
        "small-64B        chain/pooled-buf cycle {:.3}  with freeze {:.3}",
        ratio("small-64B/chain-cycle", "small-64B/pooled-buf-cycle"),
        ratio(
            "small-64B/chain-freeze-cycle",
            "small-64B/pooled-buf-freeze-cycle"
        ),
    );
}
