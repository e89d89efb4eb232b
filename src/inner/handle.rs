//! How buffers, reservations and handles refer to their pool ([`PoolRef`]), and the
//! process-global pool's state.

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use super::{Config, PoolInner};

static GLOBAL: OnceLock<PoolInner> = OnceLock::new();

/// The process-global pool's state, created with the default configuration on first use.
pub(crate) fn global() -> &'static PoolInner {
    GLOBAL.get_or_init(|| PoolInner::new(Config::default()))
}

/// Creates the global pool with `config`; `false` if it already existed.
pub(crate) fn init_global(config: Config) -> bool {
    let mut created = false;
    GLOBAL.get_or_init(|| {
        created = true;
        PoolInner::new(config)
    });
    created
}

/// How a buffer, reservation or handle refers to its pool: the process-global pool by a
/// `'static` reference (no reference count to bump), any other pool by an `Arc`. Either way
/// the pool outlives every buffer taken from it. Reaching the pool is one load.
#[derive(Debug, Clone)]
pub(crate) struct PoolRef {
    /// The pool: the global one, or the allocation `owner` keeps alive.
    pub(super) inner: NonNull<PoolInner>,
    /// `None` for the process-global pool.
    pub(super) owner: Option<Arc<PoolInner>>,
}

// SAFETY: a `PoolRef` is a `&'static PoolInner` or an `Arc<PoolInner>` (plus a pointer to
// the same pool), both `Send` because `PoolInner` is `Send + Sync`.
unsafe impl Send for PoolRef {}
// SAFETY: as for `Send`: shared access gives `&PoolInner` only, and `PoolInner` is `Sync`.
unsafe impl Sync for PoolRef {}

impl PoolRef {
    /// The process-global pool (the only `'static` one).
    pub(crate) fn global() -> PoolRef {
        PoolRef {
            inner: NonNull::from(global()),
            owner: None,
        }
    }

    /// A new pool of its own.
    pub(crate) fn new(config: Config) -> PoolRef {
        let inner = Arc::new(PoolInner::new(config));
        PoolRef {
            inner: NonNull::from(&*inner),
            owner: Some(inner),
        }
    }

    /// Whether this is the process-global pool.
    #[inline(always)]
    pub(crate) fn is_global(&self) -> bool {
        self.owner.is_none()
    }
}

impl Deref for PoolRef {
    type Target = PoolInner;

    #[inline(always)]
    fn deref(&self) -> &PoolInner {
        // SAFETY: `inner` points to the global pool (`'static`), or into the allocation of
        // `owner`, which this `PoolRef` keeps alive; `PoolInner` is only ever shared.
        unsafe { self.inner.as_ref() }
    }
}
