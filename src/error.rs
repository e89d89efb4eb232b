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
    ///
    /// Waiting helps when `needed <= limit` (see [`PoolError::waiting_helps`]): the request
    /// fits once the tenant's other buffers and reservations drain.
    #[error(
        "tenant {tenant:?} hard limit: {requested} more bytes would take its {live} live bytes past {limit} ({})",
        fits_later(*needed, *limit)
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
        /// Bytes the buffer or reservation would hold in all had the charge been made:
        /// `requested` for an acquire or a reservation, the buffer's whole new capacity
        /// for a growth step (whose `requested` is only the step).
        needed: u64,
    },
    /// The charge would take the pool's live bytes above its `max_live_bytes`.
    ///
    /// Waiting helps when `needed <= limit` (see [`PoolError::waiting_helps`]).
    #[error(
        "pool limit: {requested} more bytes would take its {live} live bytes past {limit} ({})",
        fits_later(*needed, *limit)
    )]
    PoolLimit {
        /// Bytes the refused charge asked for.
        requested: u64,
        /// The pool's live bytes when refused.
        live: u64,
        /// The pool's `max_live_bytes`.
        limit: u64,
        /// Bytes the buffer or reservation would hold in all had the charge been made, as
        /// for [`PoolError::TenantHardLimit`].
        needed: u64,
    },
    /// [`BufferPoolBuilder::build_global`](crate::BufferPoolBuilder::build_global) ran after
    /// the global pool already existed.
    #[error("the global buffer pool is already initialised")]
    GlobalAlreadyInitialized,
}

impl PoolError {
    /// Whether the same request can succeed later, once other buffers and reservations are
    /// dropped: true for a [`TenantHardLimit`](PoolError::TenantHardLimit) or
    /// [`PoolLimit`](PoolError::PoolLimit) refusal whose `needed` bytes fit the limit
    /// itself. False for what waiting cannot fix: a request larger than the limit, a
    /// [`TooLarge`](PoolError::TooLarge) request, an allocator failure.
    ///
    /// An HTTP server answers `429 Too Many Requests` (or waits, with
    /// `Tenant::acquire_wait`) when this is true, and `413 Content Too Large` when it is false
    /// for a limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::{BufferPool, PoolError};
    ///
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// tenant.set_hard_limit(Some(64 * 1024));
    /// let held = tenant.acquire(64 * 1024);
    ///
    /// let busy = tenant.try_acquire(4096).unwrap_err();
    /// assert!(busy.waiting_helps()); // fits once `held` drops
    /// let never = tenant.try_acquire(1 << 20).unwrap_err();
    /// assert!(!never.waiting_helps()); // 1 MiB never fits a 64 KiB limit
    /// # drop(held);
    /// ```
    pub fn waiting_helps(&self) -> bool {
        match self {
            PoolError::TenantHardLimit { needed, limit, .. }
            | PoolError::PoolLimit { needed, limit, .. } => needed <= limit,
            _ => false,
        }
    }
}

impl PoolError {
    /// A growth step's refusal, with `needed` set to the buffer's whole new capacity.
    pub(crate) fn for_growth(mut self, capacity: u64) -> Self {
        if let PoolError::TenantHardLimit { needed, .. } | PoolError::PoolLimit { needed, .. } =
            &mut self
        {
            *needed = capacity;
        }
        self
    }
}

/// The tail of a limit refusal's message: whether waiting can help.
fn fits_later(needed: u64, limit: u64) -> &'static str {
    if needed <= limit {
        "fits once other buffers drop"
    } else {
        "never fits this limit"
    }
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
