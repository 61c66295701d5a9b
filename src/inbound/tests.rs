use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::FromRef;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use serde::Deserialize;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

use super::*;
use crate::replay::MemoryReplayStore;
use crate::scheme::{Cerebrium, Message, RequestHead, Scheme, Verified, VerifyError};
use crate::secret::{Secret, SecretSet};

const SECRET: &str = "my-webhook-secret";
const NOW: i64 = 1_731_381_205;
const SIGNATURE: &str = "x-cerebrium-webhook-signature";

fn sign_headers(body: &[u8], id: &str, timestamp: i64, secret: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    Cerebrium::new()
        .sign(
            &Message::new(id, timestamp, body),
            &SecretSet::from(secret),
            &mut headers,
        )
        .unwrap();
    headers
}

fn request_with(uri: &str, headers: HeaderMap, body: Body) -> Request<Body> {
    let mut request = Request::post(uri).body(body).unwrap();
    // As received from the wire: nothing is marked sensitive yet.
    for (name, value) in &headers {
        let value = HeaderValue::from_bytes(value.as_bytes()).unwrap();
        request.headers_mut().insert(name, value);
    }
    assert!(request
        .headers()
        .values()
        .all(|value| !value.is_sensitive()));
    request
}

fn signed(body: &'static [u8]) -> Request<Body> {
    signed_as(body, "msg-1", NOW, SECRET)
}

fn signed_as(body: &'static [u8], id: &str, timestamp: i64, secret: &str) -> Request<Body> {
    request_with(
        "/hook",
        sign_headers(body, id, timestamp, secret),
        Body::from(body),
    )
}

fn layer() -> WebhookSignatureLayer<Cerebrium> {
    WebhookSignatureLayer::new(Cerebrium::new(), SECRET).clock(|| NOW)
}

/// What the inner service saw.
#[derive(Clone, Default)]
struct Seen {
    calls: Arc<AtomicUsize>,
    last: Arc<Mutex<Option<(Bytes, Verified, HeaderMap)>>>,
}

impl Seen {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn last(&self) -> (Bytes, Verified, HeaderMap) {
        self.last
            .lock()
            .unwrap()
            .clone()
            .expect("inner service was called")
    }
}

/// An inner service recording what it receives and answering `status`.
fn recorder(
    seen: Seen,
    status: StatusCode,
) -> impl Service<Request<VerifiedBody>, Response = Response<Body>, Error = Infallible> + Clone {
    service_fn(move |request: Request<VerifiedBody>| {
        let seen = seen.clone();
        async move {
            seen.calls.fetch_add(1, Ordering::SeqCst);
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let verified = parts.extensions.get::<Verified>().cloned().unwrap();
            *seen.last.lock().unwrap() = Some((bytes, verified, parts.headers));
            let mut response = Response::new(Body::from("handled"));
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        }
    })
}

async fn body_bytes<B>(body: B) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    body.collect().await.unwrap().to_bytes()
}

/// Checks a problem+json rejection and returns its `type` slug.
async fn problem_slug<B>(response: Response<B>, status: StatusCode) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let rejection = response.extensions().get::<Rejection>().cloned().unwrap();
    assert_eq!(rejection.status(), status);
    let body = body_bytes(response.into_body()).await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(!text.contains(SECRET), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["status"], status.as_u16());
    let slug = json["type"]
        .as_str()
        .unwrap()
        .strip_prefix("tag:tower-webhooks,2026:")
        .unwrap()
        .to_owned();
    assert_eq!(slug, rejection.kind().slug());
    slug
}

#[tokio::test]
async fn accepted_request_reaches_inner_with_same_bytes_and_metadata() {
    let seen = Seen::default();
    let service = layer().layer(recorder(seen.clone(), StatusCode::OK));
    let response = service
        .oneshot(signed(br#"{"smile": "wave"}"#))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response.into_body()).await, "handled");
    let (bytes, verified, headers) = seen.last();
    assert_eq!(bytes, &br#"{"smile": "wave"}"#[..]);
    assert_eq!(verified.scheme, "cerebrium");
    assert_eq!(verified.message_id.as_deref(), Some("msg-1"));
    assert_eq!(verified.timestamp, Some(NOW));
    assert_eq!(verified.secret.as_ref().unwrap().index, 0);
    assert_eq!(verified.replay_key().as_deref(), Some("cerebrium:msg-1"));
    // The signature header is marked sensitive for layers inside this one.
    assert!(headers[SIGNATURE].is_sensitive());
    assert!(!headers["x-request-id"].is_sensitive());
}

#[tokio::test]
async fn body_is_one_frame_of_the_buffered_bytes() {
    let service = layer().layer(service_fn(|request: Request<VerifiedBody>| async move {
        let mut body = request.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(body.frame().await.is_none());
        Ok::<_, Infallible>(Response::new(Body::from(first)))
    }));
    let chunks: Vec<Result<Bytes, Infallible>> = vec![
        Ok(Bytes::from_static(b"{\"a\":")),
        Ok(Bytes::from_static(b"1}")),
    ];
    let request = request_with(
        "/hook",
        sign_headers(b"{\"a\":1}", "m", NOW, SECRET),
        Body::from_stream(futures_util::stream::iter(chunks)),
    );
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response.into_body()).await, "{\"a\":1}");
}

#[tokio::test]
async fn verification_failures_never_reach_inner() {
    let body: &'static [u8] = br#"{"smile": "wave"}"#;
    let tampered = {
        let mut request = signed(body);
        *request.body_mut() = Body::from(&br#"{"smile": "wavE"}"#[..]);
        request
    };
    let mut missing = signed(body);
    missing.headers_mut().remove(SIGNATURE);
    let mut malformed_ts = signed(body);
    malformed_ts.headers_mut().insert(
        "x-cerebrium-webhook-timestamp",
        HeaderValue::from_static("-5"),
    );
    let cases = [
        (tampered, StatusCode::UNAUTHORIZED, "invalid-signature"),
        (
            signed_as(body, "msg-1", NOW, "wrong-secret"),
            StatusCode::UNAUTHORIZED,
            "invalid-signature",
        ),
        (missing, StatusCode::BAD_REQUEST, "missing-header"),
        (malformed_ts, StatusCode::BAD_REQUEST, "malformed-header"),
        (
            signed_as(body, "msg-1", NOW - 301, SECRET),
            StatusCode::UNAUTHORIZED,
            "stale-timestamp",
        ),
        (
            signed_as(body, "msg-1", NOW + 61, SECRET),
            StatusCode::UNAUTHORIZED,
            "future-timestamp",
        ),
    ];
    for (request, status, slug) in cases {
        let seen = Seen::default();
        let service = layer().layer(recorder(seen.clone(), StatusCode::OK));
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(problem_slug(response, status).await, slug);
        assert_eq!(seen.calls(), 0, "{slug}");
    }
}

#[tokio::test]
async fn rejection_never_leaks_the_expected_signature_in_body_or_logs() {
    // Capture the layer's log events.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let sent: &'static [u8] = b"tampered body";
    let expected = sign_headers(sent, "msg-1", NOW, SECRET)[SIGNATURE]
        .to_str()
        .unwrap()
        .trim_start_matches("v1,")
        .to_owned();
    let mut request = signed(b"original body");
    *request.body_mut() = Body::from(sent);
    let response = layer()
        .layer(recorder(Seen::default(), StatusCode::OK))
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = body_bytes(response.into_body()).await;
    let body = String::from_utf8_lossy(&body);
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("webhook rejected"), "{logs}");
    for text in [&*body, &*logs] {
        assert!(!text.contains(&expected), "{text}");
        assert!(!text.contains(SECRET), "{text}");
    }
}

/// A body that fails the test if polled.
struct NeverPolled;

impl http_body::Body for NeverPolled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        panic!("the body must not be read");
    }
}

#[tokio::test]
async fn too_large_by_content_length_is_refused_before_reading() {
    let seen = Seen::default();
    let mut service = layer()
        .limit(1024)
        .layer(recorder(seen.clone(), StatusCode::OK));
    let mut request = Request::post("/hook").body(NeverPolled).unwrap();
    request
        .headers_mut()
        .extend(sign_headers(b"x", "m", NOW, SECRET));
    request
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(3 * 1024 * 1024));
    let response = ServiceExt::<Request<NeverPolled>>::ready(&mut service)
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap();
    assert_eq!(
        problem_slug(response, StatusCode::PAYLOAD_TOO_LARGE).await,
        "body-too-large"
    );
    // The default limit is 2 MiB.
    assert_eq!(layer().verifier().body_limit(), 2_097_152);
    // A missing signature is reported first (the scheme begins before the length check).
    let mut request = Request::post("/hook").body(NeverPolled).unwrap();
    request
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(3 * 1024 * 1024));
    let response = ServiceExt::<Request<NeverPolled>>::ready(&mut service)
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(seen.calls(), 0);
}

fn chunk_stream(
    frames: usize,
    size: usize,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::iter((0..frames).map(move |_| Ok(Bytes::from(vec![b'a'; size]))))
}

#[tokio::test]
async fn too_large_chunked_stream_without_content_length() {
    let seen = Seen::default();
    let service = layer()
        .limit(64 * 1024)
        .layer(recorder(seen.clone(), StatusCode::OK));
    // 1000 frames of 1 KiB: over the limit after 64 of them.
    let request = request_with(
        "/hook",
        sign_headers(b"x", "m", NOW, SECRET),
        Body::from_stream(chunk_stream(1000, 1024)),
    );
    assert!(request.headers().get(header::CONTENT_LENGTH).is_none());
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(
        problem_slug(response, StatusCode::PAYLOAD_TOO_LARGE).await,
        "body-too-large"
    );
    assert_eq!(seen.calls(), 0);
}

#[tokio::test]
async fn a_limit_error_from_an_inner_limited_body_is_413() {
    let service = layer().layer(recorder(Seen::default(), StatusCode::OK));
    let body = http_body_util::Limited::new(Body::from(vec![b'a'; 100]), 10);
    let mut request = Request::post("/hook").body(body).unwrap();
    request
        .headers_mut()
        .extend(sign_headers(b"x", "m", NOW, SECRET));
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn erroring_body_stream_is_400() {
    let seen = Seen::default();
    let service = layer().layer(recorder(seen.clone(), StatusCode::OK));
    let stream = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"{\"partial\":")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "peer went away",
        )),
    ]);
    let request = request_with(
        "/hook",
        sign_headers(b"x", "m", NOW, SECRET),
        Body::from_stream(stream),
    );
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(
        problem_slug(response, StatusCode::BAD_REQUEST).await,
        "body-error"
    );
    assert_eq!(seen.calls(), 0);
}

/// A body whose `is_end_stream` always says `false` and whose `size_hint` is unknown, with
/// empty frames and trailers mixed in.
struct LyingBody {
    frames: VecDeque<Frame<Bytes>>,
}

impl http_body::Body for LyingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.frames.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn body_whose_is_end_stream_lies_still_completes() {
    let body = b"{\"one\":1,\"two\":2}";
    let mut frames: VecDeque<Frame<Bytes>> = VecDeque::new();
    for _ in 0..500 {
        // More empty frames than one poll's budget: the collector must yield and resume.
        frames.push_back(Frame::data(Bytes::new()));
    }
    frames.push_back(Frame::data(Bytes::from_static(&body[..9])));
    frames.push_back(Frame::data(Bytes::from_static(&body[9..])));
    let mut trailers = HeaderMap::new();
    trailers.insert("x-trailer", HeaderValue::from_static("ignored"));
    frames.push_back(Frame::trailers(trailers));
    let seen = Seen::default();
    let service = layer().layer(recorder(seen.clone(), StatusCode::OK));
    let mut request = Request::post("/hook").body(LyingBody { frames }).unwrap();
    request
        .headers_mut()
        .extend(sign_headers(body, "m", NOW, SECRET));
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(5), service.oneshot(request))
            .await
            .expect("must not hang")
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(seen.last().0, &body[..]);
}

#[tokio::test]
async fn non_utf8_body_correctly_signed_is_accepted() {
    let body: &'static [u8] = &[0xff, 0xfe, 0x00, 0x80, b'{', 0xc3, 0x28];
    let seen = Seen::default();
    let service = layer().layer(recorder(seen.clone(), StatusCode::OK));
    let response = service.oneshot(signed(body)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(seen.last().0, body);
}

#[tokio::test]
async fn rotation_reports_which_secret_matched() {
    let secrets: SecretSet = vec![
        Secret::new("new-secret").with_id("2026-11"),
        Secret::new("old-secret").with_id("2026-05"),
    ]
    .into();
    for (secret, index, id) in [("new-secret", 0, "2026-11"), ("old-secret", 1, "2026-05")] {
        let seen = Seen::default();
        let service = WebhookSignatureLayer::new(Cerebrium::new(), secrets.clone())
            .clock(|| NOW)
            .layer(recorder(seen.clone(), StatusCode::OK));
        let response = service
            .oneshot(signed_as(b"{}", "m", NOW, secret))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let matched = seen.last().1.secret.unwrap();
        assert_eq!(matched.index, index);
        assert_eq!(matched.id.as_deref(), Some(id));
    }
}

fn tenant_of(head: &RequestHead) -> Option<String> {
    head.uri.path().strip_prefix("/hooks/").map(str::to_owned)
}

fn tenant_secret(tenant: &str) -> Option<SecretSet> {
    match tenant {
        "acme" => Some("acme-secret".into()),
        "globex" => Some("globex-secret".into()),
        _ => None,
    }
}

async fn check_tenants<L>(layer: L)
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: Service<Request<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request<Body>>>::Response: axum::response::IntoResponse + 'static,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
{
    let app = Router::new()
        .route(
            "/hooks/{tenant}",
            post(|verified: Verified| async move { format!("{:?}", verified.message_id) }),
        )
        .layer(layer);
    let ok = request_with(
        "/hooks/acme",
        sign_headers(b"{}", "a1", NOW, "acme-secret"),
        Body::from("{}"),
    );
    let response = app.clone().oneshot(ok).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response.into_body()).await, "Some(\"a1\")");
    // Signed with another tenant's secret.
    let cross = request_with(
        "/hooks/globex",
        sign_headers(b"{}", "a1", NOW, "acme-secret"),
        Body::from("{}"),
    );
    let response = app.clone().oneshot(cross).await.unwrap();
    assert_eq!(
        problem_slug(response, StatusCode::UNAUTHORIZED).await,
        "invalid-signature"
    );
    let unknown = request_with(
        "/hooks/initech",
        sign_headers(b"{}", "a1", NOW, "acme-secret"),
        Body::from("{}"),
    );
    let response = app.oneshot(unknown).await.unwrap();
    assert_eq!(
        problem_slug(response, StatusCode::UNAUTHORIZED).await,
        "no-secret"
    );
}

#[tokio::test]
async fn per_request_secret_lookup_by_path() {
    check_tenants(
        WebhookSignatureLayer::with_secret_source(Cerebrium::new(), |head: &RequestHead| {
            tenant_of(head).as_deref().and_then(tenant_secret)
        })
        .clock(|| NOW),
    )
    .await;
    check_tenants(
        WebhookSignatureLayer::with_secret_source(
            Cerebrium::new(),
            secret_source_async(|head: &RequestHead| {
                let tenant = tenant_of(head);
                async move {
                    tokio::task::yield_now().await;
                    tenant.as_deref().and_then(tenant_secret)
                }
            }),
        )
        .clock(|| NOW),
    )
    .await;
}

#[tokio::test]
async fn per_request_secret_lookup_by_header() {
    let layer =
        WebhookSignatureLayer::with_secret_source(Cerebrium::new(), |head: &RequestHead| {
            let tenant = head.headers.get("x-tenant")?.to_str().ok()?;
            tenant_secret(tenant)
        })
        .clock(|| NOW);
    let service = layer.layer(recorder(Seen::default(), StatusCode::OK));
    let mut request = signed_as(b"{}", "m", NOW, "globex-secret");
    request
        .headers_mut()
        .insert("x-tenant", HeaderValue::from_static("globex"));
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = service
        .oneshot(signed_as(b"{}", "m", NOW, "globex-secret"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn duplicate_of_processed_delivery_is_acknowledged_without_handler() {
    let seen = Seen::default();
    let service = layer()
        .replay_store(MemoryReplayStore::new(100))
        .layer(recorder(seen.clone(), StatusCode::OK));
    let first = service.clone().oneshot(signed(b"{}")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(body_bytes(first.into_body()).await, "handled");
    let second = service.clone().oneshot(signed(b"{}")).await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()[header::CONTENT_TYPE], "application/json");
    let duplicate = second.extensions().get::<Duplicate>().cloned().unwrap();
    assert_eq!(duplicate.verified.message_id.as_deref(), Some("msg-1"));
    assert_eq!(
        body_bytes(second.into_body()).await,
        r#"{"status":"duplicate"}"#
    );
    assert_eq!(seen.calls(), 1);
    // Another id is processed.
    let other = service
        .oneshot(signed_as(b"{}", "msg-2", NOW, SECRET))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(seen.calls(), 2);
}

#[tokio::test]
async fn failed_handler_releases_the_id_so_a_retry_is_processed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let service = layer()
        .replay_store(MemoryReplayStore::new(100))
        .layer(service_fn(move |_request: Request<VerifiedBody>| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let status = if n == 0 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                };
                let mut response = Response::new(Body::empty());
                *response.status_mut() = status;
                Ok::<_, Infallible>(response)
            }
        }));
    let first = service.clone().oneshot(signed(b"{}")).await.unwrap();
    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let retry = service.clone().oneshot(signed(b"{}")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::NO_CONTENT);
    let third = service.oneshot(signed(b"{}")).await.unwrap();
    assert_eq!(third.status(), StatusCode::OK);
    assert!(third.extensions().get::<Duplicate>().is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn in_flight_duplicate_is_409_with_retry_after() {
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let (e, r, c) = (entered.clone(), release.clone(), calls.clone());
    let service = layer()
        .replay_store(MemoryReplayStore::new(100))
        .layer(service_fn(move |_request: Request<VerifiedBody>| {
            let (entered, release, calls) = (e.clone(), r.clone(), c.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                entered.notify_one();
                release.notified().await;
                Ok::<_, Infallible>(Response::new(Body::from("done")))
            }
        }));
    let first = tokio::spawn(service.clone().oneshot(signed(b"{}")));
    entered.notified().await;
    let duplicate = service.clone().oneshot(signed(b"{}")).await.unwrap();
    assert_eq!(duplicate.headers()[header::RETRY_AFTER], "5");
    assert_eq!(
        problem_slug(duplicate, StatusCode::CONFLICT).await,
        "replay-in-flight"
    );
    release.notify_one();
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn dropped_response_future_releases_the_reservation() {
    let store = MemoryReplayStore::new(100);
    let service = layer().replay_store(store.clone()).layer(service_fn(
        |_request: Request<VerifiedBody>| async {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Response::new(Body::empty()))
        },
    ));
    let pending = service.clone().oneshot(signed(b"{}"));
    let timed_out = tokio::time::timeout(std::time::Duration::from_millis(20), pending).await;
    assert!(timed_out.is_err());
    let key = crate::replay::scoped_key("cerebrium", Some(&Secret::new(SECRET)), "cerebrium:msg-1");
    // The reservation was made under that key (the store is not empty) and released.
    assert_eq!(store.len(), 0);
    assert_eq!(
        store.reserve_now(&key, NOW, DEFAULT_REPLAY_TTL),
        crate::replay::Reservation::Fresh
    );
}

#[derive(Debug, Deserialize, PartialEq)]
struct Event {
    smile: String,
}

#[tokio::test]
async fn extractors_behind_the_layer() {
    async fn handler(verified: Verified, VerifiedWebhook(event): VerifiedWebhook<Event>) -> String {
        format!("{} {}", event.smile, verified.message_id.unwrap())
    }
    async fn full(webhook: Webhook<Event>) -> String {
        format!(
            "{} {} {}",
            webhook.payload.smile,
            webhook.body.len(),
            webhook.verified.secret.unwrap().index
        )
    }
    let app = Router::new()
        .route("/hook", post(handler))
        .route("/full", post(full))
        .layer(layer());
    let response = app
        .clone()
        .oneshot(signed(br#"{"smile":"wave"}"#))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response.into_body()).await, "wave msg-1");
    let mut request = signed(br#"{"smile":"wave"}"#);
    *request.uri_mut() = "/full".parse().unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(body_bytes(response.into_body()).await, "wave 16 0");

    // Payload errors: syntax 400, shape 422.
    let response = app.clone().oneshot(signed(b"{not json")).await.unwrap();
    assert_eq!(
        problem_slug(response, StatusCode::BAD_REQUEST).await,
        "malformed-payload"
    );
    let response = app.oneshot(signed(br#"{"smile": 5}"#)).await.unwrap();
    assert_eq!(
        problem_slug(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid-payload"
    );
}

#[tokio::test]
async fn form_urlencoded_payload() {
    #[derive(Deserialize)]
    struct Command {
        command: String,
        text: String,
    }
    let app = Router::new()
        .route(
            "/hook",
            post(
                |VerifiedWebhook(cmd): VerifiedWebhook<Command>| async move {
                    format!("{} {}", cmd.command, cmd.text)
                },
            ),
        )
        .layer(layer());
    let mut request = signed(b"command=%2Fdeploy&text=prod+now");
    request.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
    );
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response.into_body()).await, "/deploy prod now");
    let mut request = signed(b"text=missing-command");
    request.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(
        problem_slug(response, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid-payload"
    );
}

#[derive(Clone)]
struct AppState {
    verifier: WebhookVerifier<Cerebrium>,
}

impl FromRef<AppState> for WebhookVerifier<Cerebrium> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

#[tokio::test]
async fn standalone_extractor_verifies_with_the_verifier_from_state() {
    async fn handler(webhook: Webhook<Event, WebhookVerifier<Cerebrium>>) -> String {
        format!(
            "{} {:?}",
            webhook.payload.smile, webhook.verified.message_id
        )
    }
    let verifier = WebhookVerifier::new(Cerebrium::new(), SECRET)
        .clock(|| NOW)
        .limit(1024 * 1024);
    let app = Router::new()
        .route("/hook", post(handler))
        .with_state(AppState { verifier });
    let response = app
        .clone()
        .oneshot(signed(br#"{"smile":"wave"}"#))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        body_bytes(response.into_body()).await,
        "wave Some(\"msg-1\")"
    );
    let mut tampered = signed(br#"{"smile":"wave"}"#);
    *tampered.body_mut() = Body::from(r#"{"smile":"evil"}"#);
    let response = app.clone().oneshot(tampered).await.unwrap();
    assert_eq!(
        problem_slug(response, StatusCode::UNAUTHORIZED).await,
        "invalid-signature"
    );
    let stale = signed_as(br#"{"smile":"wave"}"#, "m", NOW - 1000, SECRET);
    let response = app.clone().oneshot(stale).await.unwrap();
    assert_eq!(
        problem_slug(response, StatusCode::UNAUTHORIZED).await,
        "stale-timestamp"
    );
    // 3 MiB, chunked and declared: 413, no panic.
    let big = request_with(
        "/hook",
        sign_headers(b"x", "m", NOW, SECRET),
        Body::from_stream(chunk_stream(3 * 1024, 1024)),
    );
    let response = app.clone().oneshot(big).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let mut big = request_with(
        "/hook",
        sign_headers(b"x", "m", NOW, SECRET),
        Body::from(vec![b'a'; 3 * 1024 * 1024]),
    );
    big.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(3 * 1024 * 1024));
    let response = app.oneshot(big).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn standalone_extractor_honours_default_body_limit() {
    let app = Router::new()
        .route(
            "/hook",
            post(
                |webhook: Webhook<serde_json::Value, WebhookVerifier<Cerebrium>>| async move {
                    webhook.body.len().to_string()
                },
            ),
        )
        .layer(axum::extract::DefaultBodyLimit::max(8))
        .with_state(WebhookVerifier::new(Cerebrium::new(), SECRET).clock(|| NOW));
    let response = app
        .clone()
        .oneshot(signed(br#"{"a":"long enough"}"#))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let response = app.oneshot(signed(b"[1]")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn extractors_without_layer_or_verifier_are_a_500() {
    let app = Router::new()
        .route(
            "/hook",
            post(|VerifiedWebhook(_e): VerifiedWebhook<Event>| async { "" }),
        )
        .route("/meta", post(|_v: Verified| async { "" }))
        .route(
            "/optional",
            post(|v: Option<Verified>| async move { v.is_none().to_string() }),
        );
    let response = app
        .clone()
        .oneshot(signed(br#"{"smile":"x"}"#))
        .await
        .unwrap();
    assert_eq!(
        problem_slug(response, StatusCode::INTERNAL_SERVER_ERROR).await,
        "missing-verifier"
    );
    let mut request = signed(b"{}");
    *request.uri_mut() = "/meta".parse().unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let mut request = signed(b"{}");
    *request.uri_mut() = "/optional".parse().unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(body_bytes(response.into_body()).await, "true");
}

#[tokio::test]
async fn composes_with_trace_layer_in_router_layer_and_route_layer() {
    let handler = |VerifiedWebhook(event): VerifiedWebhook<Event>| async move { event.smile };
    let app = Router::new().route("/hook", post(handler)).layer(
        ServiceBuilder::new()
            .layer(tower_http::trace::TraceLayer::new_for_http())
            .layer(layer()),
    );
    let response = app
        .clone()
        .oneshot(signed(br#"{"smile":"wave"}"#))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response.into_body()).await, "wave");
    let mut tampered = signed(br#"{"smile":"wave"}"#);
    *tampered.body_mut() = Body::from(r#"{"smile":"evil"}"#);
    let response = app.oneshot(tampered).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // `route_layer`: unmatched routes still 404 instead of 400.
    let app = Router::new()
        .route("/hook", post(handler))
        .route_layer(layer());
    let response = app
        .clone()
        .oneshot(signed(br#"{"smile":"wave"}"#))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut elsewhere = Request::post("/nowhere").body(Body::empty()).unwrap();
    elsewhere
        .headers_mut()
        .insert("x-anything", HeaderValue::from_static("1"));
    let response = app.oneshot(elsewhere).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // A TraceLayer inside the webhook layer sees the signature header as sensitive.
    let sensitive = Arc::new(AtomicUsize::new(0));
    let flag = sensitive.clone();
    let service = ServiceBuilder::new()
        .layer(layer())
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .service(service_fn(move |request: Request<VerifiedBody>| {
            if request.headers()[SIGNATURE].is_sensitive() {
                flag.fetch_add(1, Ordering::SeqCst);
            }
            async { Ok::<_, Infallible>(Response::new(Body::empty())) }
        }));
    let response = service.oneshot(signed(b"{}")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(sensitive.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn custom_rejection_response_keeps_the_rejection_in_extensions() {
    let service = layer()
        .with_rejection_response(|rejection: &Rejection| {
            (
                rejection.status(),
                format!("nope: {}", rejection.kind().slug()),
            )
        })
        .layer(recorder(Seen::default(), StatusCode::OK));
    let mut request = signed(b"{}");
    request.headers_mut().remove(SIGNATURE);
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.extensions().get::<Rejection>().unwrap().kind(),
        RejectionKind::MissingHeader
    );
    assert_eq!(
        body_bytes(response.into_body()).await,
        "nope: missing-header"
    );
}

/// Cerebrium in a Valohai-like uniform-400 mode.
#[derive(Debug, Clone)]
struct Uniform400(Cerebrium);

impl Scheme for Uniform400 {
    type Verification = <Cerebrium as Scheme>::Verification;

    fn name(&self) -> &str {
        "uniform"
    }

    fn begin(
        &self,
        head: &RequestHead,
        secrets: &SecretSet,
        now: i64,
    ) -> Result<Self::Verification, VerifyError> {
        self.0.begin(head, secrets, now)
    }

    fn sign(
        &self,
        message: &Message<'_>,
        secrets: &SecretSet,
        headers: &mut HeaderMap,
    ) -> Result<(), crate::scheme::SignError> {
        self.0.sign(message, secrets, headers)
    }

    fn uniform_rejection_status(&self) -> Option<StatusCode> {
        Some(StatusCode::BAD_REQUEST)
    }

    fn success_response(&self, _run_id: &str) -> Option<crate::scheme::SuccessResponse> {
        Some(crate::scheme::SuccessResponse {
            content_type: "text/plain",
            body: "ok".into(),
        })
    }
}

#[tokio::test]
async fn uniform_status_mode() {
    let layer = WebhookSignatureLayer::new(Uniform400(Cerebrium::new()), SECRET)
        .clock(|| NOW)
        .limit(16)
        .replay_store(MemoryReplayStore::new(10));
    let service = layer.layer(recorder(Seen::default(), StatusCode::OK));
    let cases = [
        (signed_as(b"{}", "m", NOW, "wrong"), "invalid-signature"),
        (signed_as(b"{}", "m", NOW - 1000, SECRET), "stale-timestamp"),
        (
            signed_as(b"{}", "m", NOW + 1000, SECRET),
            "future-timestamp",
        ),
    ];
    for (request, slug) in cases {
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(problem_slug(response, StatusCode::BAD_REQUEST).await, slug);
    }
    let big = signed_as(b"0123456789abcdefXYZ", "m", NOW, SECRET);
    let response = service.clone().oneshot(big).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A duplicate gets the scheme's own success response.
    assert_eq!(
        service
            .clone()
            .oneshot(signed(b"{}"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let duplicate = service.oneshot(signed(b"{}")).await.unwrap();
    assert_eq!(duplicate.status(), StatusCode::OK);
    assert_eq!(duplicate.headers()[header::CONTENT_TYPE], "text/plain");
    assert_eq!(body_bytes(duplicate.into_body()).await, "ok");
}

#[test]
fn service_and_future_are_send_and_sync() {
    fn assert_send<T: Send>() {}
    fn assert_sync<T: Sync>() {}
    type Inner = axum::routing::Route;
    type Svc = WebhookSignature<Inner, Cerebrium>;
    assert_send::<Svc>();
    assert_sync::<Svc>();
    assert_send::<WebhookSignatureLayer<Cerebrium>>();
    assert_sync::<WebhookSignatureLayer<Cerebrium>>();
    assert_send::<<Svc as Service<Request<VerifiedBody>>>::Future>();
    assert_send::<<Svc as Service<Request<hyper::body::Incoming>>>::Future>();
    type Tenant = fn(&RequestHead) -> Option<SecretSet>;
    assert_send::<
        <WebhookSignature<Inner, Cerebrium, Tenant> as Service<Request<VerifiedBody>>>::Future,
    >();
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_header_values_never_panic(
            id in proptest::collection::vec(any::<u8>(), 0..40),
            timestamp in proptest::collection::vec(any::<u8>(), 0..24),
            signature in proptest::collection::vec(any::<u8>(), 0..80),
            digits in any::<i64>(),
            use_digits in any::<bool>(),
        ) {
            let mut request = signed(b"{}");
            let headers = request.headers_mut();
            if let Ok(value) = HeaderValue::from_bytes(&id) {
                headers.insert("x-request-id", value);
            }
            let timestamp = if use_digits { digits.to_string().into_bytes() } else { timestamp };
            if let Ok(value) = HeaderValue::from_bytes(&timestamp) {
                headers.insert("x-cerebrium-webhook-timestamp", value);
            }
            if let Ok(value) = HeaderValue::from_bytes(&signature) {
                headers.insert(SIGNATURE, value);
            }
            let response = runtime().block_on(
                layer().layer(recorder(Seen::default(), StatusCode::OK)).oneshot(request),
            ).unwrap();
            prop_assert!(
                [StatusCode::OK, StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED]
                    .contains(&response.status()),
                "{}", response.status()
            );
        }

        #[test]
        fn sign_verify_round_trips_random_bodies(
            body in proptest::collection::vec(any::<u8>(), 0..4096),
            split in proptest::collection::vec(1usize..512, 0..8),
            id in "[A-Za-z0-9_-]{1,36}",
        ) {
            let headers = sign_headers(&body, &id, NOW, SECRET);
            // Cut the body into frames at random places.
            let mut frames = Vec::new();
            let mut rest = Bytes::from(body.clone());
            for cut in split {
                let cut = cut.min(rest.len());
                frames.push(Ok::<_, Infallible>(rest.split_to(cut)));
            }
            frames.push(Ok(rest));
            let request = request_with("/hook", headers, Body::from_stream(futures_util::stream::iter(frames)));
            let seen = Seen::default();
            let response = runtime().block_on(
                layer().layer(recorder(seen.clone(), StatusCode::OK)).oneshot(request),
            ).unwrap();
            prop_assert_eq!(response.status(), StatusCode::OK);
            let (bytes, verified, _) = seen.last();
            prop_assert_eq!(&bytes[..], &body[..]);
            prop_assert_eq!(verified.message_id.as_deref(), Some(id.as_str()));
        }
    }
}
