//! The delivery portal without a browser (`tower::ServiceExt::oneshot` against the router):
//! login and its cookie, tenant scoping, CSRF rejection, escaping of what users sent, the
//! security headers, and the actions going through the same code as the JSON API (a real
//! receiver on 127.0.0.1 answers the deliveries). `tests/portal_browser.rs` drives the
//! gateway's portal in headless Chromium.
#![cfg(feature = "portal")]

mod support;

use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::Router;
use http::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use http::{HeaderMap, Method, Request, StatusCode};
use serde_json::{json, Value};
use support::{Receiver, Reply};
use tower::ServiceExt;
use tower_webhooks::delivery::{EngineBuilder, Policy, SsrfGuard};
use tower_webhooks::registry::{
    BearerTokens, Endpoint, EventType, HealthRule, Owner, WebhookRegistry,
};

#[path = "../examples/gateway/run_status.rs"]
mod run_status;
use crate::run_status::{RunState, RunStatus};

const ACME: &str = "key-acme";
const GLOBEX: &str = "key-globex";

struct Setup {
    registry: WebhookRegistry,
    app: Router,
}

fn setup() -> Setup {
    let registry = WebhookRegistry::builder()
        .engine(
            EngineBuilder::new()
                .guard(SsrfGuard::new().allow_host("127.0.0.1"))
                // One attempt: a failure is final at once.
                .policy(Policy::custom([]))
                .attempt_timeout(Duration::from_secs(5)),
        )
        .event_type(crate::run_status::event_type())
        .event_type(EventType::new("build.finished", "A build finished"))
        // Failures are what these tests look at: no automatic disabling in between.
        .health(HealthRule::never())
        .auth(
            BearerTokens::new()
                .token(ACME, "acme")
                .token(GLOBEX, "globex"),
        )
        .build();
    let app = Router::new()
        .merge(registry.router())
        .nest("/portal", registry.portal());
    Setup { registry, app }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers.get(LOCATION).unwrap().to_str().unwrap()
    }

    fn problem_type(&self) -> String {
        assert_eq!(
            self.headers[CONTENT_TYPE], "application/problem+json",
            "{}",
            self.body
        );
        let problem: Value = serde_json::from_str(&self.body).unwrap();
        problem["type"].as_str().unwrap().to_owned()
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// The value of the first `name="csrf"` field of a page.
fn csrf_of(html: &str) -> String {
    let start = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + r#"name="csrf" value=""#.len();
    html[start..][..html[start..].find('"').unwrap()].to_owned()
}

/// `name=value` of the `Set-Cookie` for `name`.
fn cookie_pair(answer: &Answer, name: &str) -> String {
    let cookie = answer
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", answer.headers));
    cookie.split(';').next().unwrap().to_owned()
}

fn form(path: &str, cookie: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(COOKIE, cookie)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn get(path: &str, cookie: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .header(COOKIE, cookie)
        .body(Body::empty())
        .unwrap()
}

/// A logged-in browser: its session cookie and its forms' CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

impl Session {
    async fn get(&self, app: &Router, path: &str) -> Answer {
        send(app, get(path, &self.cookie)).await
    }

    async fn post(&self, app: &Router, path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        let body = serde_urlencoded::to_string(&all).unwrap();
        send(app, form(path, &self.cookie, &body)).await
    }
}

async fn login_answer(app: &Router, token: &str, extra: &[(&str, &str)]) -> Answer {
    let mut request = Request::builder().uri("/portal/login");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let page = send(app, request.body(Body::empty()).unwrap()).await;
    assert_eq!(page.status, StatusCode::OK);
    let login_cookie = cookie_pair(&page, "tower_webhooks_portal_login");
    let body =
        serde_urlencoded::to_string([("csrf", csrf_of(&page.body).as_str()), ("token", token)])
            .unwrap();
    let mut request = form("/portal/login", &login_cookie, &body);
    for (name, value) in extra {
        request.headers_mut().insert(
            http::HeaderName::try_from(*name).unwrap(),
            value.parse().unwrap(),
        );
    }
    send(app, request).await
}

async fn login(app: &Router, token: &str) -> Session {
    let answer = login_answer(app, token, &[]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let cookie = cookie_pair(&answer, "tower_webhooks_portal");
    let list = send(app, get("/portal/webhooks", &cookie)).await;
    assert_eq!(list.status, StatusCode::OK);
    Session {
        csrf: csrf_of(&list.body),
        cookie,
    }
}

async fn create(app: &Router, token: &str, id: &str, url: &str) {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/webhooks")
        .header("authorization", format!("Bearer {token}"))
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"id": id, "endpoint_url": url, "event_types": ["run.status", "build.finished"]})
                .to_string(),
        ))
        .unwrap();
    let answer = send(app, request).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

async fn api_json(app: &Router, token: &str, path: &str) -> Value {
    let request = Request::builder()
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let answer = send(app, request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

/// Waits until the webhook's newest delivery has `attempts` attempts and a final state.
async fn wait_attempts(app: &Router, id: &str, attempts: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = api_json(app, ACME, &format!("/v1/webhooks/{id}/conversations")).await;
        if let Some(newest) = list["data"].get(0) {
            let done = matches!(newest["state"].as_str(), Some("delivered" | "failed"));
            if done && newest["attempts"].as_array().unwrap().len() >= attempts {
                return list;
            }
        }
        assert!(Instant::now() < deadline, "no final delivery: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn login_sets_a_strict_http_only_session_cookie_and_keeps_no_token() {
    let Setup { app, .. } = setup();
    let answer = login_answer(&app, ACME, &[]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location(), "/portal/webhooks");
    let session = answer
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("tower_webhooks_portal="))
        .unwrap();
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    assert!(session.contains("Path=/portal"), "{session}");
    assert!(!session.contains("Secure"), "plain http: {session}");
    assert!(!session.contains(ACME), "the token is never the cookie");
    assert!(!format!("{:?}{}", answer.headers, answer.body).contains(ACME));

    // Behind a TLS-terminating proxy the cookie is `Secure`.
    let answer = login_answer(&app, ACME, &[("x-forwarded-proto", "https")]).await;
    let session = cookie_pair(&answer, "tower_webhooks_portal");
    let full = answer
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with(&session))
        .unwrap();
    assert!(full.contains("Secure"), "{full}");

    // A wrong token: the form again, 401, no session.
    let answer = login_answer(&app, "key-wrong", &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.body.contains("not valid"));
    assert!(!answer
        .set_cookies()
        .iter()
        .any(|c| c.starts_with("tower_webhooks_portal=")));
    assert!(
        !answer.body.contains("key-wrong"),
        "the token is never echoed"
    );

    // Logging out ends the session: its cookie no longer opens a page.
    let session = login(&app, ACME).await;
    let out = session.post(&app, "/portal/logout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/portal/login");
    let after = session.get(&app, "/portal/webhooks").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);
    assert_eq!(after.location(), "/portal/login");
}

#[tokio::test]
async fn without_a_session_pages_redirect_to_login_and_actions_are_401() {
    let Setup { app, .. } = setup();
    create(&app, ACME, "mine", "https://example.com/hook").await;
    let page = send(
        &app,
        get("/portal/webhooks/mine", "tower_webhooks_portal=made-up"),
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/portal/login");
    let action = send(&app, form("/portal/webhooks/mine/disable", "", "csrf=x")).await;
    assert_eq!(action.status, StatusCode::UNAUTHORIZED);
    assert!(action.problem_type().ends_with(":unauthorized"));
    let view = api_json(&app, ACME, "/v1/webhooks/mine").await;
    assert_eq!(view["enabled"], true);
}

#[tokio::test]
async fn a_request_the_application_authenticated_needs_no_login() {
    let Setup { app, .. } = setup();
    create(&app, ACME, "mine", "https://example.com/hook").await;
    let authorized =
        |request: http::request::Builder| request.header("authorization", format!("Bearer {ACME}"));
    let page = send(
        &app,
        authorized(Request::builder().uri("/portal/webhooks/mine"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let post = |csrf: &str| {
        authorized(Request::builder().method(Method::POST))
            .uri("/portal/webhooks/mine/disable")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf={csrf}")))
            .unwrap()
    };
    // Its forms still carry a token, checked like a session's.
    assert_eq!(
        send(&app, post("forged")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, post(&csrf_of(&page.body))).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        api_json(&app, ACME, "/v1/webhooks/mine").await["enabled"],
        false
    );
}

#[tokio::test]
async fn an_owner_sees_and_acts_on_its_own_webhooks_only() {
    let Setup { app, .. } = setup();
    create(&app, ACME, "acme-hook", "https://example.com/acme").await;
    create(&app, GLOBEX, "globex-hook", "https://example.com/globex").await;
    let acme = login(&app, ACME).await;

    let list = acme.get(&app, "/portal/webhooks").await;
    assert!(list.body.contains("acme-hook"));
    assert!(!list.body.contains("globex-hook"), "{}", list.body);
    assert!(!list.body.contains("example.com/globex"));

    let other = acme.get(&app, "/portal/webhooks/globex-hook").await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert!(other.problem_type().ends_with(":webhook-not-found"));

    for action in ["disable", "rotate", "test"] {
        let answer = acme
            .post(&app, &format!("/portal/webhooks/globex-hook/{action}"), &[])
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{action}");
    }
    let globex = api_json(&app, GLOBEX, "/v1/webhooks/globex-hook").await;
    assert_eq!(globex["enabled"], true);
    let conversations = api_json(&app, GLOBEX, "/v1/webhooks/globex-hook/conversations").await;
    assert_eq!(conversations["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn every_post_needs_the_sessions_csrf_token() {
    let Setup { app, .. } = setup();
    create(&app, ACME, "mine", "https://example.com/hook").await;
    let acme = login(&app, ACME).await;
    let other = login(&app, ACME).await;
    assert_ne!(acme.csrf, other.csrf, "a token per session");

    let cases = [
        String::new(),
        "csrf=".to_owned(),
        "csrf=forged".to_owned(),
        format!("csrf={}", other.csrf),
    ];
    for body in cases {
        let answer = send(
            &app,
            form("/portal/webhooks/mine/disable", &acme.cookie, &body),
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{body}");
        assert!(answer.problem_type().ends_with(":csrf-rejected"));
    }
    let view = api_json(&app, ACME, "/v1/webhooks/mine").await;
    assert_eq!(view["enabled"], true, "no rejected form acted");

    // A login form posted without its login cookie (another site's form) is refused too.
    let page = send(&app, get("/portal/login", "")).await;
    let body = format!("csrf={}&token={ACME}", csrf_of(&page.body));
    let answer = send(&app, form("/portal/login", "", &body)).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    // Not a form.
    let request = Request::builder()
        .method(Method::POST)
        .uri("/portal/webhooks/mine/disable")
        .header(COOKIE, &acme.cookie)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(
        send(&app, request).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );

    // With the right token the same form acts.
    let answer = acme.post(&app, "/portal/webhooks/mine/disable", &[]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let view = api_json(&app, ACME, "/v1/webhooks/mine").await;
    assert_eq!(view["enabled"], false);
    assert_eq!(view["disabled_reason"], "disabled in the portal");
}

#[tokio::test]
async fn markup_in_urls_payloads_and_answers_renders_as_text() {
    let Setup { registry, app } = setup();
    // Straight into the store: the API would refuse this URL, an older row may hold anything.
    let now = registry.now();
    let webhook = Endpoint::new(
        Owner::new("acme"),
        "xss",
        "https://example.com/<script>alert(1)</script>",
        vec!["run.status".to_owned()],
        Default::default(),
        now,
    );
    registry.subscriptions().insert(webhook).await.unwrap();
    let status = RunStatus::new(
        "<script>alert(2)</script>",
        "<img src=x onerror=alert(3)>",
        RunState::Failed,
        now,
    );
    let report = registry
        .publish(&Owner::new("acme"), RunStatus::TYPE, &status)
        .await
        .unwrap();
    let delivery = &report.deliveries[0].delivery_id;

    let acme = login(&app, ACME).await;
    let list = acme.get(&app, "/portal/webhooks").await;
    let page = acme.get(&app, "/portal/webhooks/xss").await;
    let detail = acme
        .get(&app, &format!("/portal/webhooks/xss/deliveries/{delivery}"))
        .await;
    for answer in [&list, &page, &detail] {
        assert_eq!(answer.status, StatusCode::OK);
        assert!(!answer.body.contains("<script"), "{}", answer.body);
        assert!(!answer.body.contains("<img"), "{}", answer.body);
    }
    assert!(list.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(detail
        .body
        .contains("&lt;script&gt;alert(2)&lt;/script&gt;"));
    assert!(detail.body.contains("&lt;img src=x onerror=alert(3)&gt;"));
}

#[tokio::test]
async fn every_answer_carries_a_strict_policy_and_pages_hold_no_script_or_secret() {
    let Setup { registry, app } = setup();
    create(&app, ACME, "mine", "https://example.com/hook").await;
    let secret = api_json(&app, ACME, "/v1/webhooks/mine/secret").await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let report = registry
        .publish(
            &Owner::new("acme"),
            RunStatus::TYPE,
            &RunStatus::new("r", "a", RunState::Queued, registry.now()),
        )
        .await
        .unwrap();
    let delivery = &report.deliveries[0].delivery_id;
    let acme = login(&app, ACME).await;
    let answers = [
        send(&app, get("/portal/login", "")).await,
        acme.get(&app, "/portal/webhooks").await,
        acme.get(&app, "/portal/webhooks/mine").await,
        acme.get(
            &app,
            &format!("/portal/webhooks/mine/deliveries/{delivery}"),
        )
        .await,
        acme.get(&app, "/portal/webhooks/none").await,
        acme.get(&app, "/portal/style.css").await,
    ];
    for answer in &answers {
        let csp = answer.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("form-action 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(answer.headers["x-frame-options"], "DENY");
        assert_eq!(answer.headers["x-content-type-options"], "nosniff");
        assert_eq!(answer.headers["cache-control"], "no-store");
        assert!(!answer.body.contains("<script"));
        assert!(!answer.body.contains(" style="), "no inline style");
        assert!(!answer.body.contains(&secret), "no secret on a page");
    }
}

#[tokio::test]
async fn actions_do_what_the_api_does() {
    let Setup { app, .. } = setup();
    let receiver = Receiver::status(200).await;
    create(&app, ACME, "live", &receiver.url("/hook")).await;
    let acme = login(&app, ACME).await;

    // A test event, delivered.
    let answer = acme
        .post(
            &app,
            "/portal/webhooks/live/test",
            &[("event_type", "build.finished")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(
        answer.location(),
        "/portal/webhooks/live?notice=test-queued"
    );
    let list = wait_attempts(&app, "live", 1).await;
    let first = list["data"][0]["delivery_id"].as_str().unwrap().to_owned();
    assert_eq!(list["data"][0]["event_type"], "build.finished");
    assert_eq!(list["data"][0]["state"], "delivered");
    let page = acme.get(&app, answer.location()).await;
    assert!(page.body.contains("Test event queued."));
    assert!(page.body.contains(&first));

    // Re-sent: one more attempt in the same conversation, answered 500 this time.
    receiver.behave(|_, _| Reply::status(500));
    let path = format!("/portal/webhooks/live/deliveries/{first}/resend");
    let answer = acme.post(&app, &path, &[]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let list = wait_attempts(&app, "live", 2).await;
    assert_eq!(list["data"][0]["attempts"][1]["manual"], true);
    let detail = acme
        .get(&app, &format!("/portal/webhooks/live/deliveries/{first}"))
        .await;
    assert!(detail.body.contains("Attempt 2"), "{}", detail.body);
    assert!(detail.body.contains("HTTP 500"));
    assert!(
        detail.body.contains("[redacted]"),
        "signature headers are redacted"
    );
    assert_eq!(receiver.hits().len(), 2);

    // Recover: the failed delivery once more; a bad time is the API's problem.
    let bad = acme
        .post(
            &app,
            "/portal/webhooks/live/recover",
            &[("since", "yesterday")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.problem_type().ends_with(":invalid-time"));
    receiver.behave(|_, _| Reply::status(200));
    let answer = acme
        .post(
            &app,
            "/portal/webhooks/live/recover",
            &[("since", "2000-01-01T00:00:00Z")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert!(
        answer.location().ends_with("notice=recovered&queued=1"),
        "{}",
        answer.location()
    );
    wait_attempts(&app, "live", 3).await;

    // Rotate: the new secret once, the same the API now returns.
    let rotated = acme
        .post(
            &app,
            "/portal/webhooks/live/rotate",
            &[("grace_period_seconds", "60")],
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let secret = api_json(&app, ACME, "/v1/webhooks/live/secret").await;
    let new = secret["secret"].as_str().unwrap();
    assert!(rotated.body.contains(new));
    assert_eq!(secret["previous"].as_array().unwrap().len(), 1);
    let page = acme.get(&app, "/portal/webhooks/live").await;
    assert!(!page.body.contains(new), "shown once");
    let too_long = acme
        .post(
            &app,
            "/portal/webhooks/live/rotate",
            &[("grace_period_seconds", "99999999")],
        )
        .await;
    assert!(too_long.problem_type().ends_with(":invalid-grace-period"));

    // Disable and enable.
    acme.post(&app, "/portal/webhooks/live/disable", &[]).await;
    assert_eq!(
        api_json(&app, ACME, "/v1/webhooks/live").await["enabled"],
        false
    );
    let answer = acme.post(&app, "/portal/webhooks/live/enable", &[]).await;
    assert_eq!(answer.location(), "/portal/webhooks/live?notice=enabled");
    assert_eq!(
        api_json(&app, ACME, "/v1/webhooks/live").await["enabled"],
        true
    );

    // Re-sending a delivery of another webhook is not found, as in the API.
    create(&app, ACME, "other", &receiver.url("/hook")).await;
    let path = format!("/portal/webhooks/other/deliveries/{first}/resend");
    assert_eq!(
        acme.post(&app, &path, &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn deliveries_filter_by_state_event_type_and_time_and_page_by_cursor() {
    let Setup { registry, app } = setup();
    let receiver = Receiver::status(200).await;
    receiver.behave(|_, _| Reply::status(500));
    create(&app, ACME, "many", &receiver.url("/hook")).await;
    let acme = login(&app, ACME).await;
    for i in 0..30 {
        let status = RunStatus::new(format!("run-{i}"), "a", RunState::Queued, registry.now());
        let report = registry
            .publish(&Owner::new("acme"), RunStatus::TYPE, &status)
            .await
            .unwrap();
        assert_eq!(report.deliveries.len(), 1);
    }
    acme.post(
        &app,
        "/portal/webhooks/many/test",
        &[("event_type", "build.finished")],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.hits().len() < 31 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last answer is recorded after it is received.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let rows = |body: &str| body.matches(r#"<tr class="delivery""#).count();
    let first = acme.get(&app, "/portal/webhooks/many?state=failed").await;
    assert_eq!(rows(&first.body), 25, "{}", first.body);
    let start = first
        .body
        .find("?state=failed&amp;cursor=")
        .expect("a next link");
    let link = &first.body[start..];
    let link = link[..link.find('"').unwrap()].replace("&amp;", "&");
    let second = acme
        .get(&app, &format!("/portal/webhooks/many{link}"))
        .await;
    assert_eq!(rows(&second.body), 6);
    assert!(!second.body.contains("Older deliveries"));

    let builds = acme
        .get(&app, "/portal/webhooks/many?event_type=build.finished")
        .await;
    assert_eq!(rows(&builds.body), 1);
    assert!(builds.body.contains("build.finished"));

    let delivered = acme
        .get(&app, "/portal/webhooks/many?state=delivered")
        .await;
    assert_eq!(rows(&delivered.body), 0);
    assert!(delivered.body.contains("No deliveries match."));

    let until = acme
        .get(&app, "/portal/webhooks/many?until=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(rows(&until.body), 0);
    let since = acme
        .get(
            &app,
            "/portal/webhooks/many?since=2000-01-01T00:00:00Z&state=failed",
        )
        .await;
    assert_eq!(rows(&since.body), 25);

    for bad in ["state=lost", "since=yesterday", "cursor=v1.nope"] {
        let answer = acme
            .get(&app, &format!("/portal/webhooks/many?{bad}"))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(answer.problem_type().ends_with(":invalid-query"));
    }

    let list = acme.get(&app, "/portal/webhooks").await;
    assert!(
        list.body.contains("0 of 20 recent delivered"),
        "{}",
        list.body
    );
    assert!(list.body.contains("HTTP 500"));
}
