#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "http-body")]
mod body;
mod buf;
mod chain;
mod class;
mod error;
mod inner;
mod leak;
mod pool;
mod snapshot;
#[cfg(feature = "http-body")]
mod status;
mod tenant;

#[cfg(feature = "prometheus")]
pub mod prometheus;

#[cfg(feature = "http-body")]
pub use body::CollectError;
pub use buf::PooledBuf;
pub use chain::{BytesChain, PooledChain};
pub use class::PoolClass;
pub use error::PoolError;
pub use inner::account::{MAX_TENANT_ID_LEN, OVERFLOW_TENANT_ID};
pub use leak::OutstandingBuffer;
pub use pool::{BufferPool, BufferPoolBuilder};
pub use snapshot::BufferPoolSnapshot;
#[cfg(feature = "http-body")]
pub use status::WaitElapsed;
pub use tenant::{Reservation, Tenant};
