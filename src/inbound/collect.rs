//! Buffering a body into one `BytesMut` while feeding each frame to the verification.

use std::mem;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::Extensions;
use http_body::Body;

use crate::scheme::{Verification, Verified, VerifyError};

/// A boxed error, as bodies report them.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Frames handled in one `poll` before yielding, so a body that is always ready (or sends
/// endless empty frames) cannot monopolise a worker thread.
const FRAME_BUDGET: usize = 64;

/// Why collecting failed.
#[derive(Debug)]
pub(crate) enum CollectError {
    /// The verdict of the scheme.
    Verify(VerifyError),
    /// More than `limit` bytes (or a `LengthLimitError` from an inner limit).
    TooLarge,
    /// The body reported an error.
    Body,
}

/// The buffering half of collecting a body: one buffer, the limit, and what was drained past
/// it. Kept apart from the body and the verification, which the layer's future and
/// [`WebhookVerifier::verify`](super::WebhookVerifier::verify) each hold their own way.
#[derive(Debug)]
pub(crate) struct Buffer {
    // The first data frame, kept as is (zero-copy for a `Bytes`-backed body); copied into
    // `buf` only when a second frame arrives.
    first: Option<Bytes>,
    buf: BytesMut,
    capacity: usize,
    limit: usize,
    drained: Option<usize>,
}

impl Buffer {
    /// A buffer for at most `limit` bytes that reserves `capacity` (the declared length) once
    /// a second frame arrives.
    #[inline]
    pub(crate) fn new(limit: usize, capacity: usize) -> Self {
        Self {
            first: None,
            buf: BytesMut::new(),
            capacity: capacity.min(limit),
            limit,
            drained: None,
        }
    }

    /// Polls `body` to its end (`poll_frame` returning `None`; `is_end_stream` is never
    /// trusted), appends each data frame to the buffer and feeds it to `verification` in the
    /// same pass, ignores trailers, then asks the verification for its verdict and records
    /// the [`Verified`] metadata in `extensions` (straight from the verdict: it is large
    /// enough that every move is a copy).
    ///
    /// Once over the limit, the rest of the body is read and discarded up to another `limit`
    /// bytes before answering, so the client sees the `413` instead of a reset connection.
    pub(crate) fn poll_collect<B, V>(
        &mut self,
        mut body: Pin<&mut B>,
        verification: &mut Option<V>,
        extensions: &mut Extensions,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Bytes, CollectError>>
    where
        B: Body,
        B::Error: Into<BoxError>,
        V: Verification,
    {
        for _ in 0..FRAME_BUDGET {
            let frame = match ready!(body.as_mut().poll_frame(cx)) {
                None => return Poll::Ready(self.finish(verification, extensions)),
                Some(Err(error)) => {
                    let error = error.into();
                    return Poll::Ready(Err(
                        if self.drained.is_some() || is_length_limit(&*error) {
                            CollectError::TooLarge
                        } else {
                            CollectError::Body
                        },
                    ));
                }
                Some(Ok(frame)) => frame,
            };
            // Trailers are not signed by any scheme: ignored.
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            let len = data.remaining();
            if let Some(drained) = &mut self.drained {
                *drained = drained.saturating_add(len);
                if *drained > self.limit {
                    return Poll::Ready(Err(CollectError::TooLarge));
                }
                continue;
            }
            let held = self.first.as_ref().map_or(0, Bytes::len) + self.buf.len();
            if held.saturating_add(len) > self.limit {
                // Over the limit: free the buffer and the MACs, drain the rest.
                self.first = None;
                self.buf = BytesMut::new();
                *verification = None;
                self.drained = Some(len);
                continue;
            }
            let Some(verification) = verification.as_mut() else {
                return Poll::Ready(Err(CollectError::Body));
            };
            if len == 0 {
                continue;
            }
            if held == 0 {
                // The first non-empty frame: keep it without copying (`Bytes` hands itself
                // over; other buffers are copied once, into the `Bytes`).
                let bytes = data.copy_to_bytes(len);
                verification.update(&bytes);
                self.first = Some(bytes);
                continue;
            }
            if let Some(first) = self.first.take() {
                self.buf
                    .reserve(self.capacity.max(first.len().saturating_add(len)));
                self.buf.extend_from_slice(&first);
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                let n = chunk.len();
                verification.update(chunk);
                self.buf.extend_from_slice(chunk);
                data.advance(n);
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn finish<V: Verification>(
        &mut self,
        verification: &mut Option<V>,
        extensions: &mut Extensions,
    ) -> Result<Bytes, CollectError> {
        if self.drained.is_some() {
            return Err(CollectError::TooLarge);
        }
        // `None` only when polled again after completion.
        let verification = verification.take().ok_or(CollectError::Body)?;
        let bytes = match self.first.take() {
            Some(first) => first,
            None => mem::take(&mut self.buf).freeze(),
        };
        match verification.finish(&bytes) {
            Ok(verified) => extensions.insert::<Verified>(verified),
            Err(error) => return Err(CollectError::Verify(error)),
        };
        Ok(bytes)
    }
}

/// Whether `error` (or one of its sources, through `axum::Error` wrappers) is an
/// `http_body_util::LengthLimitError`.
pub(crate) fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = error.source();
    }
    false
}
