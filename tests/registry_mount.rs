//! The registry inside the application's own router: mounted under any prefix (links and the
//! OpenAPI document follow), the application's OpenAPI `info` and event types, the event type
//! catalog, and authentication reusing what an outer layer of the application established.
#![cfg(feature = "registry")]

#[path = "../examples/gateway/run_status.rs"]
mod run_status;

use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::Router;
use http::{HeaderMap, Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use tower_webhooks::delivery::{EngineBuilder, Policy, SsrfGuard};
use tower_webhooks::registry::{
    api, BearerTokens, EventType, Owner, PartsAuth, RegistryBuilder, WebhookRegistry,
};

const ACME: &str = "key-acme";

fn builder() -> RegistryBuilder {
    WebhookRegistry::builder()
        .engine(
            EngineBuilder::new()
                .guard(SsrfGuard::new().allow_host("127.0.0.1"))
                .policy(Policy::custom([Duration::from_millis(10)])),
        )
        .event_type(crate::run_status::event_type())
        .event_type(
            EventType::new("invoice.paid", "An invoice was paid").schema(json!({
                "type": "object",
                "required": ["invoice_id"],
                "properties": {"invoice_id": {"type": "string"}},
            })),
        )
        .auth(BearerTokens::new().token(ACME, "acme"))
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

async fn call(router: &Router, method: Method, path: &str, body: Option<Value>) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {ACME}"));
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        json,
    }
}

fn hook(id: &str) -> Value {
    json!({"id": id, "endpoint_url": "http://127.0.0.1:9/hook", "event_types": ["run.status"]})
}

/// Creates a webhook and follows its `Location`, then checks every documented path is under
/// `prefix` and is served there.
async fn mounted_at(router: &Router, prefix: &str) {
    let created = call(
        router,
        Method::POST,
        &format!("{prefix}/v1/webhooks"),
        Some(hook("h1")),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.json);
    let location = created.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("{prefix}/v1/webhooks/h1"));
    let fetched = call(router, Method::GET, &location, None).await;
    assert_eq!(fetched.status, StatusCode::OK, "the link works: {location}");
    assert_eq!(fetched.json["id"], "h1");

    let document = call(
        router,
        Method::GET,
        &format!("{prefix}/v1/webhooks/openapi.json"),
        None,
    )
    .await;
    assert_eq!(document.status, StatusCode::OK);
    let paths = document.json["paths"].as_object().unwrap();
    assert!(paths.contains_key(&format!("{prefix}/v1/webhooks")));
    assert!(paths.contains_key(&format!("{prefix}/v1/webhooks/{{id}}")));
    for path in paths.keys() {
        assert!(
            path.starts_with(&format!("{prefix}/v1/")),
            "{path} is under {prefix:?}"
        );
        if !path.contains('{') && paths[path].get("get").is_some() {
            let answer = call(router, Method::GET, path, None).await;
            assert_eq!(answer.status, StatusCode::OK, "GET {path}");
        }
    }
}

#[tokio::test]
async fn links_and_openapi_paths_follow_the_mount_point() {
    let registry = builder().build();
    mounted_at(&registry.router(), "").await;

    let registry = builder().build();
    let app = Router::new().nest("/api", registry.router());
    mounted_at(&app, "/api").await;
    // Not served at the root any more, so the root paths must not be documented either.
    let missing = call(&app, Method::GET, "/v1/webhooks/h1", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let registry = builder().build();
    let app = Router::new().nest("/api", Router::new().nest("/tenant", registry.router()));
    mounted_at(&app, "/api/tenant").await;
}

#[tokio::test]
async fn a_prefix_with_path_parameters_is_filled_in_links_and_kept_in_the_document() {
    let registry = builder().build();
    let app = Router::new().nest("/tenants/{tenant}", registry.router());
    let created = call(
        &app,
        Method::POST,
        "/tenants/acme/v1/webhooks",
        Some(hook("h1")),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.json);
    assert_eq!(created.headers["location"], "/tenants/acme/v1/webhooks/h1");
    let document = call(
        &app,
        Method::GET,
        "/tenants/acme/v1/webhooks/openapi.json",
        None,
    )
    .await;
    let paths = document.json["paths"].as_object().unwrap();
    assert!(paths.contains_key("/tenants/{tenant}/v1/webhooks/{id}"));
    assert!(paths
        .keys()
        .all(|path| path.starts_with("/tenants/{tenant}/v1/")));
}

#[tokio::test]
async fn a_prefix_with_path_parameters_declares_them_on_every_operation() {
    let registry = builder().build();
    let app = Router::new().nest("/tenants/{tenant}/hooks", registry.router());
    let document = call(
        &app,
        Method::GET,
        "/tenants/acme/hooks/v1/webhooks/openapi.json",
        None,
    )
    .await;
    assert_eq!(document.status, StatusCode::OK);
    let paths = document.json["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        assert!(path.starts_with("/tenants/{tenant}/hooks/v1/"), "{path}");
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let declared: Vec<&str> = operation["parameters"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} has no parameters"))
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            // Every `{name}` of the path, the prefix's included, is a declared path
            // parameter, once, and the prefix's comes first.
            let in_path: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(declared, in_path, "{method} {path}");
            let tenant = operation["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "tenant")
                .unwrap();
            assert_eq!(tenant["required"], true, "{method} {path}");
            assert_eq!(tenant["schema"]["type"], "string", "{method} {path}");
        }
    }
    assert_eq!(operations, api::routes().len());
    // The document at the root (no prefix) has no such parameter.
    let root = serde_json::to_value(registry.openapi()).unwrap();
    let root_text = root.to_string();
    assert!(!root_text.contains("\"tenant\""), "{root_text}");
}

#[tokio::test]
async fn openapi_info_and_event_types_are_the_applications() {
    let registry = builder().api_info("Acme Cloud API", "2.3.1").build();
    let document = call(
        &registry.router(),
        Method::GET,
        "/v1/webhooks/openapi.json",
        None,
    )
    .await
    .json;
    assert_eq!(document["info"]["title"], "Acme Cloud API");
    assert_eq!(document["info"]["version"], "2.3.1");
    let schemas = &document["components"]["schemas"];
    let invoice = &schemas["event.invoice.paid"];
    assert_eq!(invoice["description"], "An invoice was paid");
    assert_eq!(
        invoice["properties"]["type"]["enum"],
        json!(["invoice.paid"])
    );
    assert_eq!(
        invoice["properties"]["data"]["properties"]["invoice_id"]["type"],
        "string"
    );
    let run_status = &schemas["event.run.status"]["properties"]["data"];
    assert!(
        run_status["properties"]["run_id"].is_object(),
        "the built-in type's schema: {run_status}"
    );
    // The typed document says the same.
    let typed = serde_json::to_value(registry.openapi()).unwrap();
    assert_eq!(typed["info"]["title"], "Acme Cloud API");
    assert!(typed["components"]["schemas"]["event.invoice.paid"].is_object());

    // Without the option, the generic document.
    let plain = builder().build().openapi();
    assert_eq!(plain.info.title, "Webhooks");
}

#[tokio::test]
async fn event_type_catalog_lists_the_declared_types_to_authenticated_callers() {
    let registry = builder().build();
    let app = Router::new().nest("/api", registry.router());

    let anonymous = app
        .clone()
        .oneshot(
            Request::get("/api/v1/event-types")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers()["content-type"],
        "application/problem+json"
    );

    let catalog = call(&app, Method::GET, "/api/v1/event-types", None).await;
    assert_eq!(catalog.status, StatusCode::OK, "{:?}", catalog.json);
    let data = catalog.json["data"].as_array().unwrap();
    let names: Vec<&str> = data.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["invoice.paid", "run.status"]);
    assert_eq!(data[0]["description"], "An invoice was paid");
    assert_eq!(data[0]["schema"]["required"], json!(["invoice_id"]));
    assert_eq!(data[0]["example"], json!({}));
    assert!(data[1]["schema"]["properties"]["run_id"].is_object());
    assert!(data[1]["example"]["run_id"].is_string());

    // Another method on the catalog is a problem, not a fall-through to a webhook route.
    let post = call(&app, Method::POST, "/api/v1/event-types", Some(json!({}))).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
}

/// What the application's own authentication layer establishes.
#[derive(Clone)]
struct Identity {
    tenant: String,
}

/// The application's authentication: its own header, its own session lookup.
async fn app_auth(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(session) = request.headers().get("x-session") {
        if let Some(tenant) = session.to_str().ok().and_then(|s| s.strip_prefix("s-")) {
            let identity = Identity {
                tenant: tenant.to_owned(),
            };
            request.extensions_mut().insert(identity);
        }
    }
    next.run(request).await
}

#[tokio::test]
async fn an_outer_layers_identity_authenticates_management_requests() {
    let registry = builder()
        .auth(PartsAuth::new(|parts: &http::request::Parts| {
            parts
                .extensions
                .get::<Identity>()
                .map(|identity| Owner::new(identity.tenant.clone()))
        }))
        .build();
    let app = Router::new()
        .nest("/api", registry.router())
        .layer(axum::middleware::from_fn(app_auth));
    let send = |session: Option<&str>, method: Method, path: &str, body: Option<Value>| {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(session) = session {
            request = request.header("x-session", session);
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        app.clone().oneshot(request.body(body).unwrap())
    };

    let created = send(
        Some("s-acme"),
        Method::POST,
        "/api/v1/webhooks",
        Some(hook("h1")),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let listed = send(Some("s-acme"), Method::GET, "/api/v1/webhooks", None)
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let body = to_bytes(listed.into_body(), 1 << 20).await.unwrap();
    let listed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listed["data"][0]["id"], "h1");

    // Another identity is another tenant: the webhook is not theirs.
    let other = send(Some("s-globex"), Method::GET, "/api/v1/webhooks/h1", None)
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    // No identity from the outer layer (and the registry's bearer key is not consulted).
    for session in [None, Some("bogus")] {
        let anonymous = send(session, Method::GET, "/api/v1/webhooks", None)
            .await
            .unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{session:?}");
    }
    let bearer = call(&app, Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(bearer.status, StatusCode::UNAUTHORIZED);
}
