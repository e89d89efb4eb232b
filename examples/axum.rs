//! The handler to copy: an axum 0.8 route that reads each request body straight into a
//! chain of pooled segments charged to the tenant named in the path (charged about what
//! it holds, not a size class above it; see "PooledBuf or chain?" in the README).
//!
//! ```text
//! cargo run --example axum
//! ```
//!
//! No feature flag: the crate's dev-dependency on itself turns on `axum` (and `http-body`)
//! for its examples.
//!
//! It serves on a loopback port, sends itself one upload with hyper's client, prints the
//! answer and exits. `examples/ingest.rs` is the full server: fan-out to consumers,
//! `/metrics`, several tenants, its own load.

use axon_buffer::{BufferPool, CollectError};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The largest body accepted. A body whose `Content-Length` is larger is answered 413
/// before it is read.
const MAX_BODY: usize = 16 << 20;

/// `POST /ingest/{tenant}`: the body, in pooled segments charged to `tenant`.
///
/// A refusal is its own response: 400 for a broken body, 413 past `MAX_BODY` or a limit
/// it can never fit, 429 (tenant) or 503 (pool) with `Retry-After` when it fits later.
/// A refused body is not read: hyper answers and closes the connection, so a client still
/// sending a large body may see a reset instead of the answer (unless it sent
/// `Expect: 100-continue`, as curl does for large uploads). `examples/ingest.rs` reads the
/// rest of a body refused with a retry hint before answering, so its clients can retry.
async fn ingest(
    State(pool): State<BufferPool>,
    Path(tenant): Path<String>,
    body: Body,
) -> Result<String, CollectError<axum::Error>> {
    let chain = pool
        .tenant(&tenant)
        .collect_body_chain(body, MAX_BODY)
        .await?;
    // A Bytes a segment, no copy: clone it to your consumers, read it with `iter()` or as a
    // `bytes::Buf` (`chunks_vectored` for a vectored write); each segment returns to the
    // pool when its last clone drops.
    let payload = chain.freeze();
    Ok(format!(
        "{} bytes in {} segments for {tenant}\n",
        payload.len(),
        payload.segments()
    ))
}

fn app(pool: BufferPool) -> Router {
    Router::new()
        .route("/ingest/{tenant}", post(ingest))
        .with_state(pool)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let pool = BufferPool::default();
    pool.tenant("plan").set_hard_limit(Some(8 << 20));
    pool.tenant("tiny").set_hard_limit(Some(4096)); // one Small slab at most
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app(pool)).await });

    let client = Client::builder(TokioExecutor::new()).build_http();
    // 300 kB for acme: 200, in five 64 KiB segments. 5 MiB for plan, under an 8 MiB hard
    // limit: 200, in five 1 MiB segments (one contiguous PooledBuf would be charged a 10 MiB
    // slab: 413). 5000 bytes for tiny: more than one 4 KiB Small segment, so a 64 KiB one,
    // which never fits 4 KiB: 413 (without reading the body).
    for (tenant, len) in [("acme", 300_000), ("plan", 5 << 20), ("tiny", 5000)] {
        let request = http::Request::post(format!("http://{addr}/ingest/{tenant}"))
            .body(Full::new(Bytes::from(vec![42u8; len])))?;
        let response = client.request(request).await?;
        let status = response.status();
        let text = response.into_body().collect().await?.to_bytes();
        println!(
            "POST {len} bytes for {tenant} -> {status}: {}",
            String::from_utf8_lossy(&text).trim_end()
        );
    }
    server.abort();
    Ok(())
}
