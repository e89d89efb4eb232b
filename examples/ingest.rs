//! A multimodal ingest server on loopback, with several tenants, in one process.
//!
//! ```text
//! cargo run --release --example ingest --features prometheus            # the pool
//! cargo run --release --example ingest --features prometheus -- --alloc vec   # plain BytesMut
//! ```
//!
//! Each tenant client connects to a tokio server on 127.0.0.1 and sends framed payloads
//! of a realistic mix: text (about 1 KiB), images (about 200 KiB), audio (about 3 MiB)
//! and a few 12 MiB video chunks. The server reads each frame into its tenant's
//! `PooledBuf` with `read_buf`, bounded to the frame by `(&mut buf).limit(n)`, freezes it
//! into `Bytes`, fans it out to two consumer tasks (a checksum and a size histogram) and
//! drops it: the slab goes back to the pool when the last consumer is done with it.
//!
//! The summary shows throughput, the hit rate per size class, peak and final live bytes
//! per tenant, idle bytes, peak RSS and the Prometheus text. The final live bytes are
//! taken after every consumer has finished: anything but 0 is a leak and the example
//! exits non-zero, as it does on a checksum mismatch.
//!
//! Flags:
//! - `--alloc pool|vec`: `vec` reads into a fresh `BytesMut` per frame, for comparison.
//! - `--tenants N` (default 4), `--frames N` per tenant (default 5000), `--seconds S`
//!   (default 20): the run stops at whichever bound comes first.
//! - `--metrics-addr 127.0.0.1:PORT` (port 0 picks one): serves `/metrics` over HTTP with
//!   the OpenMetrics content type while the run goes on, and `--serve-seconds N` more
//!   seconds after it (Ctrl-C ends that wait). Needs the `prometheus` feature.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axon_buffer::{BufferPool, BufferPoolSnapshot, PoolClass};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

type Error = Box<dyn std::error::Error + Send + Sync>;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// The content type of an OpenMetrics text exposition.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Frames each consumer may have queued: back-pressure on the server, and a bound on
/// memory (a few video chunks at most).
const QUEUED_FRAMES: usize = 8;

/// Soft limits: tenant-0 is on a small plan, so its audio and video frames go over.
const DEFAULT_SOFT_LIMIT: u64 = 64 * MIB as u64;
const SMALL_PLAN_SOFT_LIMIT: u64 = 8 * MIB as u64;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Alloc {
    Pool,
    Vec,
}

impl Alloc {
    fn name(self) -> &'static str {
        match self {
            Alloc::Pool => "pool",
            Alloc::Vec => "vec",
        }
    }
}

#[derive(Debug)]
struct Config {
    alloc: Alloc,
    tenants: usize,
    frames: u64,
    seconds: f64,
    metrics_addr: Option<SocketAddr>,
    serve_seconds: u64,
}

impl Config {
    fn from_args() -> Result<Config, String> {
        let mut config = Config {
            alloc: Alloc::Pool,
            tenants: 4,
            frames: 5000,
            seconds: 20.0,
            metrics_addr: None,
            serve_seconds: 0,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--alloc" => {
                    config.alloc = match value()?.as_str() {
                        "pool" => Alloc::Pool,
                        "vec" => Alloc::Vec,
                        other => return Err(format!("--alloc pool|vec, not {other:?}")),
                    }
                }
                "--tenants" => config.tenants = parse(&flag, &value()?)?,
                "--frames" => config.frames = parse(&flag, &value()?)?,
                "--seconds" => config.seconds = parse(&flag, &value()?)?,
                "--metrics-addr" => config.metrics_addr = Some(parse(&flag, &value()?)?),
                "--serve-seconds" => config.serve_seconds = parse(&flag, &value()?)?,
                "-h" | "--help" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown flag {other:?}\n{USAGE}")),
            }
        }
        if !(1..=1000).contains(&config.tenants) {
            return Err("--tenants must be 1..=1000".into());
        }
        if let Some(addr) = config.metrics_addr {
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "--metrics-addr {addr}: this example serves on loopback only"
                ));
            }
            if prometheus_text(&BufferPool::default()).is_none() {
                return Err("--metrics-addr needs the `prometheus` feature: \
                            cargo run --release --example ingest --features prometheus -- ..."
                    .into());
            }
        }
        Ok(config)
    }
}

const USAGE: &str = "usage: ingest [--alloc pool|vec] [--tenants N] [--frames N-per-tenant] \
                     [--seconds S] [--metrics-addr 127.0.0.1:PORT] [--serve-seconds N]";

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: cannot parse {value:?}"))
}

/// The kinds of payload a multimodal ingest sees, with their share of the frames.
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
    /// 1% video.
    fn pick(r: u64) -> (Kind, usize) {
        let jitter = (r >> 8) as usize;
        match r % 100 {
            0..70 => (Kind::Text, 512 + jitter % KIB),
            70..95 => (Kind::Image, 150 * KIB + jitter % (100 * KIB)),
            95..99 => (Kind::Audio, 5 * MIB / 2 + jitter % MIB),
            _ => (Kind::Video, 12 * MIB - MIB / 4 + jitter % (MIB / 2)),
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

/// Big enough for any frame, at any of the offsets a client reads it from.
const PATTERN_BYTES: usize = 13 * MIB;

/// What the server hands the consumers: the frozen frame and what the client said of it.
#[derive(Clone)]
struct Frame {
    kind: Kind,
    data: Bytes,
    checksum: u64,
}

/// Counters shared by the server tasks and the progress line.
struct Shared {
    pool: BufferPool,
    alloc: Alloc,
    tenant_index: HashMap<String, usize>,
    peak_live: Vec<AtomicU64>,
    frames: AtomicU64,
    bytes: AtomicU64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_args() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(config).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ingest failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the workload and prints the summary; `Ok(false)` when a check failed.
async fn run(config: Config) -> Result<bool, Error> {
    let pool = BufferPool::builder()
        .default_tenant_soft_limit(DEFAULT_SOFT_LIMIT)
        .build();
    let ids: Vec<String> = (0..config.tenants).map(|i| format!("tenant-{i}")).collect();
    pool.set_tenant_soft_limit(&ids[0], SMALL_PLAN_SOFT_LIMIT);
    let shared = Arc::new(Shared {
        pool: pool.clone(),
        alloc: config.alloc,
        tenant_index: ids.iter().cloned().zip(0..).collect(),
        peak_live: ids.iter().map(|_| AtomicU64::new(0)).collect(),
        frames: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });

    let metrics = match config.metrics_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await?;
            println!("metrics: serving http://{}/metrics", listener.local_addr()?);
            Some(tokio::spawn(serve_metrics(listener, pool.clone())))
        }
        None => None,
    };

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!(
        "ingest: alloc={}, {} tenants x {} frames (at most {} s), server on {addr}",
        config.alloc.name(),
        config.tenants,
        config.frames,
        config.seconds
    );

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(config.seconds);
    let (to_checksum, checksum_rx) = mpsc::channel(QUEUED_FRAMES);
    let (to_histogram, histogram_rx) = mpsc::channel(QUEUED_FRAMES);
    let checksums = tokio::spawn(checksum_consumer(checksum_rx));
    let histogram = tokio::spawn(histogram_consumer(histogram_rx));
    let server = tokio::spawn(accept_tenants(
        listener,
        config.tenants,
        Arc::clone(&shared),
        [to_checksum, to_histogram],
    ));
    let clients: Vec<JoinHandle<io::Result<()>>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| tokio::spawn(client(addr, id.clone(), i as u64, config.frames, deadline)))
        .collect();
    let progress = tokio::spawn(progress(Arc::clone(&shared), start));

    let mut ok = true;
    for (id, client) in ids.iter().zip(clients) {
        if let Err(e) = client.await? {
            eprintln!("client {id}: {e}");
            ok = false;
        }
    }
    // The server ends when every connection has; then the consumers see their channels
    // close, and finish the frames still queued.
    let server_errors = tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .map_err(|_| "the server did not finish 30 s after its clients")???;
    let (checked, mismatches) = checksums.await?;
    let (sizes, received_bytes) = histogram.await?;
    let elapsed = start.elapsed();
    progress.abort();

    // Every buffer and every Bytes is gone now: this is the leak check.
    let snapshot = pool.snapshot();
    ok &= server_errors == 0 && mismatches == 0;
    ok &= print_summary(
        &config, &ids, &shared, &snapshot, elapsed, checked, mismatches,
    );
    println!();
    println!("size histogram (the consumers' view, by pool class boundary):");
    for (label, count) in ["<= 4 KiB", "<= 64 KiB", "<= 1 MiB", "<= 10 MiB", "> 10 MiB"]
        .iter()
        .zip(sizes)
    {
        println!("  {label:>10}  {count:>7} frames");
    }
    println!(
        "  received   {:>9.1} MB in all",
        received_bytes as f64 / 1e6
    );
    println!();
    match prometheus_text(&pool) {
        _ if config.alloc == Alloc::Vec => println!("(no Prometheus text: the pool was not used)"),
        Some(text) => print!("# Prometheus text (axon_buffer::prometheus::render)\n{text}"),
        None => println!("(Prometheus text: run with --features prometheus)"),
    }
    println!();
    if ok && config.alloc == Alloc::Vec {
        println!("ok: every checksum matched");
    } else if ok {
        println!("ok: every tenant's live bytes are back to 0, every checksum matched");
    } else {
        println!("FAILED: see above");
    }

    if let Some(metrics) = metrics {
        if config.serve_seconds > 0 {
            println!(
                "metrics: serving {} s more (Ctrl-C ends it)",
                config.serve_seconds
            );
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(config.serve_seconds)) => {}
                _ = tokio::signal::ctrl_c() => println!("metrics: interrupted"),
            }
        }
        metrics.abort();
    }
    Ok(ok)
}

/// Accepts one connection per tenant and serves them all; returns how many failed.
async fn accept_tenants(
    listener: TcpListener,
    tenants: usize,
    shared: Arc<Shared>,
    consumers: [mpsc::Sender<Frame>; 2],
) -> io::Result<usize> {
    let mut connections = Vec::with_capacity(tenants);
    for _ in 0..tenants {
        let (stream, _) = listener.accept().await?;
        let shared = Arc::clone(&shared);
        let consumers = consumers.clone();
        connections.push(tokio::spawn(async move {
            serve_tenant(stream, &shared, &consumers).await
        }));
    }
    drop(consumers);
    let mut errors = 0;
    for connection in connections {
        if let Err(e) = connection.await.map_err(io::Error::other).and_then(|r| r) {
            eprintln!("server: {e}");
            errors += 1;
        }
    }
    Ok(errors)
}

/// One tenant's connection: a hello (`[id len: u16 BE][id]`), then frames (a header and
/// the payload) until the client closes.
async fn serve_tenant(
    mut stream: TcpStream,
    shared: &Shared,
    consumers: &[mpsc::Sender<Frame>; 2],
) -> io::Result<()> {
    let id_len = stream.read_u16().await?;
    let mut id = vec![0; usize::from(id_len)];
    stream.read_exact(&mut id).await?;
    let id = String::from_utf8(id).map_err(io::Error::other)?;
    let index = shared.tenant_index[&id];
    let tenant = shared.pool.tenant(&id);

    loop {
        let mut header = [0; HEADER_BYTES];
        match stream.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let (len, kind, checksum) = decode_header(&header)?;

        let data = match shared.alloc {
            Alloc::Pool => {
                let mut buf = tenant.acquire(len);
                read_frame(&mut stream, &mut buf, len).await?;
                shared.peak_live[index].fetch_max(tenant.live_bytes(), Relaxed);
                buf.freeze()
            }
            Alloc::Vec => {
                let mut buf = BytesMut::with_capacity(len);
                read_frame(&mut stream, &mut buf, len).await?;
                buf.freeze()
            }
        };
        shared.frames.fetch_add(1, Relaxed);
        shared.bytes.fetch_add(len as u64, Relaxed);

        let frame = Frame {
            kind,
            data,
            checksum,
        };
        // Two more owners of one slab. The server drops its own at the end of this
        // iteration; the slab returns to the pool when the slower consumer drops the last.
        for consumer in consumers {
            consumer
                .send(frame.clone())
                .await
                .map_err(|_| io::Error::other("a consumer stopped"))?;
        }
    }
}

/// A frame header: `[len: u32 BE][kind: u8][checksum: u64 BE]`.
const HEADER_BYTES: usize = 13;

fn encode_header(len: usize, kind: Kind, checksum: u64) -> [u8; HEADER_BYTES] {
    let mut header = [0; HEADER_BYTES];
    header[..4].copy_from_slice(&(len as u32).to_be_bytes());
    header[4] = kind as u8;
    header[5..].copy_from_slice(&checksum.to_be_bytes());
    header
}

fn decode_header(header: &[u8; HEADER_BYTES]) -> io::Result<(usize, Kind, u64)> {
    let len = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
    let kind = *Kind::ALL
        .get(usize::from(header[4]))
        .ok_or_else(|| io::Error::other("unknown frame kind"))?;
    let checksum = u64::from_be_bytes(header[5..].try_into().unwrap());
    Ok((len, kind, checksum))
}

/// Reads exactly `len` bytes into `buf`, in as many reads as the socket needs.
///
/// `buf` is `&mut PooledBuf` (or `&mut BytesMut`), so this is `(&mut buf).limit(len)`:
/// a pooled slab is usually larger than the frame, and the limit keeps the next frame's
/// header in the socket.
async fn read_frame(stream: &mut TcpStream, buf: &mut impl BufMut, len: usize) -> io::Result<()> {
    let mut frame = buf.limit(len);
    while frame.has_remaining_mut() {
        if stream.read_buf(&mut frame).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// A tenant's client: sends `frames` frames (or until the deadline) and closes.
async fn client(
    addr: SocketAddr,
    id: String,
    seed: u64,
    frames: u64,
    deadline: Instant,
) -> io::Result<()> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (seed + 1).wrapping_mul(0xA076_1D64_78BD_642F));
    let pattern: Vec<u8> = (0..PATTERN_BYTES / 8)
        .flat_map(|_| rng.next().to_le_bytes())
        .collect();

    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_u16(id.len() as u16).await?;
    stream.write_all(id.as_bytes()).await?;
    for _ in 0..frames {
        if Instant::now() >= deadline {
            break;
        }
        let r = rng.next();
        let (kind, len) = Kind::pick(r);
        let offset = (r >> 32) as usize % (PATTERN_BYTES - len);
        let payload = &pattern[offset..offset + len];
        stream
            .write_all(&encode_header(len, kind, checksum(payload)))
            .await?;
        stream.write_all(payload).await?;
    }
    stream.shutdown().await
}

/// Verifies every frame against the client's checksum: (frames checked, mismatches).
async fn checksum_consumer(mut frames: mpsc::Receiver<Frame>) -> (u64, u64) {
    let (mut checked, mut mismatches) = (0, 0);
    while let Some(frame) = frames.recv().await {
        checked += 1;
        if checksum(&frame.data) != frame.checksum {
            mismatches += 1;
            eprintln!(
                "checksum mismatch on a {} frame of {} bytes",
                frame.kind.name(),
                frame.data.len()
            );
        }
    }
    (checked, mismatches)
}

/// Counts frames by size, with the pool's class boundaries as buckets.
async fn histogram_consumer(mut frames: mpsc::Receiver<Frame>) -> ([u64; 5], u64) {
    let mut buckets = [0; 5];
    let mut bytes = 0;
    while let Some(frame) = frames.recv().await {
        let class = PoolClass::for_size(frame.data.len());
        let bucket = match class {
            PoolClass::Small => 0,
            PoolClass::Medium => 1,
            PoolClass::Large => 2,
            PoolClass::Huge => 3,
            _ => 4,
        };
        buckets[bucket] += 1;
        bytes += frame.data.len() as u64;
    }
    (buckets, bytes)
}

/// A line every half second on stderr while the run goes on.
async fn progress(shared: Arc<Shared>, start: Instant) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.tick().await;
    loop {
        tick.tick().await;
        let mut line = format!(
            "  {:>5.1} s  {:>7} frames  {:>9.1} MB",
            start.elapsed().as_secs_f64(),
            shared.frames.load(Relaxed),
            shared.bytes.load(Relaxed) as f64 / 1e6
        );
        if shared.alloc == Alloc::Pool {
            let s = shared.pool.snapshot();
            line += &format!(
                "  live {}  idle {}",
                human(s.live_bytes),
                human(s.idle_bytes)
            );
        }
        eprintln!("{line}  rss {}", peak_rss().map_or("n/a".into(), human));
    }
}

/// Prints the summary; returns false when a tenant or the pool still holds bytes.
fn print_summary(
    config: &Config,
    ids: &[String],
    shared: &Shared,
    snapshot: &BufferPoolSnapshot,
    elapsed: Duration,
    checked: u64,
    mismatches: u64,
) -> bool {
    let frames = shared.frames.load(Relaxed);
    let bytes = shared.bytes.load(Relaxed);
    println!();
    println!(
        "== summary: alloc={}, {} tenants ==",
        config.alloc.name(),
        config.tenants
    );
    println!(
        "frames      {frames} in {:.2} s, {:.1} MB, {:.1} MB/s",
        elapsed.as_secs_f64(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / elapsed.as_secs_f64()
    );
    println!("checksums   {checked} checked, {mismatches} mismatched");
    println!(
        "peak RSS    {} (VmHWM)",
        peak_rss().map_or("n/a".into(), human)
    );
    if let Some(faults) = minor_page_faults() {
        println!("page faults {faults} minor (fresh memory the kernel had to map)");
    }
    if config.alloc == Alloc::Vec {
        println!("pool        not used: every frame was a fresh BytesMut, freed on drop");
        return true;
    }

    println!();
    println!("class        slab      hits   misses  hit rate");
    for class in PoolClass::non_oversize() {
        let hits = snapshot.pool_hits.get(&class).copied().unwrap_or(0);
        let misses = snapshot.pool_misses.get(&class).copied().unwrap_or(0);
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
        "oversize  {:>8} {:>9} allocations, never pooled (frames above 10 MiB)",
        "exact", snapshot.oversize_allocations_total
    );

    println!();
    println!("tenant        peak live   final live   soft limit   soft limit exceeded");
    let mut clean = true;
    for (i, id) in ids.iter().enumerate() {
        let peak = shared.peak_live[i].load(Relaxed);
        let last = snapshot.tenant_live_bytes.get(id).copied().unwrap_or(0);
        let exceeded = snapshot
            .tenant_soft_limit_exceeded_total
            .get(id)
            .copied()
            .unwrap_or(0);
        let limit = if i == 0 {
            SMALL_PLAN_SOFT_LIMIT
        } else {
            DEFAULT_SOFT_LIMIT
        };
        let leak = if last == 0 { "" } else { "  <- LEAK" };
        clean &= last == 0;
        println!(
            "{id:<12} {:>10} {:>12} {:>12} {exceeded:>21}{leak}",
            human(peak),
            human(last),
            human(limit)
        );
    }
    clean &= snapshot.live_bytes == 0;
    println!();
    println!(
        "pool live   {} (after every consumer finished)",
        human(snapshot.live_bytes)
    );
    println!(
        "idle        {} in {} slabs, kept for reuse (BufferPool::trim frees them)",
        human(snapshot.idle_bytes),
        snapshot.idle_slabs.values().sum::<u64>()
    );
    clean
}

/// Serves `GET /metrics` on loopback: a minimal HTTP/1.1 responder, one request per
/// connection.
async fn serve_metrics(listener: TcpListener, pool: BufferPool) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("metrics: accept: {e}");
                continue;
            }
        };
        let pool = pool.clone();
        tokio::spawn(async move {
            let answer = answer_scrape(stream, &pool);
            match tokio::time::timeout(Duration::from_secs(5), answer).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("metrics: {e}"),
                Err(_) => eprintln!("metrics: client too slow"),
            }
        });
    }
}

async fn answer_scrape(mut stream: TcpStream, pool: &BufferPool) -> io::Result<()> {
    // Read the request head; only its first line matters.
    let mut head = Vec::new();
    let mut chunk = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 * KIB {
            return Err(io::Error::other("request head too long"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let is_metrics = head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?");
    let (status, content_type, body) = match prometheus_text(pool) {
        Some(text) if is_metrics => ("200 OK", OPENMETRICS, text),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "try GET /metrics\n".into(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(feature = "prometheus")]
fn prometheus_text(pool: &BufferPool) -> Option<String> {
    Some(axon_buffer::prometheus::render(pool))
}

#[cfg(not(feature = "prometheus"))]
fn prometheus_text(_pool: &BufferPool) -> Option<String> {
    None
}

/// Order-sensitive checksum over 64-bit words: a byte in the wrong place, or one left
/// from a slab's earlier user, changes it.
fn checksum(data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(8);
    let mut sum = data.len() as u64;
    for word in &mut words {
        sum = sum.rotate_left(5) ^ u64::from_le_bytes(word.try_into().unwrap());
    }
    for &byte in words.remainder() {
        sum = sum.rotate_left(5) ^ u64::from(byte);
    }
    sum
}

/// Peak resident set size of this process (VmHWM), Linux only.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Minor page faults of this process so far (`minflt` in /proc/self/stat), Linux only.
fn minor_page_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields = stat.get(stat.rfind(')')? + 1..)?;
    fields.split_whitespace().nth(7)?.parse().ok()
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// A small deterministic generator, so every run sends the same frames.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
