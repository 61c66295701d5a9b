//! Shared pieces of the fuzz targets: a request head built from arbitrary parts, and one
//! verification run the way the inbound layer drives it (begin, body frames, finish).

use arbitrary::Arbitrary;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use tower_webhooks::scheme::{RequestHead, Scheme, Verification, Verified, VerifyError};
use tower_webhooks::SecretSet;

/// A request head as a hostile sender may write it: any method token, any URI text, and any
/// header names and values (those `http` itself refuses are dropped, as hyper would refuse them).
#[derive(Arbitrary, Debug, Default)]
pub struct Head {
    /// The method token.
    pub method: String,
    /// The request target (path and query, or an absolute URI).
    pub uri: String,
    /// Header names and raw values, in order; duplicates are appended.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// The `http` request head; a method or URI that `http` refuses becomes `POST` or `/`.
    pub fn parts(&self) -> RequestHead {
        let method = Method::from_bytes(self.method.as_bytes()).unwrap_or(Method::POST);
        let mut builder = Request::builder().method(method);
        if let Ok(uri) = self.uri.parse::<http::Uri>() {
            builder = builder.uri(uri);
        }
        let (mut parts, ()) = builder
            .body(())
            .expect("a method and a parsed URI always build")
            .into_parts();
        for (name, value) in &self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                parts.headers.append(name, value);
            }
        }
        parts
    }
}

/// A body as it arrives: arbitrary frames, fed one by one.
#[derive(Arbitrary, Debug, Default)]
pub struct Frames(pub Vec<Vec<u8>>);

impl Frames {
    /// The whole body.
    pub fn body(&self) -> Bytes {
        Bytes::from(self.0.concat())
    }
}

/// Begins a verification on `head`, feeds `frames` and finishes: what
/// `WebhookSignature::call` and its future do, without the service around them.
pub fn verify<S: Scheme>(
    scheme: &S,
    head: &RequestHead,
    secrets: &SecretSet,
    now: i64,
    frames: &Frames,
) -> Result<Verified, VerifyError> {
    let mut verification = scheme.begin(head, secrets, now)?;
    for frame in &frames.0 {
        verification.update(frame);
    }
    verification.finish(&frames.body())
}
