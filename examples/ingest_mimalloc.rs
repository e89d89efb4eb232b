//! The ingest example's server and clients (`examples/ingest.rs`, the same flags) with
//! mimalloc as the global allocator: what a user might pick instead of a pool, and the
//! allocator under every `--alloc` mode when `scripts/load.sh` runs with `LOAD_ALLOCATOR=mimalloc`.
//!
//! ```text
//! cargo run --release --example ingest_mimalloc -- --alloc bytesmut
//! ```
//!
//! A global allocator is chosen at compile time, so this is a second example target: it
//! includes `ingest.rs` as a module and only sets the allocator.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[path = "ingest.rs"]
mod ingest;

fn main() -> std::process::ExitCode {
    ingest::main()
}
