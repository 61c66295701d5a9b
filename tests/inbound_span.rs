//! The `webhook.verify` span of each inbound verification, in its own test binary: a
//! thread-scoped `tracing` subscriber is alone here, so no other test's first use of the
//! span's callsite races with it.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::routing::post;
use axum::Router;
use http::{HeaderMap, Request, StatusCode};
use tower::ServiceExt;
use tower_webhooks::inbound::WebhookSignatureLayer;
use tower_webhooks::replay::MemoryReplayStore;
use tower_webhooks::scheme::{Cerebrium, Message, Scheme};
use tower_webhooks::SecretSet;

const SECRET: &str = "telemetry-secret";

fn signed_request(id: &str, body: &'static str) -> Request<axum::body::Body> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut headers = HeaderMap::new();
    Cerebrium::new()
        .sign(
            &Message::new(id, now, body.as_bytes()),
            &SecretSet::from(SECRET),
            &mut headers,
        )
        .unwrap();
    let mut request = Request::post("/hook")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap();
    request.headers_mut().extend(headers);
    request
}

async fn status(app: &Router, request: Request<axum::body::Body>) -> StatusCode {
    app.clone().oneshot(request).await.unwrap().status()
}

/// A `fmt` subscriber writing into a buffer, with a line per closed span.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn each_inbound_verification_has_a_span_with_scheme_outcome_and_message_id() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = Router::new().route("/hook", post(|| async { "ok" })).layer(
            WebhookSignatureLayer::new(Cerebrium::new(), SECRET)
                .replay_store(MemoryReplayStore::new(100)),
        );
        assert_eq!(
            status(&app, signed_request("span-1", "{}")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&app, signed_request("span-1", "{}")).await,
            StatusCode::OK
        );
        let unsigned = Request::post("/hook")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        assert_eq!(status(&app, unsigned).await, StatusCode::BAD_REQUEST);
    });
    let output = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let spans: Vec<&str> = output
        .lines()
        .filter(|line| line.contains("webhook.verify"))
        .collect();
    assert_eq!(spans.len(), 3, "{output}");
    for (span, outcome) in spans
        .iter()
        .zip(["accepted", "duplicate", "missing-header"])
    {
        assert!(span.contains("scheme=\"cerebrium\""), "{span}");
        assert!(span.contains(&format!("outcome=\"{outcome}\"")), "{span}");
    }
    assert!(spans[0].contains("message_id=span-1"), "{}", spans[0]);
    assert!(spans[1].contains("message_id=span-1"), "{}", spans[1]);
}
