//! A multimodal HTTP ingest server (axum 0.8 on loopback) with several tenants, and its own
//! clients, in one process.
//!
//! ```text
//! cargo run --release --example ingest                                # the pool (a chain)
//! cargo run --release --example ingest -- --alloc pool-buf             # one PooledBuf
//! cargo run --release --example ingest -- --alloc bytesmut             # BytesMut
//! cargo run --release --example ingest -- --alloc to-bytes             # axum::body::to_bytes
//! cargo run --release --example ingest -- --serve --addr 127.0.0.1:8080
//! cargo run --release --example ingest_mimalloc                        # on mimalloc
//! ```
//!
//! The server answers `POST /ingest/{tenant}`: it reads the body with
//! [`Tenant::collect_body_chain_wait`](axon_buffer::Tenant::collect_body_chain_wait) into
//! a chain of pooled segments charged to the tenant (looked up per request with
//! `pool.tenant(id)`: no map of handles), freezes it into a
//! [`BytesChain`](axon_buffer::BytesChain) and fans it out to two consumers: a checksum
//! task, and a storage step on `spawn_blocking` that writes it out (vectored, one `IoSlice`
//! a segment) and checksums what it wrote. Neither needs the payload in one piece, so it is
//! never made contiguous: the chain is charged about what it holds, not the size class
//! above it. The response carries the checksum in `x-checksum`. A tenant at its hard limit
//! does not get a 429 at once: its upload waits for room, its socket unread, so TCP pushes
//! back on its client; a wait longer than `WAIT_AT_MOST` is given up and answered with the
//! crate's [`WaitElapsed`](axon_buffer::WaitElapsed): 503 with `Retry-After`.
//!
//! `--alloc` picks where bodies go, for comparison (`scripts/load.sh` runs them all):
//! `pool` (alias `chain`, the default) the chain above; `pool-buf` one contiguous
//! [`PooledBuf`](axon_buffer::PooledBuf) from
//! [`Tenant::collect_body_wait`](axon_buffer::Tenant::collect_body_wait), charged its size
//! class, frozen into `Bytes`; `bytesmut` a fresh `BytesMut` sized from the size hint;
//! `to-bytes` `axum::body::to_bytes`, what an axum handler writes by default. The
//! `ingest_mimalloc` example is this same server with mimalloc as the global allocator.
//! `GET /metrics`
//! serves the pool's OpenMetrics text.
//!
//! By default the example also runs the clients: for each tenant, `--connections` hyper
//! clients upload a realistic mix (70% text of about 1 KiB, 25% images of about 200 KiB,
//! 4% audio of about 3 MiB, 1% video chunks of 12 MiB), one upload in four chunked
//! (no `Content-Length`), and compare the server's checksum with their own; a 429 or 503
//! is retried after its `Retry-After`. tenant-0 is on a small plan (8 MiB soft limit), the
//! last tenant has a hard limit (`--hard-limit-mib`, default 20: two of its 12 MiB video
//! chunks at once do not fit, so its uploads wait for each other), and the summary shows
//! how long.
//!
//! The summary shows requests, MB/s, latency, the hit rate per size class, per-tenant
//! figures, peak RSS, and the exposition `GET /metrics` served at the end. The example exits non-zero on a leak (live bytes once every
//! request is done), a checksum mismatch, a failed upload, or a reservation refused at
//! rest (once idle, each hard-limited tenant must be able to reserve its whole limit).
//!
//! `--serve` runs the server alone (for `scripts/load.sh` and wrk) until Ctrl-C or SIGTERM,
//! then prints the same server-side summary and checks.
//!
//! The noisy-neighbour scenario (`scripts/noisy.sh`): `--max-live-bytes` gives the pool a
//! budget, `--tenant-hard-limit` every tenant a hard limit, `--quiet N` and `--flood N`
//! name two groups of tenants for an outside load (`quiet-0..`, `flood-0..`, in the path
//! as any other tenant; the built-in clients drive `tenant-*` only), `--guarantee-bytes`
//! sets room aside for each quiet tenant, and `--handler plain` answers with the body's
//! length alone, the README's handler, instead of the fan-out to consumers. With
//! `--alloc bytesmut`, `--bytesmut-budget` makes the flooding tenants' bodies wait for room
//! under a semaphore: the same admission without the pool, a control.
//!
//! ```text
//! cargo run --release --example ingest -- --serve --handler plain --max-live-bytes 96MiB \
//!     --tenant-hard-limit 64MiB --quiet 1 --flood 8 --guarantee-bytes 4MiB
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{IoSlice, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axon_buffer::{
    prometheus, BufferPool, BufferPoolSnapshot, BytesChain, CollectError, PoolClass, WaitElapsed,
};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use http_body::{Body as _, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

type Error = Box<dyn std::error::Error + Send + Sync>;
type HttpClient = Client<HttpConnector, BoxBody<Bytes, Infallible>>;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// The largest body the server takes; the mix tops out at 12 MiB.
const MAX_BODY: usize = 16 * MIB;
/// The longest an upload waits for room before it is answered 503 (`WaitElapsed`).
const WAIT_AT_MOST: Duration = Duration::from_secs(10);
/// Soft limits: tenant-0 is on a small plan, so its audio and video go over.
const DEFAULT_SOFT_LIMIT: u64 = 64 * MIB as u64;
const SMALL_PLAN_SOFT_LIMIT: u64 = 8 * MIB as u64;
/// Bodies the checksum task may have queued: back-pressure, and a bound on memory.
const QUEUED_BODIES: usize = 16;
/// Frames of a chunked upload.
const CHUNK: usize = 64 * KIB;
/// Tries of one upload that keeps being refused with a retry hint.
const ATTEMPTS: u32 = 20;

/// A multimodal HTTP ingest server on loopback, with its own load (or alone, with --serve).
#[derive(Parser, Debug)]
#[command(name = "ingest")]
struct Args {
    /// Where request bodies go: a pooled chain (the default), one pooled buffer, a fresh
    /// BytesMut, or axum's to_bytes.
    #[arg(long, value_enum, default_value_t = Alloc::Pool)]
    alloc: Alloc,
    /// Serve only, for an outside load (wrk): run until Ctrl-C or SIGTERM, then check
    /// and print the summary.
    #[arg(long)]
    serve: bool,
    /// Address to listen on, loopback only; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Tenants: tenant-0 .. tenant-{N-1}. The first has a small soft limit, the last a
    /// hard limit.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(2..=1000))]
    tenants: u16,
    /// Concurrent client connections per tenant.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    connections: u16,
    /// Uploads per tenant, spread over its connections.
    #[arg(long, default_value_t = 5000)]
    requests: u64,
    /// Stop sending new uploads after this many seconds.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// The last tenant's hard limit, in MiB (below 24, two of its video chunks at once do
    /// not fit: the second waits for room).
    #[arg(long, default_value_t = 20)]
    hard_limit_mib: u64,
    /// After the run, keep serving (/metrics too) this many seconds; Ctrl-C ends it.
    #[arg(long, default_value_t = 0)]
    serve_seconds: u64,
    /// The pool's idle timeout in seconds (the decay frees slabs idle that long); the
    /// crate's default (20 s) when not given.
    #[arg(long)]
    idle_timeout_secs: Option<u64>,
    /// The pool's budget, `max_live_bytes`, for every buffer of every tenant (bytes, or
    /// with a suffix: 96MiB, 512KiB, 1GiB). None by default. The bytesmut server does not
    /// use the pool for bodies: no budget applies there.
    #[arg(long, value_parser = parse_size)]
    max_live_bytes: Option<u64>,
    /// The cap on idle slabs across all classes, `max_idle_bytes` (bytes or with a
    /// suffix); the crate's default (256 MiB) when not given.
    #[arg(long, value_parser = parse_size)]
    max_idle_bytes: Option<u64>,
    /// Every tenant's hard limit (`default_tenant_hard_limit`; bytes or with a suffix).
    /// The last `tenant-*` keeps `--hard-limit-mib`.
    #[arg(long, value_parser = parse_size)]
    tenant_hard_limit: Option<u64>,
    /// Quiet tenants for an outside load: quiet-0 .. quiet-{N-1}.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1000))]
    quiet: u16,
    /// Flooding tenants for an outside load: flood-0 .. flood-{N-1}.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1000))]
    flood: u16,
    /// Room under `--max-live-bytes` set aside for each quiet tenant
    /// (`Tenant::set_guarantee`; bytes or with a suffix).
    #[arg(long, value_parser = parse_size)]
    guarantee_bytes: Option<u64>,
    /// What a handler does with a body: hand it to two consumers and answer with their
    /// checksum, or (plain) answer with its length at once, as the README's handler does.
    #[arg(long, value_enum, default_value_t = Handler::FanOut)]
    handler: Handler,
    /// `--alloc bytesmut` only, a diagnostic: flooding tenants' bodies wait for room under
    /// this many bytes (a `tokio::sync::Semaphore` in 4 KiB units taken for the body's
    /// length, held until it drops), quiet tenants' never: the admission a budget with a
    /// guarantee does, without the pool.
    #[arg(long, value_parser = parse_size)]
    bytesmut_budget: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Handler {
    /// Freeze the body and fan it out to a checksum task and a blocking storage step.
    FanOut,
    /// Freeze the body and answer with its length.
    Plain,
}

/// A size: whole bytes, or a whole number with the suffix K/KiB, M/MiB or G/GiB.
fn parse_size(text: &str) -> Result<u64, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit: u64 = match &text[digits.len()..] {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}: use B, KiB, MiB or GiB")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of bytes (or KiB, MiB, GiB)"))?;
    n.checked_mul(unit)
        .ok_or_else(|| format!("{text} is too large"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Alloc {
    /// `Tenant::collect_body_chain_wait` into pooled segments, frozen into a `BytesChain`.
    #[value(alias = "chain")]
    Pool,
    /// `Tenant::collect_body_wait` into one contiguous pooled buffer, frozen into `Bytes`.
    PoolBuf,
    /// A `BytesMut` per body, sized from the size hint, freed on drop.
    Bytesmut,
    /// `axum::body::to_bytes`: the frames collected, then copied into one `Bytes`.
    ToBytes,
}

impl Alloc {
    fn name(self) -> &'static str {
        match self {
            Alloc::Pool => "pool",
            Alloc::PoolBuf => "pool-buf",
            Alloc::Bytesmut => "bytesmut",
            Alloc::ToBytes => "to-bytes",
        }
    }

    /// Bodies go to the pool (and its budget and limits apply to them).
    fn pooled(self) -> bool {
        matches!(self, Alloc::Pool | Alloc::PoolBuf)
    }
}

/// Also the entry point of the `ingest_mimalloc` example, which includes this file.
#[tokio::main]
pub(crate) async fn main() -> ExitCode {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        eprintln!("--addr {}: this example serves on loopback only", args.addr);
        return ExitCode::from(2);
    }
    if args.handler == Handler::Plain && !args.serve {
        eprintln!(
            "--handler plain answers no checksum for the built-in clients: use it with --serve"
        );
        return ExitCode::from(2);
    }
    if args.guarantee_bytes.is_some() && args.quiet == 0 {
        eprintln!("--guarantee-bytes is for the quiet tenants: give --quiet N too");
        return ExitCode::from(2);
    }
    if args.bytesmut_budget.is_some() && (args.alloc != Alloc::Bytesmut || args.flood == 0) {
        eprintln!("--bytesmut-budget is for the flooding tenants of --alloc bytesmut: give both");
        return ExitCode::from(2);
    }
    if args
        .bytesmut_budget
        .is_some_and(|bytes| bytes < ADMISSION_UNIT)
    {
        eprintln!("--bytesmut-budget admits nothing below {ADMISSION_UNIT} bytes");
        return ExitCode::from(2);
    }
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ingest failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the server (and the clients, unless `--serve`), prints the summary; `Ok(false)`
/// when a check failed.
async fn run(args: Args) -> Result<bool, Error> {
    // Idle slabs leave by themselves once the load is over, with the crate's defaults: the
    // decay thread (on by default) frees what stayed idle the timeout, and gives its pages
    // back.
    let mut builder = BufferPool::builder()
        .default_tenant_soft_limit(DEFAULT_SOFT_LIMIT)
        .default_tenant_hard_limit(args.tenant_hard_limit);
    if let Some(secs) = args.idle_timeout_secs {
        builder = builder.idle_timeout(Some(Duration::from_secs(secs)));
    }
    if let Some(budget) = args.max_live_bytes {
        builder = builder.max_live_bytes(budget);
    }
    if let Some(cap) = args.max_idle_bytes {
        builder = builder.max_idle_bytes(cap);
    }
    let pool = builder.build();
    // The built-in clients drive `tenant-*`; the quiet and flooding groups are for an
    // outside load. The server keeps figures and checks for all of them.
    let ids: Vec<String> = (0..args.tenants).map(|i| format!("tenant-{i}")).collect();
    let quiet: Vec<String> = (0..args.quiet).map(|i| format!("quiet-{i}")).collect();
    let flood: Vec<String> = (0..args.flood).map(|i| format!("flood-{i}")).collect();
    let known: Vec<String> = ids.iter().chain(&quiet).chain(&flood).cloned().collect();
    pool.set_tenant_soft_limit(&ids[0], SMALL_PLAN_SOFT_LIMIT);
    pool.tenant(ids.last().expect("at least two tenants"))
        .set_hard_limit(Some(args.hard_limit_mib * MIB as u64));
    for id in &known {
        pool.tenant(id); // registered now: the summary lists every one
    }
    if let Some(bytes) = args.guarantee_bytes {
        for id in &quiet {
            pool.tenant(id).set_guarantee(Some(bytes))?;
        }
    }

    let (to_checksum, checksum_rx) = mpsc::channel(QUEUED_BODIES);
    let checksum_task = tokio::spawn(checksum_consumer(checksum_rx));
    let server = Arc::new(Server {
        pool: pool.clone(),
        stats: known
            .iter()
            .map(|id| (id.clone(), TenantStats::default()))
            .collect(),
        other: TenantStats::default(),
        to_checksum,
        mismatches: AtomicU64::new(0),
        fan_out: args.handler == Handler::FanOut,
        chain: args.alloc == Alloc::Pool,
        admission: args
            .bytesmut_budget
            .map(|bytes| bytes / ADMISSION_UNIT)
            .map(|units| (Arc::new(Semaphore::new(units as usize)), units)),
    });
    let ingest = match args.alloc {
        Alloc::Pool | Alloc::PoolBuf => post(ingest_pooled),
        Alloc::Bytesmut => post(ingest_bytesmut),
        Alloc::ToBytes => post(ingest_to_bytes),
    };
    let app = Router::new()
        .route("/ingest/{tenant}", ingest)
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(&server));

    let listener = TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    println!(
        "ingest: alloc={}, {} tenants, serving http://{addr}/ingest/{{tenant}}",
        args.alloc.name(),
        known.len()
    );
    println!(
        "budget: max_live_bytes {}, every tenant's hard limit {}, quiet tenants' guarantee {}, \
         handler {}{}",
        args.max_live_bytes.map_or("none".into(), human),
        args.tenant_hard_limit.map_or("none".into(), human),
        args.guarantee_bytes.map_or("none".into(), human),
        if args.handler == Handler::FanOut {
            "fan-out"
        } else {
            "plain"
        },
        if args.alloc.pooled() {
            ""
        } else {
            " (bodies outside the pool: no budget or limit applies to them)"
        }
    );
    println!("metrics: serving http://{addr}/metrics");
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                stopped.await.ok();
            })
            .await
    });

    let start = Instant::now();
    let mut ok = true;
    let mut stop = Some(stop);
    let mut serving = Some(serving);
    let load = if args.serve {
        wait_for_signal().await;
        println!("ingest: stopping");
        // Requests in flight finish first: the figures below are at rest.
        shut_down(stop.take(), serving.take()).await?;
        None
    } else {
        let load = drive(&args, &ids, addr, &server, start).await?;
        ok &= load.failures == 0;
        Some(load)
    };
    let elapsed = start.elapsed();

    // Every request is done. A request its client gave up on (wrk stops mid-upload) may
    // still have a consumer finishing with its body: give those a moment.
    let settle = Instant::now() + Duration::from_secs(2);
    while pool.live_bytes() != 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let snapshot = pool.snapshot();
    let totals = ServerTotals::of(&server);
    let mismatches = server.mismatches.load(Relaxed);
    ok &= mismatches == 0;
    print_summary(
        &args,
        &pool,
        &known,
        &server.stats,
        &snapshot,
        elapsed,
        load.as_ref(),
    );
    if server.fan_out {
        println!(
            "checksums   {} bodies checked by both consumers, {mismatches} disagreed",
            totals.requests
        );
    }
    ok &= check_at_rest(&pool, &known, &snapshot, args.max_live_bytes);
    println!(
        "load-summary alloc={} requests={} bytes={} refused={} errors={} seconds={:.3}",
        args.alloc.name(),
        totals.requests,
        totals.bytes,
        totals.refused,
        totals.errors,
        elapsed.as_secs_f64()
    );
    if let Some(load) = &load {
        // scripts/promtool-check.sh lints this text.
        print!(
            "\n# Prometheus text (GET /metrics, once the clients were done)\n{}",
            load.metrics
        );
    }
    if ok {
        println!(
            "ok: every tenant's live bytes are back to 0{}",
            if server.fan_out {
                ", every checksum matched"
            } else {
                ""
            }
        );
    } else {
        println!("FAILED: see above");
    }

    if args.serve_seconds > 0 && serving.is_some() {
        println!(
            "metrics: serving {} s more (Ctrl-C ends it)",
            args.serve_seconds
        );
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(args.serve_seconds)) => {}
            _ = tokio::signal::ctrl_c() => println!("metrics: interrupted"),
        }
    }
    shut_down(stop, serving).await?;
    drop(server); // the checksum task's sender: it ends
    checksum_task.await?;
    Ok(ok)
}

/// Stops accepting and waits (10 s at most) for open connections to finish.
async fn shut_down(
    stop: Option<oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
) -> Result<(), Error> {
    let (Some(stop), Some(serving)) = (stop, serving) else {
        return Ok(());
    };
    stop.send(()).ok();
    match tokio::time::timeout(Duration::from_secs(10), serving).await {
        Ok(served) => Ok(served??),
        Err(_) => Err("the server did not stop within 10 s".into()),
    }
}

/// Ctrl-C or SIGTERM.
async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

/// What the handlers share. Per-tenant figures are kept for the configured tenants only
/// (a fixed map, built once); any other id counts in `other`.
struct Server {
    pool: BufferPool,
    stats: HashMap<String, TenantStats>,
    other: TenantStats,
    to_checksum: mpsc::Sender<(Payload, oneshot::Sender<u64>)>,
    /// The two consumers disagreed on a body.
    mismatches: AtomicU64,
    /// `--handler fan-out`: bodies go to the consumers; otherwise answered with their length.
    fan_out: bool,
    /// `--alloc pool`: the pooled handler collects a chain; otherwise one `PooledBuf`.
    chain: bool,
    /// `--bytesmut-budget`: the semaphore and its size, in 4 KiB units.
    admission: Option<(Arc<Semaphore>, u64)>,
}

/// The unit of `--bytesmut-budget`'s semaphore.
const ADMISSION_UNIT: u64 = 4096;

/// A collected body, as the consumers see it: one piece (`pool-buf`, `bytesmut`,
/// `to-bytes`), or the chain's segments (`pool`). Cloning shares the memory.
#[derive(Clone)]
enum Payload {
    Contiguous(Bytes),
    Chain(BytesChain),
}

impl Payload {
    fn len(&self) -> usize {
        match self {
            Payload::Contiguous(bytes) => bytes.len(),
            Payload::Chain(chain) => chain.len(),
        }
    }

    /// The payload's pieces, in order: one for a contiguous body, each segment of a chain.
    fn segments(&self) -> impl Iterator<Item = &Bytes> {
        let (whole, chain) = match self {
            Payload::Contiguous(bytes) => (Some(bytes), None),
            Payload::Chain(chain) => (None, Some(chain.iter())),
        };
        whole.into_iter().chain(chain.into_iter().flatten())
    }

    /// The checksum of the payload read in order, piece by piece (no contiguous copy).
    fn checksum(&self) -> u64 {
        let mut sum = Checksum::new(self.len());
        for segment in self.segments() {
            sum.update(segment);
        }
        sum.finish()
    }
}

#[derive(Default)]
struct TenantStats {
    requests: AtomicU64,
    bytes: AtomicU64,
    /// Answered 429 or 503 with a retry hint (a refusal, or a wait past `WAIT_AT_MOST`).
    refused: AtomicU64,
    /// Answered any other error (400, 413, 500).
    errors: AtomicU64,
    /// The tenant's live bytes right after a body was collected, at most.
    peak_live: AtomicU64,
}

impl Server {
    fn stats(&self, id: &str) -> &TenantStats {
        self.stats.get(id).unwrap_or(&self.other)
    }
}

/// `POST /ingest/{tenant}` with the pool: the body into a chain of segments (`--alloc pool`)
/// or one contiguous buffer (`--alloc pool-buf`), charged to the tenant.
async fn ingest_pooled(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    mut body: Body,
) -> Response {
    let stats = server.stats(&id);
    let tenant = server.pool.tenant(&id);
    let collect = async {
        if server.chain {
            let chain = tenant.collect_body_chain_wait(&mut body, MAX_BODY).await?;
            Ok(Payload::Chain(chain.freeze()))
        } else {
            let buf = tenant.collect_body_wait(&mut body, MAX_BODY).await?;
            Ok(Payload::Contiguous(buf.freeze()))
        }
    };
    // Over a limit the upload waits for room, its body unread; bounded, so a tenant that
    // never drains gets an answer: past the deadline the wait is dropped (it charged
    // nothing and hands its turn on) and answered with the crate's WaitElapsed.
    let refusal = match tokio::time::timeout(WAIT_AT_MOST, collect).await {
        Ok(Ok(payload)) => {
            stats.peak_live.fetch_max(tenant.live_bytes(), Relaxed);
            drop(tenant);
            return answer(&server, stats, payload).await;
        }
        Ok(Err::<_, CollectError<axum::Error>>(err)) if err.retry_after().is_none() => {
            stats.errors.fetch_add(1, Relaxed);
            return err.into_response();
        }
        Ok(Err(err)) => err.into_response(),
        Err(_elapsed) => WaitElapsed::new(WAIT_AT_MOST).into_response(),
    };
    stats.refused.fetch_add(1, Relaxed);
    // hyper closes a connection whose request body was left unread, and a client still
    // sending sees a reset instead of this answer: read the rest first, so the client can
    // retry after the hint.
    discard(&mut body).await;
    refusal
}

/// `POST /ingest/{tenant}` without the pool: the body into a fresh `BytesMut`.
async fn ingest_bytesmut(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, (StatusCode, &'static str)> {
    let stats = server.stats(&id);
    // `--bytesmut-budget`: a flooding tenant's body waits for room for its length.
    let _admitted = match &server.admission {
        Some((room, size)) if id.starts_with("flood-") => {
            // A body the semaphore can never admit is refused, not left waiting, and counted
            // as the pooled handler counts a body that can never fit.
            let units = body.size_hint().lower().div_ceil(ADMISSION_UNIT);
            let Some(units) = u32::try_from(units)
                .ok()
                .filter(|&units| u64::from(units) <= *size)
            else {
                stats.errors.fetch_add(1, Relaxed);
                return Err((StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"));
            };
            Some(
                Arc::clone(room)
                    .acquire_many_owned(units)
                    .await
                    .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"))?,
            )
        }
        _ => None,
    };
    match collect_bytesmut(body, MAX_BODY).await {
        Ok(data) => Ok(answer(&server, stats, Payload::Contiguous(data)).await),
        Err(refusal) => {
            stats.errors.fetch_add(1, Relaxed);
            Err(refusal)
        }
    }
}

/// `POST /ingest/{tenant}` as an axum handler reads a body by default: `to_bytes` collects
/// the frames and copies them into one `Bytes` (no copy when the body came in one frame).
async fn ingest_to_bytes(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, (StatusCode, &'static str)> {
    let stats = server.stats(&id);
    match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(data) => Ok(answer(&server, stats, Payload::Contiguous(data)).await),
        Err(err) => {
            stats.errors.fetch_add(1, Relaxed);
            let too_large = std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            Err(if too_large {
                (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
            } else {
                (StatusCode::BAD_REQUEST, "broken request body\n")
            })
        }
    }
}

/// The loop a `BytesMut` user writes: capacity from the size hint, one copy per frame.
async fn collect_bytesmut(mut body: Body, max: usize) -> Result<Bytes, (StatusCode, &'static str)> {
    const TOO_LARGE: (StatusCode, &str) =
        (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    let hint = body.size_hint().lower();
    if hint > max as u64 {
        return Err(TOO_LARGE);
    }
    let mut buf = BytesMut::with_capacity(hint as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| (StatusCode::BAD_REQUEST, "broken request body\n"))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(TOO_LARGE);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Reads and drops what is left of a refused body: at most `MAX_BODY` bytes, 10 s.
async fn discard(body: &mut Body) {
    let rest = async {
        let mut left = MAX_BODY;
        while let Some(Ok(frame)) = body.frame().await {
            let len = frame.data_ref().map_or(0, Bytes::len);
            match left.checked_sub(len) {
                Some(still) => left = still,
                None => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), rest).await;
}

/// The answer to a collected body: `fan_out`, or with `--handler plain` its length alone.
async fn answer(server: &Server, stats: &TenantStats, data: Payload) -> Response {
    if server.fan_out {
        return fan_out(server, stats, data).await;
    }
    let len = data.len() as u64;
    drop(data); // the slabs return here, before the answer is written
    stats.requests.fetch_add(1, Relaxed);
    stats.bytes.fetch_add(len, Relaxed);
    format!("{len} bytes\n").into_response()
}

/// Hands the body to the checksum task and to a blocking storage step, and answers with
/// the checksum once both are done and agree. Three owners of the same memory: each slab
/// returns to the pool when the last drops, on whichever thread that is.
async fn fan_out(server: &Server, stats: &TenantStats, data: Payload) -> Response {
    let len = data.len() as u64;
    let (reply, checksummed) = oneshot::channel();
    if server
        .to_checksum
        .send((data.clone(), reply))
        .await
        .is_err()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let stored = tokio::task::spawn_blocking(move || store(data));
    let (Ok(sum), Ok(Ok(stored_sum))) = (checksummed.await, stored.await) else {
        stats.errors.fetch_add(1, Relaxed);
        return (StatusCode::INTERNAL_SERVER_ERROR, "a consumer failed\n").into_response();
    };
    if sum != stored_sum {
        server.mismatches.fetch_add(1, Relaxed);
        stats.errors.fetch_add(1, Relaxed);
        return (StatusCode::INTERNAL_SERVER_ERROR, "consumers disagree\n").into_response();
    }
    stats.requests.fetch_add(1, Relaxed);
    stats.bytes.fetch_add(len, Relaxed);
    let header = HeaderValue::from_str(&format!("{sum:016x}")).expect("hex is a header value");
    ([("x-checksum", header)], format!("{len} bytes\n")).into_response()
}

/// The storage step, on a blocking thread: writes the body out (to `io::sink` here, where
/// a real server writes a file or calls an object store) and checksums what it wrote. A
/// chain goes out in vectored writes, one `IoSlice` a segment, as `writev` takes them.
fn store(data: Payload) -> std::io::Result<u64> {
    let mut out = std::io::sink();
    let sum = data.checksum();
    match data {
        Payload::Contiguous(bytes) => out.write_all(&bytes)?,
        Payload::Chain(chain) => write_all_vectored(&mut out, chain)?,
    }
    out.flush()?;
    Ok(sum)
}

/// Writes every byte of `data` with `write_vectored`, up to 64 segments a call; each
/// segment written in full is dropped as the writer moves past it.
fn write_all_vectored(out: &mut impl Write, mut data: impl Buf) -> std::io::Result<()> {
    while data.has_remaining() {
        let mut slices = [IoSlice::new(&[]); 64];
        let n = data.chunks_vectored(&mut slices);
        match out.write_vectored(&slices[..n]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => data.advance(written),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The checksum consumer: one task, fed through a bounded channel. Drops each body before
/// answering, so a client holding its answer holds no slab.
async fn checksum_consumer(mut bodies: mpsc::Receiver<(Payload, oneshot::Sender<u64>)>) {
    while let Some((data, reply)) = bodies.recv().await {
        let sum = data.checksum();
        drop(data);
        reply.send(sum).ok();
    }
}

/// `GET /metrics`: the pool's OpenMetrics text.
async fn metrics(State(server): State<Arc<Server>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)],
        prometheus::render(&server.pool),
    )
}

/// The server's figures summed over tenants.
struct ServerTotals {
    requests: u64,
    bytes: u64,
    refused: u64,
    errors: u64,
}

impl ServerTotals {
    fn of(server: &Server) -> ServerTotals {
        let all = server.stats.values().chain([&server.other]);
        let sum = |f: fn(&TenantStats) -> &AtomicU64| all.clone().map(|s| f(s).load(Relaxed)).sum();
        ServerTotals {
            requests: sum(|s| &s.requests),
            bytes: sum(|s| &s.bytes),
            refused: sum(|s| &s.refused),
            errors: sum(|s| &s.errors),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The clients
// ---------------------------------------------------------------------------------------

/// The kinds of payload a multimodal ingest sees.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Text,
    Image,
    Audio,
    Video,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Text, Kind::Image, Kind::Audio, Kind::Video];

    /// Picks a kind and a size from one random number: 70% text, 25% images, 4% audio,
    /// 1% video (`scripts/ingest.lua` sends the same mix).
    fn pick(r: u64) -> (Kind, usize) {
        let jitter = (r >> 8) as usize;
        match r % 100 {
            0..70 => (Kind::Text, 512 + jitter % KIB),
            70..95 => (Kind::Image, 150 * KIB + jitter % (100 * KIB)),
            95..99 => (Kind::Audio, 5 * MIB / 2 + jitter % MIB),
            _ => (Kind::Video, 12 * MIB),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Image => "image",
            Kind::Audio => "audio",
            Kind::Video => "video",
        }
    }
}

/// Big enough for any payload, at any offset a client takes it from.
const PATTERN_BYTES: usize = 13 * MIB;

/// What the clients saw.
#[derive(Default)]
struct LoadReport {
    uploads: [AtomicU64; 4],
    bytes: AtomicU64,
    chunked: AtomicU64,
    retried: AtomicU64,
    mismatches: AtomicU64,
    failures: u64,
    latencies_us: Mutex<Vec<u64>>,
    /// The exposition `GET /metrics` answered once the clients were done.
    metrics: String,
}

/// Runs every client to the end, then checks `/metrics` over HTTP.
async fn drive(
    args: &Args,
    ids: &[String],
    addr: SocketAddr,
    server: &Arc<Server>,
    start: Instant,
) -> Result<LoadReport, Error> {
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let pattern: Bytes = (0..PATTERN_BYTES / 8)
        .flat_map(|_| rng.next().to_le_bytes())
        .collect::<Vec<u8>>()
        .into();
    let report = Arc::new(LoadReport::default());
    let progress = tokio::spawn(progress(Arc::clone(server), Arc::clone(&report), start));

    let connections = u64::from(args.connections);
    let mut tasks = Vec::new();
    for (t, id) in ids.iter().enumerate() {
        for c in 0..connections {
            let requests = args.requests / connections + u64::from(c < args.requests % connections);
            let seed = (t as u64) << 16 | c;
            let url = format!("http://{addr}/ingest/{id}");
            let (client, pattern, report) = (client.clone(), pattern.clone(), Arc::clone(&report));
            tasks.push(tokio::spawn(async move {
                uploader(client, url, seed, requests, deadline, pattern, report).await
            }));
        }
    }
    let mut failures = 0;
    for task in tasks {
        failures += task.await?;
    }
    progress.abort();
    let _ = progress.await; // its handles are dropped once it has ended

    // The metrics route, as a scraper sees it.
    let response = client
        .get(format!("http://{addr}/metrics").parse()?)
        .await?;
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let text = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&text);
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    println!(
        "metrics: GET /metrics -> {series} samples, {}",
        content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("no content type")
    );
    if content_type.as_ref().and_then(|v| v.to_str().ok()) != Some(prometheus::CONTENT_TYPE)
        || !text.contains("buffer_pool_live_bytes ")
    {
        eprintln!("metrics: not the OpenMetrics exposition");
        failures += 1;
    }

    let mut report = Arc::into_inner(report).ok_or("a client still holds the report")?;
    report.failures = failures;
    report.metrics = text.into_owned();
    Ok(report)
}

/// One client connection's worth of uploads (or until the deadline); returns its failures.
async fn uploader(
    client: HttpClient,
    url: String,
    seed: u64,
    requests: u64,
    deadline: Instant,
    pattern: Bytes,
    report: Arc<LoadReport>,
) -> u64 {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D ^ (seed + 1).wrapping_mul(0xA076_1D64_78BD_642F));
    let mut latencies = Vec::with_capacity(requests as usize);
    let mut failures = 0;
    for _ in 0..requests {
        if Instant::now() >= deadline {
            break;
        }
        let r = rng.next();
        let (kind, len) = Kind::pick(r);
        let offset = (r >> 32) as usize % (PATTERN_BYTES - len);
        let payload = pattern.slice(offset..offset + len);
        let chunked = rng.next().is_multiple_of(4);
        match upload(&client, &url, &payload, chunked, &report).await {
            Ok((took, sum)) => {
                latencies.push(took.as_micros() as u64);
                report.uploads[kind as usize].fetch_add(1, Relaxed);
                report.bytes.fetch_add(len as u64, Relaxed);
                report.chunked.fetch_add(u64::from(chunked), Relaxed);
                if sum != checksum(&payload) {
                    report.mismatches.fetch_add(1, Relaxed);
                    eprintln!("{url}: checksum mismatch on a {len}-byte {}", kind.name());
                    failures += 1;
                }
            }
            Err(e) => {
                eprintln!("{url}: {} of {len} bytes failed: {e}", kind.name());
                failures += 1;
            }
        }
    }
    report.latencies_us.lock().unwrap().extend(latencies);
    failures
}

/// Sends one upload, again after the `Retry-After` of each 429 or 503; returns the time
/// of the successful try and the server's checksum.
async fn upload(
    client: &HttpClient,
    url: &str,
    payload: &Bytes,
    chunked: bool,
    report: &LoadReport,
) -> Result<(Duration, u64), Error> {
    for _ in 0..ATTEMPTS {
        let body = if chunked {
            let frames: Vec<Result<_, Infallible>> = (0..payload.len())
                .step_by(CHUNK)
                .map(|at| {
                    Ok(Frame::data(
                        payload.slice(at..(at + CHUNK).min(payload.len())),
                    ))
                })
                .collect();
            StreamBody::new(futures_util::stream::iter(frames)).boxed()
        } else {
            Full::new(payload.clone()).boxed()
        };
        let request = http::Request::post(url).body(body)?;
        let sent = Instant::now();
        let response = client.request(request).await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let sum = response
            .headers()
            .get("x-checksum")
            .and_then(|v| u64::from_str_radix(v.to_str().ok()?, 16).ok());
        let text = response.into_body().collect().await?.to_bytes();
        match (status, retry_after, sum) {
            (StatusCode::OK, _, Some(sum)) => return Ok((sent.elapsed(), sum)),
            (StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE, Some(after), _) => {
                report.retried.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_secs(after)).await;
            }
            _ => return Err(format!("{status}: {}", String::from_utf8_lossy(&text).trim()).into()),
        }
    }
    Err(format!("still refused after {ATTEMPTS} tries").into())
}

/// A line every second on stderr while the clients run.
async fn progress(server: Arc<Server>, report: Arc<LoadReport>, start: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let s = server.pool.snapshot();
        eprintln!(
            "  {:>5.1} s  {:>7} uploads  {:>9.1} MB  live {}  idle {}  rss {}",
            start.elapsed().as_secs_f64(),
            report.uploads.iter().map(|u| u.load(Relaxed)).sum::<u64>(),
            report.bytes.load(Relaxed) as f64 / 1e6,
            human(s.live_bytes),
            human(s.idle_bytes),
            rss("VmRSS:").map_or("n/a".into(), human)
        );
    }
}

// ---------------------------------------------------------------------------------------
// Summary and checks
// ---------------------------------------------------------------------------------------

fn print_summary(
    args: &Args,
    pool: &BufferPool,
    ids: &[String],
    stats: &HashMap<String, TenantStats>,
    snapshot: &BufferPoolSnapshot,
    elapsed: Duration,
    load: Option<&LoadReport>,
) {
    println!();
    println!(
        "== summary: alloc={}, {} tenants, {} ==",
        args.alloc.name(),
        ids.len(),
        if args.serve {
            "served an outside load".to_owned()
        } else {
            format!("{} connections each", args.connections)
        }
    );
    if let Some(load) = load {
        let uploads: Vec<u64> = load.uploads.iter().map(|u| u.load(Relaxed)).collect();
        let total: u64 = uploads.iter().sum();
        let bytes = load.bytes.load(Relaxed);
        let secs = elapsed.as_secs_f64();
        println!(
            "requests    {total} in {secs:.2} s ({:.0} req/s), {:.1} MB, {:.1} MB/s",
            total as f64 / secs,
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / secs
        );
        let mix: Vec<String> = Kind::ALL
            .iter()
            .zip(&uploads)
            .map(|(kind, n)| format!("{n} {}", kind.name()))
            .collect();
        println!(
            "mix         {}; {} chunked (no Content-Length)",
            mix.join(", "),
            load.chunked.load(Relaxed)
        );
        let mut latencies = std::mem::take(&mut *load.latencies_us.lock().unwrap());
        latencies.sort_unstable();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
        };
        if let (Some(p50), Some(p99)) = (at(0.50), at(0.99)) {
            println!(
                "latency     p50 {:.2} ms, p99 {:.2} ms (client side, whole upload and answer)",
                *p50 as f64 / 1e3,
                *p99 as f64 / 1e3
            );
        }
        println!(
            "clients     {} retried after a 429/503 Retry-After, {} checksum mismatches, {} failed",
            load.retried.load(Relaxed),
            load.mismatches.load(Relaxed),
            load.failures
        );
    }
    println!(
        "peak RSS    {} (VmHWM)",
        rss("VmHWM:").map_or("n/a".into(), human)
    );
    println!(
        "RSS now     {} (VmRSS)",
        rss("VmRSS:").map_or("n/a".into(), human)
    );

    if args.alloc.pooled() {
        println!();
        println!("class        slab      hits   misses  hit rate");
        for class in PoolClass::non_oversize() {
            let hits = snapshot.pool_hits[&class];
            let misses = snapshot.pool_misses[&class];
            let rate = match hits + misses {
                0 => "-".to_owned(),
                n => format!("{:.1}%", 100.0 * hits as f64 / n as f64),
            };
            println!(
                "{:<9} {:>8} {hits:>9} {misses:>8}  {rate:>8}",
                class.slug(),
                human(class.capacity() as u64)
            );
        }
        println!(
            "oversize  {:>8} {:>9} allocations, never pooled; {} promotions (chunked bodies)",
            "exact", snapshot.oversize_allocations_total, snapshot.promotions_total
        );
    } else {
        println!(
            "pool        not used for bodies: each was a fresh {}, freed on drop",
            if args.alloc == Alloc::Bytesmut {
                "BytesMut"
            } else {
                "Bytes (axum::body::to_bytes)"
            }
        );
    }

    println!();
    println!(
        "tenant       requests         MB  peak live  final live  soft limit  exceeded  hard limit  guarantee  waited  abandoned  refused"
    );
    for id in ids {
        let s = &stats[id];
        let tenant = pool.tenant(id);
        let limit = |bytes: Option<u64>| bytes.map_or("-".to_owned(), human);
        println!(
            "{id:<12} {:>8} {:>10.1} {:>10} {:>11} {:>11} {:>9} {:>11} {:>10} {:>7.2}s {:>10} {:>8}",
            s.requests.load(Relaxed),
            s.bytes.load(Relaxed) as f64 / 1e6,
            human(s.peak_live.load(Relaxed)),
            human(snapshot.tenant_live_bytes.get(id).copied().unwrap_or(0)),
            human(tenant.soft_limit()),
            snapshot
                .tenant_soft_limit_exceeded_total
                .get(id)
                .copied()
                .unwrap_or(0),
            limit(tenant.hard_limit()),
            limit(tenant.guarantee()),
            snapshot
                .tenant_wait_time_total
                .get(id)
                .map_or(0.0, Duration::as_secs_f64),
            snapshot
                .tenant_waits_abandoned_total
                .get(id)
                .copied()
                .unwrap_or(0),
            s.refused.load(Relaxed),
        );
    }
    println!();
    println!(
        "pool live   {} (every request done)",
        human(snapshot.live_bytes)
    );
    println!(
        "idle        {} in {} slabs in the snapshot after the last request; the decay thread \
         frees a slab idle {} s (--idle-timeout-secs; the default 20 s otherwise) within 1.5x that",
        human(snapshot.idle_bytes),
        snapshot.idle_slabs.values().sum::<u64>(),
        args.idle_timeout_secs.unwrap_or(20),
    );
}

/// At rest: nothing live, and every tenant can be charged again (its whole hard limit, or
/// 1 MiB; at most what the budget leaves it beside the other tenants' guarantees). False,
/// with the reason printed, when a check fails.
fn check_at_rest(
    pool: &BufferPool,
    ids: &[String],
    snapshot: &BufferPoolSnapshot,
    budget: Option<u64>,
) -> bool {
    let guarantees: u64 = snapshot.tenant_guarantee_bytes.values().sum();
    let mut ok = true;
    if snapshot.live_bytes != 0 {
        println!(
            "LEAK        the pool still counts {} live",
            human(snapshot.live_bytes)
        );
        ok = false;
    }
    for id in ids {
        let tenant = pool.tenant(id);
        if tenant.live_bytes() != 0 {
            println!(
                "LEAK        {id} still holds {}",
                human(tenant.live_bytes())
            );
            ok = false;
        }
        let mut bytes = tenant.hard_limit().unwrap_or(MIB as u64);
        if let Some(budget) = budget {
            let others = guarantees - tenant.guarantee().unwrap_or(0);
            bytes = bytes.min(budget.saturating_sub(others));
        }
        if let Err(e) = tenant.try_reserve(bytes) {
            println!(
                "REFUSED     {id} cannot reserve {} at rest: {e}",
                human(bytes)
            );
            ok = false;
        }
    }
    if ok {
        println!(
            "at rest     live bytes 0 for the pool and each of the {} tenants, and each tenant \
             could reserve its whole hard limit (1 MiB where it has none; at most the budget \
             less the others' guarantees), released at once",
            ids.len()
        );
    }
    ok
}

/// Order-sensitive checksum over 64-bit words: a byte in the wrong place, or one left from
/// a slab's earlier user, changes it.
fn checksum(data: &[u8]) -> u64 {
    let mut sum = Checksum::new(data.len());
    sum.update(data);
    sum.finish()
}

/// [`checksum`] fed piece by piece: a word split between two segments is put together
/// from both, so a chain's checksum is that of the same bytes in one piece.
struct Checksum {
    sum: u64,
    /// The start of a word whose rest is in the next piece.
    partial: [u8; 8],
    filled: usize,
}

impl Checksum {
    /// A checksum of `len` bytes in all.
    fn new(len: usize) -> Checksum {
        Checksum {
            sum: len as u64,
            partial: [0; 8],
            filled: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        if self.filled > 0 {
            let take = (8 - self.filled).min(data.len());
            self.partial[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < 8 {
                return;
            }
            self.sum = self.sum.rotate_left(5) ^ u64::from_le_bytes(self.partial);
            self.filled = 0;
        }
        let mut words = data.chunks_exact(8);
        for word in &mut words {
            self.sum = self.sum.rotate_left(5) ^ u64::from_le_bytes(word.try_into().unwrap());
        }
        let rest = words.remainder();
        self.partial[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    fn finish(self) -> u64 {
        self.partial[..self.filled]
            .iter()
            .fold(self.sum, |sum, &byte| sum.rotate_left(5) ^ u64::from(byte))
    }
}

/// A figure of /proc/self/status in bytes (`VmHWM:` peak RSS, `VmRSS:` now), Linux only.
fn rss(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// A small deterministic generator, so every run sends the same uploads.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
