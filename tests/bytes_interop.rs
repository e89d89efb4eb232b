//! `freeze()` into `bytes::Bytes`: zero copy, shared slab, returned when the last owner drops.

use axon_buffer::{BufferPool, PoolClass};
use bytes::{Buf, Bytes};

#[test]
fn freeze_is_zero_copy_and_returns_on_last_drop() {
    let pool = BufferPool::default();
    let tenant = pool.tenant("t");
    let mut buf = tenant.acquire(3000);
    buf.extend_from_slice(&[7; 3000]);
    let ptr = buf.as_ptr();
    let bytes = buf.freeze();
    assert_eq!(bytes.as_ptr(), ptr);
    assert_eq!(bytes.len(), 3000);

    let clone = bytes.clone();
    let slice = bytes.slice(100..200);
    assert_eq!(slice.as_ptr(), ptr.wrapping_add(100));
    drop(bytes);
    drop(clone);
    // The slice alone pins the whole slab and the tenant's charge.
    let snap = pool.snapshot();
    assert_eq!(snap.tenant_live_bytes["t"], 4096);
    assert_eq!(snap.outstanding_buffers[&PoolClass::Small], 1);
    assert_eq!(snap.idle_slabs[&PoolClass::Small], 0);
    drop(slice);
    let snap = pool.snapshot();
    assert_eq!(snap.tenant_live_bytes["t"], 0);
    assert_eq!(snap.live_bytes, 0);
    assert_eq!(snap.idle_slabs[&PoolClass::Small], 1);
}

#[test]
fn from_impl_matches_freeze() {
    let pool = BufferPool::default();
    let mut buf = pool.acquire(10);
    buf.extend_from_slice(b"abc");
    let ptr = buf.as_ptr();
    let bytes = Bytes::from(buf);
    assert_eq!(bytes.as_ptr(), ptr);
    assert_eq!(&bytes[..], b"abc");
}

#[test]
fn last_clone_dropped_on_another_thread_returns_the_slab() {
    let pool = BufferPool::default();
    let mut buf = pool.tenant("t").acquire(70_000);
    buf.extend_from_slice(&[1; 70_000]);
    let bytes = buf.freeze();
    let clones: Vec<Bytes> = (0..4).map(|_| bytes.clone()).collect();
    drop(bytes);
    std::thread::scope(|s| {
        for c in clones {
            s.spawn(move || {
                assert_eq!(c.len(), 70_000);
                drop(c);
            });
        }
    });
    let snap = pool.snapshot();
    assert_eq!(snap.live_bytes, 0);
    assert_eq!(snap.idle_slabs[&PoolClass::Large], 1);
}

#[test]
fn empty_buffer_freezes_to_empty_bytes_and_still_returns() {
    let pool = BufferPool::default();
    let bytes = pool.acquire(0).freeze();
    assert!(bytes.is_empty());
    assert_eq!(pool.live_bytes(), 4096);
    drop(bytes);
    assert_eq!(pool.live_bytes(), 0);
    assert_eq!(pool.snapshot().idle_slabs[&PoolClass::Small], 1);
}

#[test]
fn bytes_into_bytes_mut_copies_and_releases_the_slab() {
    let pool = BufferPool::default();
    let mut buf = pool.acquire(10);
    buf.extend_from_slice(b"payload");
    let bytes = buf.freeze();
    let ptr = bytes.as_ptr();
    let mut_copy = bytes::BytesMut::from(&bytes[..]);
    assert_ne!(mut_copy.as_ptr(), ptr);
    // try_into_mut cannot hand back a from_owner Bytes without copying.
    let bytes = bytes.try_into_mut().unwrap_err();
    drop(bytes);
    assert_eq!(pool.live_bytes(), 0);
    assert_eq!(&mut_copy[..], b"payload");
}

#[test]
fn frozen_bytes_work_as_a_buf() {
    let pool = BufferPool::default();
    let mut buf = pool.acquire(16);
    buf.extend_from_slice(&[0, 0, 0, 42, 1, 2]);
    let mut bytes = buf.freeze();
    assert_eq!(bytes.get_u32(), 42);
    assert_eq!(bytes.remaining(), 2);
    let rest = bytes.split_to(1);
    assert_eq!((&rest[..], &bytes[..]), (&[1][..], &[2][..]));
}
