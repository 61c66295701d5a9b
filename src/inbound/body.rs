//! [`VerifiedBody`]: the body a verified request carries to the inner service.

/// The body a verified request carries to the inner service: the buffered bytes, exactly as
/// they were signed, in one frame. Not boxed: an axum `Router` wraps it in its own `Body`
/// as it does any body, and a plain tower service reads it without an allocation.
pub type VerifiedBody = http_body_util::Full<bytes::Bytes>;
