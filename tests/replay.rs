//! De-duplication through the layer: keys scoped by route and tenant, duplicates answered as
//! the original was and never charged against a quota, message ids that cannot be keys.

use axum::body::Body;
use axum::routing::post;
use axum::Router;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use tower::ServiceExt;
use tower_webhooks::inbound::{Duplicate, WebhookSignatureLayer};
use tower_webhooks::replay::MemoryReplayStore;
use tower_webhooks::scheme::{Cerebrium, Message, RequestHead, Scheme, StandardWebhooks, Valohai};
use tower_webhooks::{SecretSet, Verified};

const NOW: i64 = 1_731_381_205;

fn request(path: &str, headers: HeaderMap, body: &'static [u8]) -> Request<Body> {
    let mut request = Request::post(path).body(Body::from(body)).unwrap();
    request.headers_mut().extend(headers);
    request
}

fn signed<Sc: Scheme>(scheme: &Sc, secret: &str, id: &str, body: &'static [u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    scheme
        .sign(
            &Message::new(id, NOW, body),
            &SecretSet::from(secret),
            &mut headers,
        )
        .unwrap();
    headers
}

async fn text(response: Response<Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn problem_type(response: Response<Body>) -> String {
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        "application/problem+json"
    );
    let problem: Value = serde_json::from_str(&text(response).await).unwrap();
    problem["type"].as_str().unwrap().to_owned()
}

/// A router whose handler counts its calls.
fn counting(path: &str, calls: &Arc<AtomicUsize>) -> Router {
    let calls = calls.clone();
    Router::new().route(
        path,
        post(move || {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                "handled"
            }
        }),
    )
}

#[tokio::test]
async fn tenants_sharing_a_route_do_not_share_message_ids() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = counting("/hooks/{tenant}", &calls).layer(
        WebhookSignatureLayer::with_secret_source(
            Cerebrium::new(),
            |head: &RequestHead| match head.uri.path() {
                "/hooks/acme" => Some(SecretSet::from("acme-secret")),
                "/hooks/evil" => Some(SecretSet::from("evil-secret")),
                _ => None,
            },
        )
        .clock(|| NOW)
        .replay_store(MemoryReplayStore::new(100)),
    );
    // A hostile tenant sends the id first, signed with its own secret.
    let evil = request(
        "/hooks/evil",
        signed(&Cerebrium::new(), "evil-secret", "msg-1", b"{}"),
        b"{}",
    );
    let response = app.clone().oneshot(evil).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The victim's own delivery with that id is still processed.
    let acme = || {
        request(
            "/hooks/acme",
            signed(&Cerebrium::new(), "acme-secret", "msg-1", b"{}"),
            b"{}",
        )
    };
    let response = app.clone().oneshot(acme()).await.unwrap();
    assert!(response.extensions().get::<Duplicate>().is_none());
    assert_eq!(text(response).await, "handled");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // And its own replay is still a duplicate.
    let response = app.oneshot(acme()).await.unwrap();
    assert!(response.extensions().get::<Duplicate>().is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn routes_sharing_a_store_are_scoped_by_their_names() {
    let calls = Arc::new(AtomicUsize::new(0));
    let store = MemoryReplayStore::new(100);
    let layer = |scope: &str| {
        WebhookSignatureLayer::new(Cerebrium::new(), "secret")
            .clock(|| NOW)
            .replay_store(store.clone())
            .replay_scope(scope.to_owned())
    };
    let app = counting("/a", &calls)
        .layer(layer("route-a"))
        .merge(counting("/b", &calls).layer(layer("route-b")));
    let headers = || signed(&Cerebrium::new(), "secret", "msg-1", b"{}");
    for path in ["/a", "/b", "/a", "/b"] {
        let response = app.clone().oneshot(request(path, headers(), b"{}")).await;
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
    // Each route processed the id once; its second copy was a duplicate.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(store.len(), 2);
}

fn valohai() -> Valohai {
    toml::from_str(
        r#"
        [[conditions]]
        type = "web_authentication"
        auth_type = "hmac"
        lookup_namespace = "header"
        lookup_key = "Authorization"
        value_prefix = ""
        secret = "valohai-token"
        basestring = "{body}.{header:Request-Timestamp}"
        algorithm = "sha256"
        [[conditions]]
        type = "web_timestamp"
        lookup_namespace = "header"
        lookup_key = "Request-Timestamp"
        tolerance = 60
        [[conditions]]
        type = "rate_limit"
        period = 60
        quota = 2
        [response]
        json = { status = "success", run_id = "{run_id}" }
        "#,
    )
    .unwrap()
}

#[tokio::test]
async fn valohai_replays_neither_use_up_the_rate_limit_nor_invent_run_ids() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let scheme = valohai();
    let handler = move |verified: Verified| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            axum::Json(serde_json::json!({ "run_id": verified.run_id.to_string() }))
        }
    };
    let clock = Arc::new(AtomicI64::new(NOW));
    let now = clock.clone();
    let app = Router::new().route("/valohai", post(handler)).layer(
        WebhookSignatureLayer::new(scheme.clone(), SecretSet::new())
            .clock(move || now.load(Ordering::SeqCst))
            .replay_store(MemoryReplayStore::new(1000)),
    );
    let launch = |body: &'static [u8]| {
        let mut headers = HeaderMap::new();
        let now = clock.load(Ordering::SeqCst);
        scheme
            .sign(
                &Message::new("-", now, body),
                &SecretSet::new(),
                &mut headers,
            )
            .unwrap();
        request("/valohai", headers, body)
    };
    let first = app.clone().oneshot(launch(b"launch-1")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let original: Value = serde_json::from_str(&text(first).await).unwrap();
    let run_id = original["run_id"].as_str().unwrap().to_owned();
    for _ in 0..125 {
        let duplicate = app.clone().oneshot(launch(b"launch-1")).await.unwrap();
        assert_eq!(duplicate.status(), StatusCode::OK);
        let answer: Value = serde_json::from_str(&text(duplicate).await).unwrap();
        assert_eq!(answer["status"], "success");
        assert_eq!(answer["run_id"], run_id.as_str());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The quota of 2 still has room for a fresh, legitimate launch…
    let fresh = app.clone().oneshot(launch(b"launch-2")).await.unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // …and then it is full: the limit still counts real launches.
    let third = app.clone().oneshot(launch(b"launch-3")).await.unwrap();
    assert_eq!(third.status(), StatusCode::BAD_REQUEST);
    assert!(problem_type(third).await.ends_with(":rate-limited"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The refused launch released its reservation: once the window has room, its retry is
    // processed (not a 409 in-flight, not a duplicate).
    clock.store(NOW + 61, Ordering::SeqCst);
    let retry = app.oneshot(launch(b"launch-3")).await.unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert!(retry.extensions().get::<Duplicate>().is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn empty_or_control_character_message_ids_are_malformed_headers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let standard_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let app = counting("/cerebrium", &calls)
        .layer(
            WebhookSignatureLayer::new(Cerebrium::new(), "secret")
                .clock(|| NOW)
                .replay_store(MemoryReplayStore::new(100)),
        )
        .merge(
            counting("/standard", &calls).layer(
                WebhookSignatureLayer::new(StandardWebhooks::new(), standard_secret)
                    .clock(|| NOW)
                    .replay_store(MemoryReplayStore::new(100)),
            ),
        );
    type Sign = Box<dyn Fn(&str) -> HeaderMap>;
    let cases: [(&str, Sign, &str); 2] = [
        (
            "/cerebrium",
            Box::new(|id| signed(&Cerebrium::new(), "secret", id, b"{}")),
            "x-request-id",
        ),
        (
            "/standard",
            Box::new(move |id| signed(&StandardWebhooks::new(), standard_secret, id, b"{}")),
            "webhook-id",
        ),
    ];
    for (path, sign, id_header) in &cases {
        for id in ["", "msg\t1", "\t"] {
            // The crate refuses to sign with such an id, so a hostile sender's header is put
            // in by hand; the id is refused before any signature is checked.
            let mut headers = sign("msg_1");
            headers.insert(*id_header, HeaderValue::from_str(id).unwrap());
            let response = app.clone().oneshot(request(path, headers, b"{}")).await;
            let response = response.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path} {id:?}");
            assert!(
                problem_type(response).await.ends_with(":malformed-header"),
                "{path} {id:?}"
            );
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn valohai_rate_limit_counts_every_launch_without_a_replay_store() {
    let scheme = valohai();
    let launch = |body: &'static [u8]| {
        let mut headers = HeaderMap::new();
        scheme
            .sign(
                &Message::new("-", NOW, body),
                &SecretSet::new(),
                &mut headers,
            )
            .unwrap();
        request("/valohai", headers, body)
    };
    // Through the layer: without a store every request is new and charged at once.
    let app = Router::new()
        .route("/valohai", post(|| async { "launched" }))
        .layer(WebhookSignatureLayer::new(scheme.clone(), SecretSet::new()).clock(|| NOW));
    for body in [&b"a"[..], b"a"] {
        let response = app.clone().oneshot(launch(body)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let refused = app.oneshot(launch(b"a")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(problem_type(refused).await.ends_with(":rate-limited"));

    // Through the standalone verifier: the same quota applies.
    let verifier =
        tower_webhooks::inbound::WebhookVerifier::new(valohai(), SecretSet::new()).clock(|| NOW);
    for _ in 0..2 {
        verifier.verify(launch(b"b")).await.unwrap();
    }
    let refused = verifier.verify(launch(b"b")).await.unwrap_err();
    assert_eq!(
        refused.kind(),
        tower_webhooks::inbound::RejectionKind::RateLimited
    );
}
