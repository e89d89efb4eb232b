//! [`PoolError`]: why a `try_*` call refused.

use crate::PoolClass;

/// Why a fallible (`try_*`) operation refused. Nothing was allocated or charged when one of
/// these is returned, and no figure of the pool moved except the refusal counters.
///
/// The infallible forms (`acquire`, `reserve`, writes through `BufMut` and `Extend`) panic
/// with this error's message and the name of the `try_*` method to use instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The buffer would exceed the pool's `max_request_bytes`, or the size arithmetic
    /// overflowed (`requested` is then `u64::MAX`), or a reservation would overflow a
    /// byte counter.
    #[error("request of {requested} bytes is too large (maximum {max} bytes)")]
    TooLarge {
        /// Bytes the buffer or reservation would have held, saturated at `u64::MAX`.
        requested: u64,
        /// The limit it ran into.
        max: u64,
    },
    /// The allocator refused to provide the memory.
    #[error("the allocator refused {bytes} bytes for a {class} slab")]
    AllocFailed {
        /// Class of the slab that could not be allocated.
        class: PoolClass,
        /// Size of the refused allocation.
        bytes: usize,
    },
    /// The charge would take the tenant's live bytes above its hard limit.
    #[error(
        "tenant {tenant:?} hard limit: {requested} more bytes would take its {live} live bytes past {limit}"
    )]
    TenantHardLimit {
        /// The tenant's id.
        tenant: String,
        /// Bytes the refused charge asked for.
        requested: u64,
        /// The tenant's live bytes when refused.
        live: u64,
        /// The tenant's hard limit.
        limit: u64,
    },
    /// The charge would take the pool's live bytes above its `max_live_bytes`.
    #[error("pool limit: {requested} more bytes would take its {live} live bytes past {limit}")]
    PoolLimit {
        /// Bytes the refused charge asked for.
        requested: u64,
        /// The pool's live bytes when refused.
        live: u64,
        /// The pool's `max_live_bytes`.
        limit: u64,
    },
    /// [`BufferPoolBuilder::build_global`](crate::BufferPoolBuilder::build_global) ran after
    /// the global pool already existed.
    #[error("the global buffer pool is already initialised")]
    GlobalAlreadyInitialized,
}

impl From<PoolError> for std::io::Error {
    fn from(err: PoolError) -> Self {
        let kind = match err {
            PoolError::AllocFailed { .. } => std::io::ErrorKind::OutOfMemory,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, err)
    }
}

/// The panic of an infallible method whose `try_*` form returned `err`. Out of line and cold:
/// the hot paths carry only the call.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn refused(err: PoolError, alternative: &str) -> ! {
    panic!("axon-buffer: {err} (use {alternative} to handle this without panicking)")
}
