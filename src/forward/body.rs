//! The request and response bodies of [`WebhookForward`](super::WebhookForward).
//!
//! Both are `pub` because the service's `Service` impl names them, but the module is private
//! and they are not re-exported: an inner service takes any `http_body::Body`, and a caller
//! reads the response as one, so neither needs their names.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::job::{request_id_value, Capture, Job, PendingStore};
use crate::delivery::{BoxError, X_REQUEST_ID};

pin_project! {
    /// The request body the inner service sees: the original stream, or (when the layer
    /// looked for the legacy `webhook_endpoint` JSON field) the buffered frames followed by
    /// whatever was not read.
    pub struct RequestBody<B> {
        #[pin]
        kind: RequestKind<B>,
    }
}

pin_project! {
    #[project = RequestKindProj]
    enum RequestKind<B> {
        Stream { #[pin] body: B },
        Buffered { frames: VecDeque<Frame<Bytes>>, rest: Option<Pin<Box<B>>> },
    }
}

impl<B> RequestBody<B> {
    pub(crate) fn stream(body: B) -> Self {
        Self {
            kind: RequestKind::Stream { body },
        }
    }

    pub(crate) fn buffered(frames: VecDeque<Frame<Bytes>>, rest: Option<Pin<Box<B>>>) -> Self {
        Self {
            kind: RequestKind::Buffered { frames, rest },
        }
    }
}

impl<B> fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            RequestKind::Stream { .. } => f.write_str("RequestBody::Stream"),
            RequestKind::Buffered { frames, rest } => f
                .debug_struct("RequestBody::Buffered")
                .field("frames", &frames.len())
                .field("rest", &rest.is_some())
                .finish(),
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            RequestKindProj::Stream { body } => body.poll_frame(cx).map_err(Into::into),
            RequestKindProj::Buffered { frames, rest } => {
                if let Some(frame) = frames.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                match rest {
                    Some(body) => body.as_mut().poll_frame(cx).map_err(Into::into),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RequestKind::Stream { body } => body.is_end_stream(),
            RequestKind::Buffered { frames, rest } => {
                frames.is_empty() && rest.as_ref().is_none_or(|body| body.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RequestKind::Stream { body } => body.size_hint(),
            RequestKind::Buffered { frames, rest } => {
                let buffered: u64 = frames
                    .iter()
                    .filter_map(Frame::data_ref)
                    .map(|data| data.len() as u64)
                    .sum();
                let mut hint = rest
                    .as_ref()
                    .map_or_else(|| SizeHint::with_exact(0), |body| body.size_hint());
                let lower = hint.lower() + buffered;
                match hint.upper() {
                    Some(upper) => hint.set_exact_or(lower, upper + buffered),
                    None => hint.set_lower(lower),
                }
                hint
            }
        }
    }
}

trait SizeHintExt {
    fn set_exact_or(&mut self, lower: u64, upper: u64);
}

impl SizeHintExt for SizeHint {
    fn set_exact_or(&mut self, lower: u64, upper: u64) {
        if lower == upper {
            self.set_exact(lower);
        } else {
            self.set_upper(upper);
            self.set_lower(lower);
        }
    }
}

pin_project! {
    /// The response body of [`WebhookForward`](super::WebhookForward): the inner body,
    /// unchanged, copied (up to the capture limit) for the delivery as it streams to the
    /// caller; or a body the layer wrote itself (an async-mode answer or a problem).
    ///
    /// The delivery is handed to the engine when the body ends, by the poll that reads its
    /// last frame (in a background task only when the body is dropped first): the last frame
    /// waits until the store has the delivery, so that with a durable store the caller's
    /// complete answer means "on disk".
    pub struct ResponseBody<B> {
        #[pin]
        kind: ResponseKind<B>,
        capture: Option<Box<Capture>>,
        // The last frame, held until the delivery is stored.
        held: Option<Option<Frame<Bytes>>>,
        stored: Option<PendingStore>,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // A capture still here was not read to its end (ends are seen in `poll_frame`
            // and at construction).
            if let Some(capture) = this.project().capture.take() {
                capture.finish(Some(
                    "the caller went away before the response body was complete".into(),
                ));
            }
        }
    }
}

pin_project! {
    #[project = ResponseKindProj]
    enum ResponseKind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B, mut capture: Option<Box<Capture>>) -> Self
    where
        B: Body,
    {
        // An empty body may never be polled: its delivery is made now, and the response future
        // drives the store write before the caller gets the response (`take_pending_store`).
        let mut stored = None;
        if body.is_end_stream() {
            if let Some(capture) = capture.take() {
                stored = Some(capture.into_store(None));
            }
        }
        Self {
            kind: ResponseKind::Inner { body },
            capture,
            held: stored.as_ref().map(|_| None),
            stored,
        }
    }

    /// For an empty body: the store's answer the response must wait for.
    pub(crate) fn take_pending_store(&mut self) -> Option<PendingStore> {
        let stored = self.stored.take()?;
        self.held = None;
        Some(stored)
    }

    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: ResponseKind::Full {
                data: (!data.is_empty()).then_some(data),
            },
            capture: None,
            held: None,
            stored: None,
        }
    }
}

impl<B> From<Bytes> for ResponseBody<B> {
    fn from(data: Bytes) -> Self {
        Self::full(data)
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            ResponseKind::Inner { .. } => "inner",
            ResponseKind::Full { .. } => "full",
        };
        f.debug_struct("ResponseBody")
            .field("kind", &kind)
            .field("capturing", &self.capture.is_some())
            .finish()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        match this.kind.project() {
            ResponseKindProj::Full { data } => {
                Poll::Ready(data.take().map(|data| Ok(Frame::data(data))))
            }
            ResponseKindProj::Inner { mut body } => {
                if let Some(stored) = this.stored.as_mut() {
                    // The delivery's store answer (an error, too) releases the last frame.
                    ready!(Pin::new(stored).poll(cx));
                    *this.stored = None;
                    return Poll::Ready(this.held.take().flatten().map(Ok));
                }
                let polled = ready!(body.as_mut().poll_frame(cx));
                if let Some(capture) = this.capture.as_mut() {
                    match &polled {
                        Some(Ok(frame)) => {
                            if let Some(data) = frame.data_ref() {
                                capture.push(data);
                            }
                            if body.is_end_stream() {
                                if let Some(capture) = this.capture.take() {
                                    let mut stored = capture.into_store(None);
                                    if Pin::new(&mut stored).poll(cx).is_pending() {
                                        *this.held = Some(polled.and_then(Result::ok));
                                        *this.stored = Some(stored);
                                        return Poll::Pending;
                                    }
                                }
                            }
                        }
                        Some(Err(err)) => {
                            let note = format!("the response body failed: {err}");
                            if let Some(capture) = this.capture.take() {
                                capture.finish(Some(note));
                            }
                        }
                        None => {
                            if let Some(capture) = this.capture.take() {
                                let mut stored = capture.into_store(None);
                                if Pin::new(&mut stored).poll(cx).is_pending() {
                                    *this.held = Some(None);
                                    *this.stored = Some(stored);
                                    return Poll::Pending;
                                }
                            }
                        }
                    }
                }
                Poll::Ready(polled)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Inner { body } => self.stored.is_none() && body.is_end_stream(),
            ResponseKind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Inner { body } => body.size_hint(),
            ResponseKind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// Wraps a sync-mode response: adds `X-Request-Id` and captures the body for `job`.
pub(super) fn wrap_response<B>(response: Response<B>, job: Option<Job>) -> Response<ResponseBody<B>>
where
    B: Body,
{
    let (mut parts, body) = response.into_parts();
    let capture = job.map(|job| {
        if let Some(value) = request_id_value(&job.run_id) {
            parts.headers.insert(X_REQUEST_ID, value);
        }
        Box::new(Capture::new(job, parts.status, &parts.headers))
    });
    Response::from_parts(parts, ResponseBody::inner(body, capture))
}
