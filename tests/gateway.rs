//! End to end over real TCP: starts `examples/gateway` (built by `cargo test`) on a free port
//! and points real senders at it — the vendors' own libraries (Standard Webhooks, Svix,
//! Stripe, Slack SDK) and the vendors' documented Python code (Cerebrium, Nextmv, GitHub,
//! Valohai) in `tests/clients/vendor_senders.py`.
//!
//! The Python packages come from `tests/clients/requirements.txt` (`.ci/run` installs them);
//! where they are missing the Python half prints why and is skipped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn example_binary(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("examples").join(name)
}

struct Gateway {
    child: Child,
    port: u16,
    stdout: Vec<String>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway() -> Gateway {
    start_gateway_with("memory")
}

fn start_gateway_with(store: &str) -> Gateway {
    start_gateway_command(|command| {
        command.env("STORE", store);
    })
}

/// Starts the gateway with `configure` applied to its command (arguments, environment).
fn start_gateway_command(configure: impl FnOnce(&mut Command)) -> Gateway {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let binary = example_binary("gateway");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo test` (it builds examples)",
        binary.display()
    );
    let mut command = Command::new(binary);
    command
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn");
    configure(&mut command);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // The banner ends with the replay-window note once every route is printed.
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let done = line.contains("replay window");
        stdout.push(line);
        if done {
            break;
        }
    }
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "gateway did not start: {stdout:?}"
    );
    Gateway {
        child,
        port,
        stdout,
    }
}

fn raw_request(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A server may answer and close before a body it refuses is all written (a 413 on the
    // Content-Length): the write then fails with a broken pipe, and the answer, received
    // before the close, is still read below. What the tests check is that answer.
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn printed_curl_lines_are_accepted() {
    let gateway = start_gateway();
    let curls: Vec<&String> = gateway
        .stdout
        .iter()
        .filter(|l| l.trim_start().starts_with("curl "))
        .collect();
    assert!(
        curls.len() >= 6,
        "expected a curl line per HMAC route: {:?}",
        gateway.stdout
    );
    require(
        "curl",
        &["--version"],
        "curl is needed to paste the printed lines",
    );
    for line in curls {
        let output = Command::new("sh")
            .arg("-c")
            .arg(line.trim())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.starts_with("HTTP/1.1 200"), "{line}\n{text}");
    }
}

#[test]
fn the_banner_never_prints_api_keys_or_secrets_from_the_environment() {
    const TOKEN: &str = "env-static-token-4b1d9e";
    const ROUTE_SECRET: &str = "env-route-secret-77c0aa";
    const ENV_API_KEY: &str = "env-api-key-5e2f10";
    const LITERAL_API_KEY: &str = "literal-api-key-93ad22";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[routes]]
path = "/webhooks/token"
[routes.scheme]
type = "valohai"
[[routes.scheme.conditions]]
type = "web_authentication"
auth_type = "static_token"
lookup_namespace = "header"
lookup_key = "Authorization"
secret = "{{env:GW_BANNER_TOKEN}}"
[routes.scheme.response]
text = "Created run {{run_id}}"

[[routes]]
path = "/webhooks/cerebrium"
secrets = "{{env:GW_BANNER_SECRET}}"
scheme = {{ type = "cerebrium" }}

[registry]
allow_loopback = true
[registry.api_keys]
"{LITERAL_API_KEY}" = "demo"
"{{env:GW_BANNER_API_KEY}}" = "other"
"#
        ),
    )
    .unwrap();
    let gateway = start_gateway_command(|command| {
        command
            .arg("--config")
            .arg(&config)
            .env("STORE", "memory")
            .env("GW_BANNER_TOKEN", TOKEN)
            .env("GW_BANNER_SECRET", ROUTE_SECRET)
            .env("GW_BANNER_API_KEY", ENV_API_KEY);
    });
    let banner = gateway.stdout.join("\n");
    assert!(banner.contains("/v1/webhooks"), "{banner}");
    for secret in [TOKEN, ROUTE_SECRET, ENV_API_KEY, LITERAL_API_KEY] {
        assert!(!banner.contains(secret), "{secret} printed:\n{banner}");
    }
    // The static-token line names the variable instead, and still works where it is set.
    let line = gateway
        .stdout
        .iter()
        .find(|line| line.contains("/webhooks/token") && line.trim_start().starts_with("curl "))
        .expect("a curl line for the token route");
    assert!(line.contains("$GW_BANNER_TOKEN"), "{line}");
    if Command::new("curl").arg("--version").output().is_ok() {
        let output = Command::new("sh")
            .arg("-c")
            .arg(line.trim())
            .env("GW_BANNER_TOKEN", TOKEN)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.starts_with("HTTP/1.1 2"), "{line}\n{text}");
    }
}

#[test]
fn chunked_and_oversized_requests_over_tcp() {
    let gateway = start_gateway();
    // A 3 MiB body on a 2 MiB route: a complete 413 answer, whether or not the body was all
    // written before the gateway closed.
    let big = vec![b'a'; 3 * 1024 * 1024];
    let mut request = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         X-Hub-Signature-256: sha256=00\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        big.len()
    )
    .into_bytes();
    request.extend_from_slice(&big);
    let response = raw_request(gateway.port, &request);
    assert!(
        response.starts_with("HTTP/1.1 413"),
        "{}",
        &response[..response.len().min(300)]
    );
    assert!(response.contains("application/problem+json"));
    // An unsigned chunked request: 400 problem+json, not a hang.
    let response = raw_request(
        gateway.port,
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
}

#[test]
fn vendor_libraries_against_the_gateway() {
    require(
        "python3",
        &["-c", "import standardwebhooks, svix, stripe, slack_sdk"],
        "python3 with the vendor libraries is needed: \
         pip install -r tests/clients/requirements.txt",
    );
    let gateway = start_gateway();
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new("python3")
        .arg(format!("{root}/tests/clients/vendor_senders.py"))
        .arg(format!("http://127.0.0.1:{}", gateway.port))
        .arg(format!("{root}/examples/gateway.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains("FAIL"));
}

/// Fails the test, naming what to install, unless `program args` runs and succeeds: the tools
/// the gateway is checked against are part of the test, never a reason to pass without it.
fn require(program: &str, args: &[&str], why: &str) {
    let ran = Command::new(program).args(args).output();
    assert!(
        ran.is_ok_and(|output| output.status.success()),
        "`{program} {}` failed: {why}",
        args.join(" ")
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn post(port: u16, path: &str, headers: &str, body: &str) -> String {
    raw_request(
        port,
        format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{headers}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

/// Forwarding through the gateway to a receiver built from Cerebrium's documented Python
/// verification code: sync, async and the legacy body field all arrive signed and verified.
#[test]
fn forwarded_results_verify_with_cerebriums_own_code() {
    require(
        "python3",
        &["--version"],
        "python3 is needed for the Cerebrium receiver",
    );
    let gateway = start_gateway();
    let receiver_port = free_port();
    let out = std::env::temp_dir().join(format!("tw-receiver-{receiver_port}.jsonl"));
    let _ = std::fs::remove_file(&out);
    let root = env!("CARGO_MANIFEST_DIR");
    let mut receiver = Command::new("python3")
        .arg(format!("{root}/tests/clients/cerebrium_receiver.py"))
        .arg(receiver_port.to_string())
        .arg("my-secret")
        .arg(&out)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", receiver_port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let endpoint = format!("http%3A%2F%2F127.0.0.1%3A{receiver_port}%2Fhook");
    let secret = "X-Webhook-Secret: my-secret\r\n";
    let sync = post(
        gateway.port,
        &format!("/v4/p-demo/app/run?webhookEndpoint={endpoint}"),
        secret,
        r#"{"param":"sync"}"#,
    );
    assert!(sync.starts_with("HTTP/1.1 200"), "{sync}");
    let run_id = sync
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("X-Request-Id on the sync answer")
        .trim()
        .to_owned();
    let asynchronous = post(
        gateway.port,
        &format!("/v4/p-demo/app/run?async=true&webhookEndpoint={endpoint}"),
        secret,
        r#"{"param":"async"}"#,
    );
    assert!(asynchronous.starts_with("HTTP/1.1 202"), "{asynchronous}");
    assert!(asynchronous.contains("run_id"));
    let legacy_body = format!(
        r#"{{"param":"legacy","webhook_endpoint":"http://127.0.0.1:{receiver_port}/hook"}}"#
    );
    let legacy = post(gateway.port, "/v4/p-demo/app/run", secret, &legacy_body);
    assert!(
        legacy.starts_with("HTTP/1.1 200") && legacy.contains("webhook_endpoint"),
        "{legacy}"
    );
    let refused = post(
        gateway.port,
        "/v4/p-demo/app/run?async=true&webhookEndpoint=http%3A%2F%2F169.254.169.254%2F",
        "",
        "{}",
    );
    assert!(
        refused.starts_with("HTTP/1.1 400") && refused.contains("application/problem+json"),
        "{refused}"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        lines = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = receiver.kill();
    let _ = receiver.wait();
    assert_eq!(lines.len(), 3, "three deliveries expected: {lines:?}");
    let deliveries: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for delivery in &deliveries {
        assert_eq!(
            delivery["verified"], true,
            "Cerebrium's verifier refused: {delivery}"
        );
        let envelope: serde_json::Value =
            serde_json::from_str(delivery["body"].as_str().unwrap()).unwrap();
        assert_eq!(
            envelope["run_id"], delivery["run_id"],
            "X-Request-Id is the run id"
        );
        assert_eq!(envelope["status_code"], 200);
    }
    assert!(deliveries.iter().any(|d| d["run_id"] == run_id.as_str()));
}

fn request(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let body = body.unwrap_or("");
    let response = raw_request(
        port,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer demo-api-key\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {response}"));
    let (_, json) = response.split_once("\r\n\r\n").unwrap_or_default();
    (
        status,
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

/// The registry's deliveries are durable in the gateway: a demo run publishes `run.status`
/// (queued, running, succeeded) to a receiver that is down, the gateway is killed (SIGKILL)
/// with the three deliveries pending, started again on the same SQLite file, and once the
/// receiver is up every delivery arrives, verified by Nextmv's own handler code, and the
/// conversations (both attempts) are still served by `/v1/webhooks/{id}/conversations`.
#[test]
fn registry_deliveries_survive_a_gateway_restart() {
    require(
        "python3",
        &["--version"],
        "python3 is needed for the Nextmv receiver",
    );
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("gateway.db").display());
    let receiver_port = free_port();
    let webhook = format!(
        r#"{{"id":"restart-hook","endpoint_url":"http://127.0.0.1:{receiver_port}/webhookhandler","event_types":["run.status"]}}"#
    );

    let gateway = start_gateway_with(&store);
    assert!(
        gateway
            .stdout
            .iter()
            .any(|l| l.contains("gateway-registry.db")),
        "the registry's own file is announced: {:?}",
        gateway.stdout
    );
    let (status, created) = request(gateway.port, "POST", "/v1/webhooks", Some(&webhook));
    assert_eq!(status, 201, "{created}");
    let (status, secret) = request(
        gateway.port,
        "GET",
        "/v1/webhooks/restart-hook/secret",
        None,
    );
    assert_eq!(status, 200, "{secret}");
    let secret = secret["secret"].as_str().unwrap().to_owned();
    let (status, run) = request(gateway.port, "POST", "/v1/runs", Some("{}"));
    assert_eq!(status, 202, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();

    // Wait for the three states to be published and each first attempt to fail.
    let conversations = "/v1/webhooks/restart-hook/conversations";
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pending = Vec::new();
    while Instant::now() < deadline {
        let (_, page) = request(gateway.port, "GET", conversations, None);
        pending = page["data"].as_array().cloned().unwrap_or_default();
        if pending.len() == 3
            && pending.iter().all(|c| {
                c["state"] == "pending" && c["attempts"].as_array().is_some_and(|a| !a.is_empty())
            })
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pending.len(), 3, "three pending deliveries: {pending:?}");
    let mut ids: Vec<String> = pending
        .iter()
        .map(|c| c["delivery_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    drop(gateway); // SIGKILL: nothing is drained

    let out = dir.path().join("received.jsonl");
    let root = env!("CARGO_MANIFEST_DIR");
    let mut receiver = Command::new("python3")
        .arg(format!("{root}/tests/clients/nextmv_receiver.py"))
        .arg(receiver_port.to_string())
        .arg(&secret)
        .arg(&out)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", receiver_port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }

    let gateway = start_gateway_with(&store);
    // The retries (5 s after the first attempt, with jitter) resume in the new process.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        lines = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = receiver.kill();
    let _ = receiver.wait();
    assert_eq!(
        lines.len(),
        3,
        "three deliveries after the restart: {lines:?}"
    );
    let mut received = Vec::new();
    let mut statuses = Vec::new();
    for line in &lines {
        let delivery: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            delivery["verified"], true,
            "Nextmv's handler refused: {delivery}"
        );
        let event: serde_json::Value =
            serde_json::from_str(delivery["body"].as_str().unwrap()).unwrap();
        assert_eq!(event["type"], "run.status");
        assert_eq!(event["data"]["run_id"], run_id.as_str());
        statuses.push(event["data"]["status"].as_str().unwrap().to_owned());
        received.push(delivery["request_id"].as_str().unwrap().to_owned());
    }
    statuses.sort();
    assert_eq!(statuses, ["queued", "running", "succeeded"]);
    received.sort();
    assert_eq!(received, ids, "X-Request-Id is the delivery id");

    // The conversations survived too: each delivery with both attempts.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut data = Vec::new();
    while Instant::now() < deadline {
        let (status, page) = request(gateway.port, "GET", conversations, None);
        assert_eq!(status, 200, "{page}");
        data = page["data"].as_array().cloned().unwrap_or_default();
        if data.len() == 3 && data.iter().all(|c| c["state"] == "delivered") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(data.len(), 3, "{data:?}");
    for conversation in &data {
        assert_eq!(conversation["state"], "delivered", "{conversation}");
        let attempts = conversation["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{conversation}");
        assert!(attempts[0]["response"].is_null(), "{conversation}");
        assert_eq!(attempts[1]["response"]["status"], 200, "{conversation}");
        let id = conversation["delivery_id"].as_str().unwrap();
        let (status, one) = request(gateway.port, "GET", &format!("{conversations}/{id}"), None);
        assert_eq!(status, 200, "{one}");
        assert_eq!(one["delivery_id"], id);
    }
    // The forward engine's file holds none of them: the two engines never share rows.
    let (status, _) = request(
        gateway.port,
        "GET",
        &format!("/v4/runs/{}/conversation", ids[0]),
        None,
    );
    assert_eq!(status, 404);
}

/// Two delivery engines never share a SQLite file: a `[registry] store` naming the
/// `[forward]` file is refused at start-up, with the file the registry would use by default.
#[test]
fn registry_store_may_not_be_the_forward_file() {
    let dir = tempfile::tempdir().unwrap();
    let forward = dir.path().join("deliveries.db");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[registry]\nstore = \"sqlite:{0}\"\n[registry.api_keys]\n\"k\" = \"t\"\n\
             [forward]\nstore = \"sqlite:{0}\"\n",
            forward.display()
        ),
    )
    .unwrap();
    let output = Command::new(example_binary("gateway"))
        .arg("--config")
        .arg(&config)
        .env("PORT", free_port().to_string())
        .env_remove("STORE")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("would claim each other's deliveries")
            && stderr.contains("deliveries-registry.db"),
        "{stderr}"
    );
}

/// Every key of `value` as a path (`/attempts/[]/outcome/kind`), array items merged.
fn key_paths(value: &serde_json::Value, at: &str, out: &mut std::collections::BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                let path = format!("{at}/{key}");
                out.insert(path.clone());
                key_paths(item, &path, out);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{at}/[]"), out);
            }
        }
        _ => {}
    }
}

/// Polls `path` until its conversation is delivered; the conversation.
fn delivered_conversation(port: u16, path: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, conversation) = request(port, "GET", path, None);
        if status == 200 && conversation["state"] == "delivered" {
            return conversation;
        }
        assert!(
            Instant::now() < deadline,
            "{path} not delivered: {status} {conversation}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A forwarded delivery's conversation (`/v4/runs/{id}/conversation`) and a registry
/// delivery's (`/v1/webhooks/{id}/conversations/{delivery_id}`) describe their attempts in one
/// JSON shape: the same keys, RFC 3339 times, `latency_ms`, a structured `outcome`.
#[test]
fn forward_and_registry_conversations_have_one_shape() {
    let gateway = start_gateway();
    let port = gateway.port;
    let receiver = format!("http%3A%2F%2F127.0.0.1%3A{port}%2Fdemo%2Freceiver");
    let answer = post(
        port,
        &format!("/v4/p-demo/app/run?webhookEndpoint={receiver}"),
        "X-Webhook-Secret: my-secret\r\n",
        r#"{"param": "hello world"}"#,
    );
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    let run: serde_json::Value = serde_json::from_str(body).unwrap();
    let run_id = run["run_id"].as_str().unwrap_or_else(|| panic!("{answer}"));
    let forwarded = delivered_conversation(port, &format!("/v4/runs/{run_id}/conversation"));

    let webhook = format!(
        r#"{{"id":"shape-hook","endpoint_url":"http://127.0.0.1:{port}/demo/inbox/shape-hook","event_types":["run.status"]}}"#
    );
    let (status, created) = request(port, "POST", "/v1/webhooks", Some(&webhook));
    assert_eq!(status, 201, "{created}");
    let (status, queued) = request(port, "POST", "/v1/webhooks/shape-hook/trigger", None);
    assert_eq!(status, 202, "{queued}");
    let delivery_id = queued["delivery_id"].as_str().unwrap();
    let published = delivered_conversation(
        port,
        &format!("/v1/webhooks/shape-hook/conversations/{delivery_id}"),
    );

    let shape = |conversation: &serde_json::Value| {
        let mut paths = std::collections::BTreeSet::new();
        key_paths(conversation, "", &mut paths);
        paths
    };
    assert_eq!(
        shape(&forwarded),
        shape(&published),
        "{forwarded}\n{published}"
    );
    for conversation in [&forwarded, &published] {
        let created_at = conversation["created_at"].as_str().unwrap();
        assert!(
            created_at.ends_with('Z') && created_at.contains('T'),
            "{conversation}"
        );
        let attempt = &conversation["attempts"][0];
        assert!(attempt["started_at"].as_str().unwrap().ends_with('Z'));
        assert!(attempt["latency_ms"].as_f64().unwrap() >= 0.0, "{attempt}");
        assert_eq!(
            attempt["outcome"],
            serde_json::json!({"kind": "status", "status": 200, "detail": "HTTP 200"}),
            "{attempt}"
        );
    }
    assert_eq!(forwarded["event_type"], serde_json::Value::Null);
    assert_eq!(published["event_type"], "run.status");
}
