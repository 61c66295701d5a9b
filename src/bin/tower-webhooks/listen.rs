//! `listen`: a local receiver that verifies every request with the library's verifier,
//! prints it with its verdict, answers as the inbound layer does, and optionally forwards the
//! verified ones to a local application.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use clap::Args;
use http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tower_webhooks::inbound::{Delivery, Rejection, RejectionKind, WebhookVerifier};
use tower_webhooks::replay::MemoryReplayStore;
use tower_webhooks::scheme::{BuiltinScheme, Scheme};
use tower_webhooks::sensitive::redacted_headers;
use tower_webhooks::{Problem, Verified};

use crate::exit::Failure;
use crate::input::{SchemeArgs, SecretArgs};

/// How long the forwarded-to application may take to answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// `listen`: verify and print every request.
#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    #[command(flatten)]
    scheme: SchemeArgs,
    #[command(flatten)]
    secrets: SecretArgs,
    /// The port to listen on (0 picks a free one; the first line printed names it).
    #[arg(long, default_value_t = 4000)]
    port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Re-send each verified request (its method, headers and body) to this `http://` URL and
    /// answer the sender with the application's response.
    #[arg(long, value_name = "URL")]
    forward: Option<Uri>,
    /// The largest accepted body in bytes (larger ones are answered 413) [default: the
    /// layer's, 2 MiB].
    #[arg(long)]
    limit: Option<usize>,
    /// How many body bytes to print per request.
    #[arg(long, default_value_t = 4096)]
    print_limit: usize,
    /// Print one JSON object per line (the first names the address) instead of the readable form.
    #[arg(long)]
    json: bool,
    /// Remember processed deliveries (for the replay window) and answer a repeat `2xx`
    /// without forwarding it, as the layer does with a replay store.
    #[arg(long)]
    dedupe: bool,
    /// Stop after this many requests.
    #[arg(long, value_name = "N")]
    max_requests: Option<usize>,
}

/// What every request shares.
struct Listener {
    verifier: WebhookVerifier<BuiltinScheme>,
    forward: Option<Forward>,
    print_limit: usize,
    json: bool,
    seen: AtomicUsize,
    max_requests: Option<usize>,
    done: Notify,
}

struct Forward {
    url: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub(crate) async fn run(args: ListenArgs) -> Result<(), Failure> {
    let scheme = args.scheme.scheme()?;
    let secrets = args.secrets.secrets(args.scheme.secrets_optional())?;
    if let Some(url) = &args.forward {
        if url.scheme_str() != Some("http") || url.host().is_none() {
            return Err(Failure::usage(format!(
                "--forward {url}: expected an http:// URL of a local application"
            )));
        }
    }
    let name = scheme.name().to_owned();
    let mut verifier = WebhookVerifier::new(scheme, secrets);
    if let Some(limit) = args.limit {
        verifier = verifier.limit(limit);
    }
    if args.dedupe {
        verifier = verifier.replay_store(MemoryReplayStore::new(100_000));
    }
    let listener = Arc::new(Listener {
        verifier,
        forward: args.forward.clone().map(|url| Forward {
            url,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }),
        print_limit: args.print_limit,
        json: args.json,
        seen: AtomicUsize::new(0),
        max_requests: args.max_requests,
        done: Notify::new(),
    });
    let address = SocketAddr::new(args.host, args.port);
    let socket = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Failure::environment(format!("cannot listen on {address}: {e}")))?;
    let address = socket.local_addr().unwrap_or(address);
    if args.json {
        println!(
            "{}",
            json!({ "listening": format!("http://{address}"), "scheme": name, "forward": args.forward.as_ref().map(Uri::to_string) })
        );
    } else {
        println!("listening on http://{address} (verifying {name}; Ctrl-C stops)");
        if let Some(url) = &args.forward {
            println!("forwarding verified requests to {url}");
        }
    }
    let app = Router::new()
        .fallback(receive)
        .with_state(Arc::clone(&listener));
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = listener.done.notified() => {}
        }
    };
    axum::serve(socket, app)
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| Failure::environment(format!("serving on {address}: {e}")))
}

/// Every request, whatever its method and path.
async fn receive(State(listener): State<Arc<Listener>>, request: Request) -> Response {
    let (head, body) = request.into_parts();
    // Read here rather than by the verifier, so that a rejected body is printed too; the
    // limit and the deadline are the layer's.
    let limit = listener.verifier.body_limit();
    let read = Limited::new(body, limit).collect();
    let collected = match listener.verifier.body_deadline() {
        Some(deadline) => tokio::time::timeout(deadline, read).await,
        None => Ok(read.await),
    };
    let body = match collected {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(Rejection::new(
            RejectionKind::BodyTooLarge,
            format!("the body is larger than {limit} bytes"),
        )),
        Ok(Err(_)) => Err(Rejection::new(
            RejectionKind::BodyError,
            "the body could not be read",
        )),
        Err(_) => Err(Rejection::new(
            RejectionKind::BodyTimeout,
            format!(
                "the body was not received within {}s",
                listener
                    .verifier
                    .body_deadline()
                    .unwrap_or_default()
                    .as_secs()
            ),
        )),
    };
    let verdict = match &body {
        Ok(body) => listener.verifier.verify_bytes(&head, body).await,
        Err(rejection) => Err(rejection.clone()),
    };
    let body = body.unwrap_or_default();
    let mut printed = Printed::new(&head, &body, listener.print_limit);
    let response = match verdict {
        Ok(Delivery::Fresh(fresh)) => {
            printed.verified(fresh.verified());
            let response = match &listener.forward {
                Some(forward) => {
                    let (response, outcome) = forward.send(&head, body).await;
                    printed.forwarded(&forward.url, outcome);
                    response
                }
                None => accepted(listener.verifier.scheme(), fresh.verified()),
            };
            // The in-memory replay store cannot fail; a failed forward lets the retry through.
            let _ = if response.status().is_success() {
                fresh.processed().await
            } else {
                fresh.failed().await
            };
            response
        }
        Ok(Delivery::Duplicate(duplicate)) => {
            printed.duplicate(&duplicate.verified);
            duplicate_answer(listener.verifier.scheme(), &duplicate.verified)
        }
        Err(rejection) => {
            printed.rejected(&rejection);
            rejection.into_response()
        }
    };
    printed.print(listener.json);
    let seen = listener.seen.fetch_add(1, Ordering::AcqRel) + 1;
    if listener.max_requests.is_some_and(|max| seen >= max) {
        listener.done.notify_one();
    }
    response
}

/// The answer to a verified request that is not forwarded: the scheme's own success response
/// where it defines one (Valohai), else a short JSON summary.
fn accepted(scheme: &BuiltinScheme, verified: &Verified) -> Response {
    if let Some(success) = scheme.success_response(&verified.run_id.to_string()) {
        return ([(header::CONTENT_TYPE, success.content_type)], success.body).into_response();
    }
    axum::Json(json!({
        "verified": true,
        "scheme": verified.scheme,
        "message_id": verified.message_id,
    }))
    .into_response()
}

/// The answer to a repeat of a processed delivery, as the layer gives it: the scheme's own
/// success response, else `{"status":"duplicate"}`.
fn duplicate_answer(scheme: &BuiltinScheme, verified: &Verified) -> Response {
    match scheme.success_response(&verified.run_id.to_string()) {
        Some(success) => {
            ([(header::CONTENT_TYPE, success.content_type)], success.body).into_response()
        }
        None => axum::Json(json!({ "status": "duplicate" })).into_response(),
    }
}

/// What happened to a forwarded request.
enum ForwardOutcome {
    Answered {
        status: StatusCode,
        latency: Duration,
    },
    Failed(String),
}

impl Forward {
    /// Sends the request on and turns the application's answer into the sender's.
    async fn send(&self, head: &http::request::Parts, body: Bytes) -> (Response, ForwardOutcome) {
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = head.method.clone();
        *request.uri_mut() = self.url.clone();
        let headers = request.headers_mut();
        for (name, value) in &head.headers {
            // The connection's own headers are hyper's to write for the new connection.
            if !matches!(
                *name,
                header::HOST
                    | header::CONNECTION
                    | header::CONTENT_LENGTH
                    | header::TRANSFER_ENCODING
            ) {
                headers.append(name.clone(), value.clone());
            }
        }
        let started = Instant::now();
        let answer = tokio::time::timeout(FORWARD_TIMEOUT, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((parts, body))
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", FORWARD_TIMEOUT.as_secs())));
        match answer {
            Ok((parts, body)) => {
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = parts.status;
                if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, content_type.clone());
                }
                let outcome = ForwardOutcome::Answered {
                    status: parts.status,
                    latency: started.elapsed(),
                };
                (response, outcome)
            }
            Err(error) => {
                let problem = Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "forward-failed",
                    "The application did not answer",
                )
                .with_detail(format!("forwarding to {} failed", self.url));
                (problem.into_response(), ForwardOutcome::Failed(error))
            }
        }
    }
}

/// One request as printed: its head, body and verdict.
struct Printed {
    line: Value,
}

impl Printed {
    fn new(head: &http::request::Parts, body: &Bytes, print_limit: usize) -> Self {
        let headers: Vec<_> = redacted_headers(&head.headers);
        let (shown, elided) = shown_body(&head.headers, body, print_limit);
        Self {
            line: json!({
                "received_at": clock(),
                "method": head.method.as_str(),
                "target": head.uri.to_string(),
                "headers": headers,
                "body": shown,
                "body_bytes": body.len(),
                "body_elided": elided,
            }),
        }
    }

    fn verified(&mut self, verified: &Verified) {
        self.line["verified"] = json!(true);
        self.line["scheme"] = json!(verified.scheme);
        self.line["message_id"] = json!(verified.message_id);
        self.line["timestamp"] = json!(verified.timestamp);
    }

    fn duplicate(&mut self, verified: &Verified) {
        self.verified(verified);
        self.line["duplicate"] = json!(true);
    }

    fn rejected(&mut self, rejection: &Rejection) {
        self.line["verified"] = json!(false);
        self.line["reason"] = json!(rejection.kind().slug());
        self.line["status"] = json!(rejection.status().as_u16());
        self.line["detail"] = json!(rejection.detail());
    }

    fn forwarded(&mut self, url: &Uri, outcome: ForwardOutcome) {
        self.line["forward"] = match outcome {
            ForwardOutcome::Answered { status, latency } => json!({
                "url": url.to_string(),
                "status": status.as_u16(),
                "latency_ms": latency.as_millis() as u64,
            }),
            ForwardOutcome::Failed(error) => json!({ "url": url.to_string(), "error": error }),
        };
    }

    fn print(&self, as_json: bool) {
        if as_json {
            println!("{}", self.line);
            return;
        }
        let line = &self.line;
        let text = |key: &str| line[key].as_str().unwrap_or_default().to_owned();
        let mut out = format!(
            "\n[{}] {} {}  ",
            text("received_at"),
            text("method"),
            text("target")
        );
        if line["duplicate"] == true {
            out.push_str(&format!("DUPLICATE, not forwarded ({}", text("scheme")));
            if let Some(id) = line["message_id"].as_str() {
                out.push_str(&format!(", id {id}"));
            }
            out.push(')');
        } else if line["verified"] == true {
            out.push_str(&format!("VERIFIED ({}", text("scheme")));
            if let Some(id) = line["message_id"].as_str() {
                out.push_str(&format!(", id {id}"));
            }
            out.push(')');
        } else {
            out.push_str(&format!(
                "REJECTED {} {}: {}",
                line["status"],
                text("reason"),
                text("detail")
            ));
        }
        for pair in line["headers"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "\n  {}: {}",
                pair[0].as_str().unwrap_or_default(),
                pair[1].as_str().unwrap_or_default()
            ));
        }
        let body = text("body");
        if !body.is_empty() {
            out.push('\n');
            for body_line in body.lines() {
                out.push_str(&format!("\n  {body_line}"));
            }
        }
        if line["body_elided"] == true {
            out.push_str(&format!("\n  … ({} bytes in all)", line["body_bytes"]));
        }
        match &line["forward"] {
            Value::Null => {}
            forward if forward["error"].is_string() => out.push_str(&format!(
                "\n  -> {}: failed: {} (answered 502)",
                forward["url"].as_str().unwrap_or_default(),
                forward["error"].as_str().unwrap_or_default()
            )),
            forward => out.push_str(&format!(
                "\n  -> {}: {} ({} ms)",
                forward["url"].as_str().unwrap_or_default(),
                forward["status"],
                forward["latency_ms"]
            )),
        }
        println!("{out}");
    }
}

/// The body as text: pretty JSON when it is JSON, else the text (invalid UTF-8 replaced),
/// cut to `limit` bytes; and whether it was cut.
fn shown_body(headers: &HeaderMap, body: &Bytes, limit: usize) -> (String, bool) {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value: &HeaderValue| value.to_str().ok())
        .is_none_or(|content_type| content_type.contains("json"));
    let text = is_json
        .then(|| serde_json::from_slice::<Value>(body).ok())
        .flatten()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    if text.len() <= limit {
        return (text, false);
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

/// The wall-clock time of day in UTC, `HH:MM:SS`.
fn clock() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:02}:{:02}:{:02}", now.hour(), now.minute(), now.second())
}
