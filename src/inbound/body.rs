//! [`VerifiedBody`]: the body a verified request carries to the inner service.

/// The body a verified request carries to the inner service: the buffered bytes, exactly as
/// they were signed, in one frame. Not boxed: an axum `Router` wraps it in its own `Body`
/// as it does any body, and a plain tower service reads it without an allocation.
///
/// Responses go the other way as an axum [`Body`](axum::body::Body): under a `Router` the
/// inner service's response body already is one and passes through as it is (a router
/// would otherwise box the layer's body a second time); any other body is boxed once, and
/// the layer's own answers (rejections, duplicate acknowledgements) are built as one.
pub type VerifiedBody = http_body_util::Full<bytes::Bytes>;
