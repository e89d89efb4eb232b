//! The whole flow in one file: acquire per tenant, write, freeze and share, drop, read the
//! figures. Run with `cargo run --example quickstart`.

use std::io::Write;

use axon_buffer::{BufferPool, PoolClass, PoolError};
use bytes::BufMut;

fn main() -> Result<(), PoolError> {
    let pool = BufferPool::builder()
        .default_tenant_soft_limit(2 << 20)
        .build();
    let images = pool.tenant("images");
    let chat = pool.tenant("chat");
    chat.set_hard_limit(Some(64 * 1024));

    // A text frame: Small class, written through io::Write and BufMut.
    let mut frame = chat.try_acquire(512)?;
    write!(frame, "GET /feed HTTP/1.1\r\n").expect("io::Write on a PooledBuf");
    frame.put_slice(b"\r\n");
    println!("text frame: {frame:?}");

    // An image: promoted from Small to Large as it grows, then frozen and shared.
    let mut image = images.try_acquire(4096)?;
    image.extend_from_slice(&vec![0x89; 300 * 1024]);
    println!("image after growth: {image:?}");
    let shared = image.freeze(); // zero copy
    let thumbnail_view = shared.slice(0..1024);
    let consumers: Vec<_> = (0..2)
        .map(|i| {
            let bytes = shared.clone();
            std::thread::spawn(move || {
                let sum: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
                println!("consumer {i}: {} bytes, checksum {sum}", bytes.len());
            })
        })
        .collect();
    drop(shared);
    for consumer in consumers {
        consumer.join().expect("consumer thread");
    }
    println!(
        "while the thumbnail view lives, tenant `images` holds {} bytes",
        images.live_bytes()
    );
    drop(thumbnail_view);

    // The hard limit refuses; nothing is charged.
    match chat.try_acquire(100 * 1024) {
        Err(err) => println!("refused: {err}"),
        Ok(_) => unreachable!("64 KiB hard limit"),
    }
    drop(frame);

    let snap = pool.snapshot();
    println!("live bytes after every drop: {}", snap.live_bytes);
    for class in PoolClass::non_oversize() {
        println!(
            "{:>6}: hits {} misses {} idle {}",
            class.slug(),
            snap.pool_hits[&class],
            snap.pool_misses[&class],
            snap.idle_slabs[&class]
        );
    }
    println!("hard-limit refusals: {:?}", snap.hard_limit_refusals_total);
    println!("trim freed {} idle bytes", pool.trim());
    assert_eq!(snap.live_bytes, 0);
    Ok(())
}
