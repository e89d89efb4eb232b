//! HTTP answers for refusals (feature `http-body`): [`PoolError::status_code`],
//! [`CollectError::status_code`], a retry hint, and with the `axum` feature an axum
//! `IntoResponse` for both errors, so a handler returns them with `?` and no wrapper.
//!
//! The mapping is documented on `PoolError::status_code` (the public docs); in short, 413
//! for what never fits, 429 / 503 with `Retry-After` when waiting helps, 400 for a broken
//! body. The retry hint is one second: the pool cannot know when other requests will drop
//! their buffers, and a second is long for a request and short for a client's backoff.

use std::time::Duration;

use http::StatusCode;

#[cfg(feature = "axum")]
use crate::error::{ClassCharge, Size};
use crate::{CollectError, PoolError};

/// The `Retry-After` hint of a refusal that waiting can fix.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl PoolError {
    /// The HTTP status that answers a request refused with this error:
    ///
    /// | error | status | [`retry_after`](Self::retry_after) |
    /// |---|---|---|
    /// | `TooLarge` (`max_request_bytes`) | 413 Content Too Large | |
    /// | `TenantHardLimit`, waiting helps | 429 Too Many Requests | 1 s |
    /// | `PoolLimit`, waiting helps | 503 Service Unavailable | 1 s |
    /// | `TenantHardLimit` or `PoolLimit`, larger than the limit | 413 Content Too Large | |
    /// | `WaitDeadlock` of a tenant's hard limit | 429 Too Many Requests | 1 s |
    /// | `WaitDeadlock` of `max_live_bytes` | 503 Service Unavailable | 1 s |
    /// | `AllocFailed` | 503 Service Unavailable | |
    /// | `GlobalAlreadyInitialized` | 500 Internal Server Error | |
    ///
    /// "Waiting helps" is [`waiting_helps`](Self::waiting_helps): the request fits the
    /// limit itself, so it succeeds once other buffers drop. A request that can never fit
    /// is 413 whichever limit refused it, since sending it again is refused again. A tenant
    /// at its own limit is 429 (that client sends too much at once); the pool at
    /// `max_live_bytes` is 503 (the server is busy for everyone). `GlobalAlreadyInitialized`
    /// is the server's bug, not the client's.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    /// use http::StatusCode;
    ///
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// tenant.set_hard_limit(Some(1 << 20));
    /// let held = tenant.acquire(1 << 20);
    ///
    /// let busy = tenant.try_acquire(4096).unwrap_err(); // fits once `held` drops
    /// assert_eq!(busy.status_code(), StatusCode::TOO_MANY_REQUESTS);
    /// let never = tenant.try_acquire(2 << 20).unwrap_err(); // 2 MiB never fits 1 MiB
    /// assert_eq!(never.status_code(), StatusCode::PAYLOAD_TOO_LARGE);
    /// # drop(held);
    /// ```
    pub fn status_code(&self) -> StatusCode {
        match self {
            PoolError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PoolError::TenantHardLimit { .. } if self.waiting_helps() => {
                StatusCode::TOO_MANY_REQUESTS
            }
            PoolError::PoolLimit { .. } if self.waiting_helps() => StatusCode::SERVICE_UNAVAILABLE,
            PoolError::TenantHardLimit { .. } | PoolError::PoolLimit { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            PoolError::WaitDeadlock {
                tenant: Some(_), ..
            } => StatusCode::TOO_MANY_REQUESTS,
            PoolError::WaitDeadlock { tenant: None, .. } => StatusCode::SERVICE_UNAVAILABLE,
            PoolError::AllocFailed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            PoolError::GlobalAlreadyInitialized | PoolError::GuaranteesPastLimit { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// How long a client should wait before sending the same request again, for a
    /// `Retry-After` header: one second when [`waiting_helps`](Self::waiting_helps) (the
    /// 429 and 503 limit refusals) and for a [`WaitDeadlock`](PoolError::WaitDeadlock)
    /// (the same request alone, later, may fit), `None` otherwise. An allocator failure gets no hint:
    /// nothing says when memory comes back.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use axon_buffer::BufferPool;
    ///
    /// let pool = BufferPool::builder().max_live_bytes(64 * 1024).build();
    /// let held = pool.acquire(64 * 1024);
    /// let busy = pool.try_acquire(100).unwrap_err();
    /// assert_eq!(busy.status_code(), http::StatusCode::SERVICE_UNAVAILABLE);
    /// assert_eq!(busy.retry_after(), Some(Duration::from_secs(1)));
    /// # drop(held);
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        let again = self.waiting_helps() || matches!(self, PoolError::WaitDeadlock { .. });
        again.then_some(RETRY_AFTER)
    }

    /// A short text for the response body: why, with the figures of the decision that
    /// concern the client (what its request is charged, its tenant's limit and live bytes),
    /// never whose data, nor the tenant's id, nor what the pool holds for others.
    #[cfg(feature = "axum")]
    fn reason(&self) -> String {
        match *self {
            PoolError::TooLarge { requested, max } => match requested {
                u64::MAX => format!("request too large: at most {}", Size(max)),
                _ => format!(
                    "request too large: {} asked, at most {}",
                    Size(requested),
                    Size(max)
                ),
            },
            PoolError::TenantHardLimit {
                requested,
                live,
                limit,
                needed,
                ..
            } if self.waiting_helps() => format!(
                "the tenant's memory limit is reached: {} and the tenant holds {} of its {} \
                 hard limit; retry later",
                Charged { requested, needed },
                Size(live),
                Size(limit),
            ),
            PoolError::TenantHardLimit { limit, needed, .. } => format!(
                "request larger than the tenant's memory limit: {}, more than the tenant's {} \
                 hard limit",
                Charged {
                    requested: needed,
                    needed
                },
                Size(limit),
            ),
            PoolError::PoolLimit {
                requested, needed, ..
            } if self.waiting_helps() => format!(
                "the server's memory limit is reached: {}; retry later",
                Charged { requested, needed },
            ),
            PoolError::PoolLimit { limit, needed, .. } => format!(
                "request larger than the server's memory limit: {}, more than the server's {} \
                 limit",
                Charged {
                    requested: needed,
                    needed
                },
                Size(limit),
            ),
            PoolError::WaitDeadlock {
                ref tenant,
                requested,
                held,
                limit,
                ..
            } => format!(
                "{}: this request's buffer holds {} and needs {} more, and every byte under \
                 the {} limit is held by requests waiting like it; retry later",
                match tenant {
                    Some(_) => "the tenant's memory limit is held by its waiting requests",
                    None => "the server's memory limit is held by waiting requests",
                },
                Size(held),
                Size(requested),
                Size(limit),
            ),
            PoolError::AllocFailed { .. } => "the server is out of memory".into(),
            PoolError::GlobalAlreadyInitialized | PoolError::GuaranteesPastLimit { .. } => {
                "internal server error".into()
            }
        }
    }
}

/// What a refused request is charged, and why when that is a class's slab: `this request
/// is charged 10 MiB (any buffer above 1 MiB up to 10 MiB is charged its 10 MiB Huge slab)`,
/// or for a growth step `this request's buffer grows to 10 MiB, a charge of 9 MiB more`.
#[cfg(feature = "axum")]
struct Charged {
    requested: u64,
    needed: u64,
}

#[cfg(feature = "axum")]
impl std::fmt::Display for Charged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Charged { requested, needed } = *self;
        if needed == requested {
            write!(f, "this request is charged {}", Size(needed))?;
        } else {
            write!(
                f,
                "this request's buffer grows to {}, a charge of {} more",
                Size(needed),
                Size(requested)
            )?;
        }
        match ClassCharge::of(needed) {
            Some(class) => write!(f, " ({class})"),
            None => Ok(()),
        }
    }
}

impl<E> CollectError<E> {
    /// The HTTP status that answers a request whose body could not be collected:
    ///
    /// | error | status | [`retry_after`](Self::retry_after) |
    /// |---|---|---|
    /// | `Body` (the body broke) | 400 Bad Request | |
    /// | `TooLarge` (`max` passed) | 413 Content Too Large | |
    /// | `Pool(err)` | [`err.status_code()`](PoolError::status_code): 413, 429, 503 or 500 | `err.retry_after()` |
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::{BufferPool, CollectError};
    /// use bytes::Bytes;
    /// use http::StatusCode;
    /// use http_body_util::Full;
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// tenant.set_hard_limit(Some(64 * 1024));
    /// let body = Full::new(Bytes::from(vec![0u8; 100_000])); // a Large slab: 1 MiB
    /// let err = tenant.collect_body(body, 1 << 20).await.unwrap_err();
    /// assert!(matches!(err, CollectError::Pool(_)));
    /// assert_eq!(err.status_code(), StatusCode::PAYLOAD_TOO_LARGE); // never fits 64 KiB
    /// assert_eq!(err.retry_after(), None);
    /// # });
    /// ```
    pub fn status_code(&self) -> StatusCode {
        match self {
            CollectError::Body(_) => StatusCode::BAD_REQUEST,
            CollectError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            CollectError::Pool(err) => err.status_code(),
        }
    }

    /// The `Retry-After` hint: the pool refusal's ([`PoolError::retry_after`]), `None` for
    /// a broken or too large body.
    ///
    /// # Examples
    ///
    /// ```
    /// use axon_buffer::CollectError;
    ///
    /// let err: CollectError<std::io::Error> = CollectError::TooLarge { max: 10, at_least: 11 };
    /// assert_eq!(err.retry_after(), None);
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CollectError::Pool(err) => err.retry_after(),
            _ => None,
        }
    }

    /// A short text for the response body: why, never the body's bytes.
    #[cfg(feature = "axum")]
    fn reason(&self) -> String {
        match self {
            CollectError::Body(_) => "broken request body".into(),
            CollectError::TooLarge { max, .. } => {
                format!("request body too large: at most {}", Size(*max as u64))
            }
            CollectError::Pool(err) => err.reason(),
        }
    }
}

/// The answer to a wait for room that ran past the server's deadline (feature
/// `http-body`): `503 Service Unavailable` with `Retry-After: 1` and a plain-text reason
/// that says how long the request waited.
///
/// The waiting forms (`acquire_wait`, `collect_body_wait`, ...) wait as long as they are
/// polled; a server bounds them with its runtime's timer, and when the timer wins, the
/// wait future is dropped (it charged nothing, counts in `waits_abandoned_total`, and
/// hands its turn on). This is the response for that case, so a handler needs no error of
/// its own. 503 rather than 429: the wait may have been for the pool's budget, which is
/// no single tenant's doing; either way the client may retry after the hint.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use axon_buffer::{BufferPool, WaitElapsed};
///
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
/// # rt.block_on(async {
/// let pool = BufferPool::default();
/// let tenant = pool.tenant("acme");
/// tenant.set_hard_limit(Some(4096));
/// let held = tenant.acquire(4096);
/// let deadline = Duration::from_millis(20);
/// let answer = match tokio::time::timeout(deadline, tenant.acquire_wait(4096)).await {
///     Ok(Ok(buf)) => Ok(buf),
///     Ok(Err(refused)) => Err(refused.status_code()),
///     Err(_elapsed) => Err(WaitElapsed::new(deadline).status_code()),
/// };
/// assert_eq!(answer.unwrap_err(), http::StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(pool.snapshot().waits_abandoned_total, 1);
/// # drop(held);
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitElapsed {
    waited: Duration,
}

impl WaitElapsed {
    /// A wait given up after `waited` (the deadline the handler set).
    pub fn new(waited: Duration) -> WaitElapsed {
        WaitElapsed { waited }
    }

    /// How long the request waited.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// `503 Service Unavailable`.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    /// The `Retry-After` hint: one second, as for the limit refusals that waiting helps.
    pub fn retry_after(&self) -> Duration {
        RETRY_AFTER
    }

    /// A short text for the response body.
    pub fn reason(&self) -> String {
        format!(
            "no memory for this request within {} ms: the server is busy; retry later",
            self.waited.as_millis()
        )
    }
}

impl std::fmt::Display for WaitElapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "waited {} ms for memory, past the deadline",
            self.waited.as_millis()
        )
    }
}

impl std::error::Error for WaitElapsed {}

#[cfg(feature = "axum")]
mod axum_response {
    use axum_core::response::{IntoResponse, Response};
    use http::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    /// The response of a refusal: its status, `Retry-After` when waiting helps, and a short
    /// plain-text reason.
    fn respond(status: StatusCode, retry_after: Option<Duration>, reason: String) -> Response {
        let mut response = (status, reason + "\n").into_response();
        if let Some(after) = retry_after {
            let seconds = after.as_secs().max(1);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }

    /// Feature `axum`: the status of [`PoolError::status_code`], a `Retry-After` header
    /// when [`PoolError::retry_after`] gives one, and a one-line plain-text reason: what
    /// the request is charged against which limit (for a tenant's limit, also what the
    /// tenant holds), never the tenant's id nor what the pool holds for others.
    ///
    /// ```
    /// use axon_buffer::BufferPool;
    /// use axum_core::response::IntoResponse;
    ///
    /// let pool = BufferPool::default();
    /// let tenant = pool.tenant("acme");
    /// tenant.set_hard_limit(Some(4096));
    /// let held = tenant.acquire(100);
    /// let response = tenant.try_acquire(100).unwrap_err().into_response();
    /// assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
    /// assert_eq!(response.headers()["retry-after"], "1");
    /// # drop(held);
    /// ```
    impl IntoResponse for PoolError {
        fn into_response(self) -> Response {
            respond(self.status_code(), self.retry_after(), self.reason())
        }
    }

    /// Feature `axum`: the status of [`CollectError::status_code`], a `Retry-After` header
    /// when [`CollectError::retry_after`] gives one, and a one-line plain-text reason
    /// (never the body's bytes, nor the body's own error message).
    ///
    /// ```
    /// use axon_buffer::CollectError;
    /// use axum_core::response::IntoResponse;
    ///
    /// let err: CollectError<std::io::Error> = CollectError::TooLarge { max: 1024, at_least: 4096 };
    /// let response = err.into_response();
    /// assert_eq!(response.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    /// assert!(response.headers().get("retry-after").is_none());
    /// ```
    impl<E> IntoResponse for CollectError<E> {
        fn into_response(self) -> Response {
            respond(self.status_code(), self.retry_after(), self.reason())
        }
    }

    /// Feature `axum`: `503 Service Unavailable`, `Retry-After: 1`, and the reason.
    ///
    /// ```
    /// use std::time::Duration;
    /// use axon_buffer::WaitElapsed;
    /// use axum_core::response::IntoResponse;
    ///
    /// let response = WaitElapsed::new(Duration::from_secs(5)).into_response();
    /// assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    /// assert_eq!(response.headers()["retry-after"], "1");
    /// ```
    impl IntoResponse for WaitElapsed {
        fn into_response(self) -> Response {
            respond(self.status_code(), Some(self.retry_after()), self.reason())
        }
    }
}
