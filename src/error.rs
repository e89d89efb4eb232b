//! [`PoolError`]: why a `try_*` call refused.

use std::fmt;

use crate::PoolClass;

/// Why a fallible (`try_*`) operation refused. Nothing was allocated or charged when one of
/// these is returned, and no figure of the pool moved except the refusal counters.
///
/// The infallible forms (`acquire`, `reserve`, writes through `BufMut` and `Extend`) panic
/// with this error's message and the name of the `try_*` method to use instead.
///
/// The message of a limit refusal gives every figure of the decision: the charge asked for,
/// the bytes it would have held in all, the live bytes when refused and the limit, and
/// whether the request can fit later. A buffer is charged its size class's slab (4 KiB,
/// 64 KiB, 1 MiB or 10 MiB; its exact size above 10 MiB), so the charge of a buffer is
/// usually more than the bytes asked for, and the message says which class it was:
///
/// ```
/// use axon_buffer::BufferPool;
///
/// let pool = BufferPool::default();
/// let tenant = pool.tenant("acme");
/// tenant.set_hard_limit(Some(8 << 20));
/// let err = tenant.try_acquire(5 << 20).unwrap_err(); // 5 MiB: a Huge slab, 10 MiB
/// assert_eq!(
///     err.to_string(),
///     "tenant \"acme\" hard limit: a charge of 10 MiB (any buffer above 1 MiB up to \
///      10 MiB is charged its 10 MiB Huge slab) would take its live bytes from 0 bytes to \
///      10 MiB, past its limit of 8 MiB; never fits: 10 MiB is more than the limit itself",
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The buffer would exceed the pool's `max_request_bytes`, or the size arithmetic
    /// overflowed (`requested` is then `u64::MAX`), or a reservation would overflow a
    /// byte counter.
    #[error("{}", too_large(*requested, *max))]
    TooLarge {
        /// Bytes the buffer or reservation would have held, saturated at `u64::MAX`.
        requested: u64,
        /// The limit it ran into.
        max: u64,
    },
    /// The allocator refused to provide the memory.
    #[error("the allocator refused {} for a {class} slab", Size(*bytes as u64))]
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
        "tenant {tenant:?} hard limit: {}",
        Refusal { whose: "its", requested: *requested, live: *live, limit: *limit, needed: *needed }
    )]
    TenantHardLimit {
        /// The tenant's id.
        tenant: String,
        /// Bytes the refused charge asked for: for a buffer, its slab's capacity (its
        /// class's), not the bytes asked of `acquire`.
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
        "pool limit (max_live_bytes): {}",
        Refusal { whose: "the pool's", requested: *requested, live: *live, limit: *limit, needed: *needed }
    )]
    PoolLimit {
        /// Bytes the refused charge asked for, as for [`PoolError::TenantHardLimit`].
        requested: u64,
        /// The pool's live bytes when refused.
        live: u64,
        /// The pool's `max_live_bytes`.
        limit: u64,
        /// Bytes the buffer or reservation would hold in all had the charge been made, as
        /// for [`PoolError::TenantHardLimit`].
        needed: u64,
    },
    /// A wait for room that could never end: every live byte under the limit that
    /// refused the request is held by requests that themselves wait for room under it (two
    /// buffers growing side by side, or two chunked bodies read with `collect_body_wait`,
    /// each holding part of a tenant's limit and waiting for the rest). The youngest such
    /// waiter fails with this error, and once it lets go of what it holds the others go on.
    ///
    /// Waiting does not help ([`PoolError::waiting_helps`] is false): the same request
    /// alone, later, may fit.
    #[error(
        "{} limit of {}: waiting for {} more could never end, since all {} live are held by requests that wait for room under it (this one holds {}); it fails so the others can go on",
        deadlock_scope(tenant.as_deref()), Size(*limit), Size(*requested), Size(*live), Size(*held)
    )]
    WaitDeadlock {
        /// The tenant whose hard limit refused, or `None` for the pool's `max_live_bytes`.
        tenant: Option<String>,
        /// Bytes the refused charge asked for (a growth step's extra bytes).
        requested: u64,
        /// Bytes the waiting request held already (a growing buffer's capacity).
        held: u64,
        /// Live bytes under the limit, all held by waiting requests.
        live: u64,
        /// The limit.
        limit: u64,
    },
    /// [`Tenant::set_guarantee`](crate::Tenant::set_guarantee) would take the tenants'
    /// guarantees together past the pool's `max_live_bytes`. Nothing changed.
    #[error(
        "tenant {tenant:?} guarantee of {}: with the other tenants' {} it would set aside more than the pool's max_live_bytes of {}",
        Size(*requested), Size(*others), Size(*limit)
    )]
    GuaranteesPastLimit {
        /// The tenant's id.
        tenant: String,
        /// The guarantee asked for.
        requested: u64,
        /// The other tenants' guarantees, summed.
        others: u64,
        /// The pool's `max_live_bytes`.
        limit: u64,
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

/// The message of a `TooLarge` refusal.
fn too_large(requested: u64, max: u64) -> String {
    match requested {
        u64::MAX => format!(
            "a request whose size overflows is too large (maximum {})",
            Size(max)
        ),
        _ => format!(
            "a request of {} is too large (maximum {})",
            Size(requested),
            Size(max)
        ),
    }
}

/// The figures of a limit refusal, as its message gives them.
pub(crate) struct Refusal {
    /// Whose live bytes: "its" (a tenant's), "the pool's".
    pub(crate) whose: &'static str,
    pub(crate) requested: u64,
    pub(crate) live: u64,
    pub(crate) limit: u64,
    pub(crate) needed: u64,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Refusal {
            whose,
            requested,
            live,
            limit,
            needed,
        } = *self;
        write!(f, "a charge of {}", Size(requested))?;
        if needed != requested {
            write!(f, " more, for a buffer of {} in all", Size(needed))?;
        }
        if let Some(class) = ClassCharge::of(needed) {
            write!(f, " ({class})")?;
        }
        write!(
            f,
            " would take {whose} live bytes from {} to {}, past its limit of {}; ",
            Size(live),
            Size(live.saturating_add(requested)),
            Size(limit),
        )?;
        if needed <= limit {
            f.write_str("fits once other buffers and reservations drop")
        } else {
            write!(
                f,
                "never fits: {} is more than the limit itself",
                Size(needed)
            )
        }
    }
}

/// The size class whose slab is exactly `bytes`: which buffers are charged that much.
pub(crate) struct ClassCharge(PoolClass);

impl ClassCharge {
    pub(crate) fn of(bytes: u64) -> Option<ClassCharge> {
        PoolClass::non_oversize()
            .into_iter()
            .find(|class| class.capacity() as u64 == bytes)
            .map(ClassCharge)
    }
}

impl fmt::Display for ClassCharge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = self.0;
        let capacity = Size(class.capacity() as u64);
        let name = match class {
            PoolClass::Small => "Small",
            PoolClass::Medium => "Medium",
            PoolClass::Large => "Large",
            PoolClass::Huge => "Huge",
            PoolClass::Oversize => "Oversize",
        };
        match class.index().checked_sub(1) {
            None => write!(
                f,
                "any buffer up to {capacity} is charged its {capacity} {name} slab"
            ),
            Some(below) => write!(
                f,
                "any buffer above {} up to {capacity} is charged its {capacity} {name} slab",
                Size(PoolClass::all()[below].capacity() as u64),
            ),
        }
    }
}

/// A byte count as people read it: in the largest unit (GiB, MiB, KiB) it is at least, when
/// that is exact with at most two decimals (`10 MiB`, `7.5 MiB`); else in a smaller unit it
/// is a whole number of (`1025 MiB`); else exact with an approximation
/// (`5242881 bytes (5.0 MiB)`); below 1 KiB in bytes.
pub(crate) struct Size(pub(crate) u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        let n = self.0;
        let Some(&(unit, name)) = UNITS.iter().find(|(unit, _)| n >= *unit) else {
            return match n {
                1 => f.write_str("1 byte"),
                _ => write!(f, "{n} bytes"),
            };
        };
        let whole = n / unit;
        let rest = n % unit;
        // The remainder in hundredths of the unit, when it is exactly that.
        let hundredths = (u128::from(rest) * 100)
            .checked_rem(u128::from(unit))
            .filter(|r| *r == 0)
            .map(|_| u128::from(rest) * 100 / u128::from(unit));
        match hundredths {
            Some(0) => write!(f, "{whole} {name}"),
            Some(h) if h % 10 == 0 => write!(f, "{whole}.{} {name}", h / 10),
            Some(h) => write!(f, "{whole}.{h:02} {name}"),
            None => match UNITS.iter().find(|(unit, _)| n.is_multiple_of(*unit)) {
                Some((smaller, name)) => write!(f, "{} {name}", n / smaller),
                None => write!(f, "{n} bytes ({:.1} {name})", n as f64 / unit as f64),
            },
        }
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

/// Whose limit a [`PoolError::WaitDeadlock`] names.
fn deadlock_scope(tenant: Option<&str>) -> String {
    match tenant {
        Some(id) => format!("tenant {id:?} hard"),
        None => "pool".to_owned(),
    }
}
