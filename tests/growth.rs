//! Writing: BufMut, io::Write, Extend, read_from, and promotion past capacity.

use std::io::{Read, Write};

use axon_buffer::{BufferPool, PoolClass, PoolError};
use bytes::BufMut;

#[test]
#[cfg_attr(
    miri,
    ignore = "writes megabytes: too slow under Miri; smaller tests cover the paths"
)]
fn promotion_walks_the_classes_and_returns_each_old_slab() {
    let pool = BufferPool::default();
    let mut buf = pool.acquire(1);
    let data: Vec<u8> = (0..=255).cycle().take(3 << 20).collect();
    buf.extend_from_slice(&data[..4096]);
    assert_eq!(buf.class(), PoolClass::Small);
    buf.extend_from_slice(&data[4096..5000]);
    assert_eq!(buf.class(), PoolClass::Medium);
    buf.extend_from_slice(&data[5000..70_000]);
    assert_eq!(buf.class(), PoolClass::Large);
    buf.extend_from_slice(&data[70_000..]);
    assert_eq!(buf.class(), PoolClass::Huge);
    assert_eq!(&buf[..], &data[..]);
    let snap = pool.snapshot();
    assert_eq!(snap.promotions_total, 3);
    assert_eq!(snap.live_bytes, 10 << 20);
    // The Small, Medium and Large slabs went back to their lists.
    for class in [PoolClass::Small, PoolClass::Medium, PoolClass::Large] {
        assert_eq!(snap.idle_slabs[&class], 1, "{class}");
        assert_eq!(snap.outstanding_buffers[&class], 0, "{class}");
    }
    assert_eq!(snap.outstanding_buffers[&PoolClass::Huge], 1);
    assert_eq!(snap.acquisitions_total(), 4);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "writes megabytes: too slow under Miri; smaller tests cover the paths"
)]
fn oversize_grows_by_doubling_so_small_writes_cost_linear_time() {
    let pool = BufferPool::default();
    let mut buf = pool.acquire(0);
    let chunk = [9u8; 64 * 1024];
    let total = 100 << 20;
    while buf.len() < total {
        buf.put_slice(&chunk);
    }
    assert_eq!(buf.class(), PoolClass::Oversize);
    assert!(buf.capacity() >= total);
    let snap = pool.snapshot();
    // Small, Medium, Large, Huge, then 20, 40, 80, 160 MiB: doubling, not one step per write.
    assert_eq!(snap.oversize_allocations_total, 4);
    assert_eq!(buf.capacity(), 160 << 20);
    assert_eq!(snap.live_bytes, 160 << 20);
    assert_eq!(snap.promotions_total, 7);
    drop(buf);
    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 0);
    assert_eq!(snap.outstanding_buffers[&PoolClass::Oversize], 0);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "writes megabytes: too slow under Miri; smaller tests cover the paths"
)]
fn oversize_growth_is_clamped_to_max_request_bytes() {
    let pool = BufferPool::builder().max_request_bytes(15 << 20).build();
    let mut buf = pool.acquire(10 << 20);
    buf.resize(10 << 20, 1);
    buf.extend_from_slice(&[2; 10]);
    assert_eq!(buf.capacity(), 15 << 20, "doubling stops at the maximum");
    assert_eq!(buf.remaining_mut(), (15 << 20) - ((10 << 20) + 10));
    let err = buf.try_reserve(5 << 20).unwrap_err();
    assert!(matches!(err, PoolError::TooLarge { .. }));
    assert_eq!(buf.len(), (10 << 20) + 10);
}

#[test]
fn bufmut_writes_promote_and_read_back() {
    let pool = BufferPool::default();
    let mut buf = pool.acquire(8);
    for i in 0..2000u32 {
        buf.put_u32(i);
    }
    buf.put_bytes(0xEE, 3);
    assert_eq!(buf.len(), 8003);
    assert_eq!(buf.class(), PoolClass::Medium);
    assert_eq!(&buf[..4], &0u32.to_be_bytes());
    assert_eq!(&buf[7996..8000], &1999u32.to_be_bytes());
    assert_eq!(&buf[8000..], &[0xEE; 3]);
}

#[test]
fn chunk_mut_lends_spare_capacity_and_promotes_when_full() {
    let pool = BufferPool::default();
    let mut buf = pool.acquire(10);
    assert_eq!(buf.chunk_mut().len(), 4096);
    buf.resize(4096, 1);
    let chunk = buf.chunk_mut();
    assert_eq!(
        chunk.len(),
        64 * 1024 - 4096,
        "full buffer promoted before lending"
    );
    assert_eq!(buf.class(), PoolClass::Medium);
    assert_eq!(buf.len(), 4096);
}

#[test]
fn limit_bounds_a_generic_writer_to_the_frame() {
    let pool = BufferPool::default();
    let mut buf = pool.acquire(100);
    {
        let mut limited = (&mut buf).limit(5);
        assert_eq!(limited.remaining_mut(), 5);
        limited.put_slice(b"hello");
        assert_eq!(limited.remaining_mut(), 0);
    }
    assert_eq!(&buf[..], b"hello");
}

#[test]
fn io_write_appends_and_errors_without_panicking() {
    let pool = BufferPool::default();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(4096));
    let mut buf = t.acquire(10);
    let frame = 7;
    write!(buf, "frame-{frame}").unwrap();
    assert_eq!(&buf[..], b"frame-7");
    let err = buf.write(&[0; 5000]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::Other);
    let inner = err.get_ref().unwrap().downcast_ref::<PoolError>().unwrap();
    assert!(matches!(inner, PoolError::TenantHardLimit { .. }));
    assert_eq!(&buf[..], b"frame-7", "nothing written on error");
    assert_eq!(t.live_bytes(), 4096);
    buf.flush().unwrap();
}

#[test]
fn extend_accepts_owned_and_borrowed_bytes() {
    let pool = BufferPool::default();
    let mut buf = pool.acquire(1);
    buf.extend(0..=255u8);
    buf.extend([1u8, 2, 3].iter());
    buf.extend(std::iter::repeat_n(7u8, 5000));
    assert_eq!(buf.len(), 256 + 3 + 5000);
    assert_eq!(buf.class(), PoolClass::Medium);
    assert_eq!(buf[255], 255);
    assert_eq!(&buf[256..259], &[1, 2, 3]);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "reads 200 KB: too slow under Miri; smaller tests cover the paths"
)]
fn read_from_reads_up_to_max_across_promotions() {
    let pool = BufferPool::default();
    let source: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut buf = pool.acquire(10);
    let mut reader = &source[..];
    assert_eq!(buf.read_from(&mut reader, 150_000).unwrap(), 150_000);
    assert_eq!(buf.class(), PoolClass::Large);
    assert_eq!(&buf[..], &source[..150_000]);
    // To end of file: fewer than asked.
    assert_eq!(buf.read_from(&mut reader, 1 << 20).unwrap(), 50_000);
    assert_eq!(&buf[..], &source[..]);
    assert_eq!(buf.read_from(&mut reader, 10).unwrap(), 0);
}

#[test]
fn read_from_retries_interrupted_and_keeps_what_was_read_on_error() {
    struct Flaky {
        calls: u32,
    }
    impl Read for Flaky {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            self.calls += 1;
            match self.calls {
                1 => Err(std::io::ErrorKind::Interrupted.into()),
                2 => {
                    out[..3].copy_from_slice(b"abc");
                    Ok(3)
                }
                _ => Err(std::io::Error::other("boom")),
            }
        }
    }
    let pool = BufferPool::default();
    let mut buf = pool.acquire(10);
    let err = buf.read_from(&mut Flaky { calls: 0 }, 100).unwrap_err();
    assert_eq!(err.to_string(), "boom");
    assert_eq!(&buf[..], b"abc");
}

#[test]
fn truncate_clear_and_resize_behave_like_vec() {
    let pool = BufferPool::default();
    let mut buf = pool.acquire(10);
    buf.extend_from_slice(b"hello world");
    buf.truncate(5);
    assert_eq!(&buf[..], b"hello");
    buf.truncate(50);
    assert_eq!(buf.len(), 5);
    buf.resize(7, b'!');
    assert_eq!(&buf[..], b"hello!!");
    buf.resize(2, 0);
    assert_eq!(&buf[..], b"he");
    buf[0] = b'H';
    buf.as_mut()[1] = b'E';
    assert_eq!(buf.as_ref(), b"HE");
    buf.clear();
    assert!(buf.is_empty());
    assert_eq!(buf.capacity(), 4096);
}

#[test]
fn refused_promotion_changes_no_figure() {
    let pool = BufferPool::default();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(64 * 1024));
    let mut buf = t.acquire(10);
    buf.extend_from_slice(&[1; 100]);
    let before = pool.snapshot();
    assert!(buf.try_reserve(70_000).is_err());
    let after = pool.snapshot();
    assert_eq!(after.live_bytes, before.live_bytes);
    assert_eq!(after.pool_hits, before.pool_hits);
    assert_eq!(after.pool_misses, before.pool_misses);
    assert_eq!(after.promotions_total, before.promotions_total);
    assert_eq!(after.hard_limit_refusals_total["t"], 1);
    assert_eq!(buf.class(), PoolClass::Small);
    assert_eq!(&buf[..], &[1; 100]);
}

#[test]
#[should_panic(expected = "try_reserve")]
fn chunk_mut_panics_naming_try_reserve_when_promotion_is_refused() {
    let pool = BufferPool::default();
    let t = pool.tenant("t");
    t.set_hard_limit(Some(4096));
    let mut buf = t.acquire(10);
    buf.resize(4096, 0);
    let _ = buf.chunk_mut();
}
