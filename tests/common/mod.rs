//! Helpers shared by the integration test binaries (`mod common;` in each).
// Each binary uses a subset of these.
#![allow(dead_code)]

use std::any::Any;

use axon_buffer::BufferPoolSnapshot;

/// Every live figure of the snapshot is 0.
#[track_caller]
pub(crate) fn assert_nothing_live(snap: &BufferPoolSnapshot) {
    assert_eq!(snap.live_bytes, 0, "live_bytes");
    assert_eq!(snap.reserved_bytes, 0, "reserved_bytes");
    assert!(
        snap.tenant_live_bytes.values().all(|&b| b == 0),
        "tenant_live_bytes {:?}",
        snap.tenant_live_bytes
    );
    assert!(
        snap.outstanding_buffers.values().all(|&b| b == 0),
        "outstanding_buffers {:?}",
        snap.outstanding_buffers
    );
    assert!(
        snap.tenant_outstanding_buffers.values().all(|&b| b == 0),
        "tenant_outstanding_buffers {:?}",
        snap.tenant_outstanding_buffers
    );
}

/// The message of a caught panic (`String` or `&str` payload), or "" for any other payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    match payload.downcast_ref::<String>() {
        Some(message) => message,
        None => payload.downcast_ref::<&str>().copied().unwrap_or(""),
    }
}
