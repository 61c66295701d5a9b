//! [`VerifiedBody`]: the body a verified request carries to the inner service.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// The body a verified request carries to the inner service: the buffered bytes, exactly as
/// they were signed, in one frame (none when the body is empty). Not boxed: an axum `Router`
/// wraps it in its own `Body` as it does any body, and a plain tower service reads it without an
/// allocation, as a [`Body`] or at once with [`into_bytes`](Self::into_bytes).
#[derive(Debug, Clone, Default)]
pub struct VerifiedBody {
    data: Option<Bytes>,
}

impl VerifiedBody {
    pub(crate) fn new(data: Bytes) -> Self {
        Self {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// The bytes not yet read as a frame: the whole verified body, unless it was polled.
    pub fn into_bytes(self) -> Bytes {
        self.data.unwrap_or_default()
    }
}

impl Body for VerifiedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |data| data.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn one_frame_then_the_end_and_an_exact_size() {
        let mut body = VerifiedBody::new(Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(body.size_hint().exact(), Some(7));
        assert!(!body.is_end_stream());
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "{\"a\":1}");
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn an_empty_body_has_no_frame() {
        let mut body = VerifiedBody::new(Bytes::new());
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
        assert!(VerifiedBody::new(Bytes::new()).into_bytes().is_empty());
    }

    #[test]
    fn into_bytes_is_the_whole_body() {
        let body = VerifiedBody::new(Bytes::from_static(b"signed"));
        assert_eq!(body.into_bytes(), "signed");
    }
}
