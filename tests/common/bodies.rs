//! Request bodies for the `collect_body*` tests (`tests/body.rs`, `tests/chain_body.rs`):
//! included by those two only, as `#[path = "common/bodies.rs"] mod bodies;`.
#![allow(dead_code)] // each including test uses a part

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream;
use http_body::{Body, Frame, SizeHint};
use http_body_util::StreamBody;

/// `len` bytes that differ from their neighbours, so a misplaced chunk shows.
pub(crate) fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// `data` as data frames of `chunk` bytes (the last may be shorter).
pub(crate) fn frames<E>(data: &Bytes, chunk: usize) -> Vec<Result<Frame<Bytes>, E>> {
    (0..data.len())
        .step_by(chunk)
        .map(|at| Ok(Frame::data(data.slice(at..(at + chunk).min(data.len())))))
        .collect()
}

pub(crate) type Frames<E = Infallible> = stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, E>>>;

/// A chunked upload: `data` in frames of `chunk` bytes, no size hint, as hyper delivers a
/// body sent without `Content-Length`.
pub(crate) fn chunked(data: &Bytes, chunk: usize) -> StreamBody<Frames> {
    StreamBody::new(stream::iter(frames(data, chunk)))
}

/// A body with an exact size hint of `hint` bytes over any other body, as hyper gives for a
/// request with `Content-Length` (delivered in many frames). The hint may lie.
pub(crate) struct Exact<B> {
    pub(crate) body: B,
    pub(crate) hint: u64,
}

impl<B: Body + Unpin> Body for Exact<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.hint)
    }
}

/// `data` in frames of `chunk` bytes under its exact length.
pub(crate) fn exact(data: &Bytes, chunk: usize) -> Exact<StreamBody<Frames>> {
    Exact {
        body: chunked(data, chunk),
        hint: data.len() as u64,
    }
}
