//! The `tower-webhooks` binary, run as a user runs it: `sign` checked by the vendors' Python
//! libraries, `verify` exit statuses, `listen` receiving a svix-signed request, `send`
//! through the delivery engine, and `deliveries` on a SQLite file the engine wrote.

use std::io::Write;
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::Command;
use serde_json::{json, Value};

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_tower-webhooks");
const CHECK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/cli_vendor_check.py"
);

fn cli() -> Command {
    Command::new(BIN)
}

/// Runs `tests/clients/cli_vendor_check.py MODE` with `job` on stdin. The vendor libraries
/// come from tests/clients/requirements.txt, which `.ci/run` installs.
fn vendor(mode: &str, job: &Value) -> (bool, String) {
    let mut child = StdCommand::new("python3")
        .arg(CHECK)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed (with `pip install -r tests/clients/requirements.txt`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the vendor libraries are missing: pip install -r tests/clients/requirements.txt\n{stderr}"
    );
    (output.status.success(), stdout)
}

fn stdout_json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn sign_output_verifies_with_the_vendor_libraries() {
    let body = r#"{"id":"evt_1","object":"event","type":"invoice.paid"}"#;
    for (scheme, secret) in [
        ("stripe", "whsec_cli_stripe_secret"),
        (
            "standard_webhooks",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        ("svix", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("slack", "8f742231b10e8888abcd99yyyzzz85a5"),
        ("github", "It's a Secret to Everybody"),
    ] {
        let output = cli()
            .args(["sign", "--scheme", scheme, "--secret-env", "CLI_SECRET"])
            .args(["--body-file", "-", "--json"])
            .env("CLI_SECRET", secret)
            .write_stdin(body)
            .output()
            .unwrap();
        assert!(output.status.success(), "{scheme}: {output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!stdout.contains(secret), "{scheme} printed its secret");
        let signed = stdout_json(&output);
        let job = json!({
            "scheme": scheme,
            "secret": secret,
            "body": body,
            "headers": signed["headers"],
        });
        let (ok, said) = vendor("verify", &job);
        assert!(ok, "{scheme}: the vendor library refused: {said}");

        // The same check fails on another body: the libraries do check.
        let mut job = job;
        job["body"] = json!(format!("{body} "));
        assert!(
            !vendor("verify", &job).0,
            "{scheme}: a tampered body verified"
        );
    }
}

#[test]
fn sign_prints_header_lines_that_verify_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, br#"{"event":"ping"}"#).unwrap();
    let signed = cli()
        .args([
            "sign",
            "--scheme",
            "cerebrium",
            "--secret",
            "cerebrium-secret",
        ])
        .arg("--body-file")
        .arg(&body)
        .args(["--id", "req-1", "--timestamp", "1700000000"])
        .output()
        .unwrap();
    assert!(signed.status.success(), "{signed:?}");
    let lines = String::from_utf8(signed.stdout).unwrap();
    assert!(lines.contains("x-request-id: req-1\n"), "{lines}");
    assert!(
        lines.contains("x-cerebrium-webhook-signature: v1,"),
        "{lines}"
    );

    // Header lines on stdin, the body from the file: valid at the signed time.
    let valid = cli()
        .args([
            "verify",
            "--scheme",
            "cerebrium",
            "--secret",
            "cerebrium-secret",
        ])
        .args(["--headers-file", "-", "--now", "1700000010"])
        .arg("--body-file")
        .arg(&body)
        .write_stdin(lines.clone())
        .output()
        .unwrap();
    assert_eq!(valid.status.code(), Some(0), "{valid:?}");
    assert!(String::from_utf8_lossy(&valid.stdout).starts_with("valid (cerebrium), id req-1"));
    // Ten minutes later the same request is stale.
    let stale = cli()
        .args([
            "verify",
            "--scheme",
            "cerebrium",
            "--secret",
            "cerebrium-secret",
        ])
        .args(["--headers-file", "-", "--now", "1700000600", "--json"])
        .arg("--body-file")
        .arg(&body)
        .write_stdin(lines)
        .output()
        .unwrap();
    assert_eq!(stale.status.code(), Some(1));
    let verdict = stdout_json(&stale);
    assert_eq!(verdict["valid"], false);
    assert_eq!(verdict["reason"], "stale-timestamp");
    assert_eq!(verdict["status"], 401);
}

#[test]
fn verify_exit_statuses_say_valid_invalid_or_usage() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = r#"{"type":"user.created"}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Signed by standardwebhooks' own library.
    let (ok, headers) = vendor(
        "sign",
        &json!({"scheme": "standard_webhooks", "secret": secret, "body": body, "id": "msg_py", "timestamp": now}),
    );
    assert!(ok, "{headers}");
    let headers: Value = serde_json::from_str(&headers).unwrap();
    // `verify --json` of `body` with the vendor's signature headers.
    let verify_signed = |body: &str| {
        let header_args = headers
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(name, value)| {
                [
                    "-H".to_owned(),
                    format!("{name}: {}", value.as_str().unwrap()),
                ]
            });
        cli()
            .args([
                "verify",
                "--scheme",
                "standard",
                "--secret-env",
                "CLI_SECRET",
                "--json",
            ])
            .args(header_args)
            .args(["--body", body])
            .env("CLI_SECRET", secret)
            .output()
            .unwrap()
    };

    let valid = verify_signed(body);
    assert_eq!(valid.status.code(), Some(0), "{valid:?}");
    let verdict = stdout_json(&valid);
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["scheme"], "standard_webhooks");
    assert_eq!(verdict["message_id"], "msg_py");
    assert!(!String::from_utf8_lossy(&valid.stdout).contains(secret));

    // A tampered body: exit 1, with the rejection kind.
    let tampered = verify_signed(&body.replace("created", "deleted"));
    assert_eq!(tampered.status.code(), Some(1), "{tampered:?}");
    assert_eq!(stdout_json(&tampered)["reason"], "invalid-signature");

    // No signature header at all: exit 1 too (the request is not authentic).
    let unsigned = cli()
        .args([
            "verify",
            "--scheme",
            "standard",
            "--secret-env",
            "CLI_SECRET",
        ])
        .args(["--body", body])
        .env("CLI_SECRET", secret)
        .output()
        .unwrap();
    assert_eq!(unsigned.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unsigned.stdout).starts_with("invalid: missing-header (400)"));

    // Usage errors: exit 2, and never the secret in the message.
    for args in [
        vec![
            "verify", "--scheme", "stripey", "--secret", "x", "--body", "{}",
        ],
        vec!["verify", "--scheme", "stripe", "--body", "{}"],
        vec!["verify", "--scheme", "stripe", "--secret", "x"],
        vec![
            "verify",
            "--scheme",
            "stripe",
            "--secret-env",
            "CLI_UNSET_VARIABLE",
            "--body",
            "{}",
        ],
        vec!["verify", "--secret", "x", "--body", "{}"],
        vec![
            "verify", "--scheme", "stripe", "--secret", "x", "-H", "no colon", "--body", "{}",
        ],
        vec![
            "verify",
            "--scheme",
            "stripe",
            "--secret",
            "x",
            "--body-file",
            "/nonexistent/body",
        ],
        vec![
            "verify",
            "--scheme",
            "stripe",
            "--secret",
            "x",
            "--headers-file",
            "-",
            "--body-file",
            "-",
        ],
    ] {
        let output = cli().args(&args).write_stdin("").output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(!output.stderr.is_empty(), "{args:?}: no reason given");
    }
}

#[test]
fn verify_reads_a_valohai_condition_file() {
    let dir = tempfile::tempdir().unwrap();
    let conditions = dir.path().join("trigger.toml");
    std::fs::write(
        &conditions,
        r#"
        [[conditions]]
        type = "web_authentication"
        auth_type = "static_token"
        lookup_namespace = "querystring"
        lookup_key = "token"
        secret = "{env:CLI_VALOHAI_TOKEN}"
        "#,
    )
    .unwrap();
    let verify = |target: &str| {
        cli()
            .args(["verify", "--valohai"])
            .arg(&conditions)
            .args(["--target", target, "--body", "{}"])
            .env("CLI_VALOHAI_TOKEN", "valohai-token")
            .output()
            .unwrap()
    };
    let valid = verify("/hook?token=valohai-token");
    assert_eq!(valid.status.code(), Some(0), "{valid:?}");
    assert!(String::from_utf8_lossy(&valid.stdout).starts_with("valid (valohai)"));
    let invalid = verify("/hook?token=guess");
    assert_eq!(invalid.status.code(), Some(1), "{invalid:?}");
    // Valohai-compatible mode answers every failed condition with 400.
    assert!(String::from_utf8_lossy(&invalid.stdout).contains("(400)"));
    assert!(!String::from_utf8_lossy(&invalid.stdout).contains("valohai-token"));
}

/// A `tower-webhooks` process whose stdout is read line by line; killed when dropped.
struct Running {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Running {
    fn start(args: &[String], envs: &[(&str, &str)]) -> Self {
        let mut child = StdCommand::new(BIN)
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        Self {
            child,
            lines: std::io::BufRead::lines(std::io::BufReader::new(stdout)),
        }
    }

    fn next_json(&mut self) -> Value {
        let line = self.lines.next().expect("the process ended").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the process did not stop"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_verifies_a_svix_signed_request_and_forwards_it() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let app = support::Receiver::status(202).await;
    let args: Vec<String> = [
        "listen",
        "--scheme",
        "svix",
        "--secret-env",
        "CLI_SECRET",
        "--port",
        "0",
        "--json",
        "--max-requests",
        "2",
        "--forward",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([app.url("/app/hook")])
    .collect();
    let mut listen = Running::start(&args, &[("CLI_SECRET", secret)]);
    let ready = listen.next_json();
    let url = ready["listening"].as_str().unwrap().to_owned();
    assert_eq!(ready["scheme"], "standard_webhooks");

    // svix's own library signs and posts: a valid request reaches the app, and the sender
    // gets the app's answer.
    let body = r#"{"type":"invoice.paid","data":{"id":"in_1"}}"#;
    let post = move |tamper: bool| {
        let job = json!({"secret": secret, "body": body, "url": format!("{url}/webhooks/svix?x=1"), "id": "msg_svix_1", "tamper": tamper});
        let (ok, said) = vendor("post", &job);
        assert!(ok, "{said}");
        serde_json::from_str::<Value>(&said).unwrap()
    };
    let valid = tokio::task::spawn_blocking({
        let post = post.clone();
        move || post(false)
    })
    .await
    .unwrap();
    assert_eq!(valid["status"], 202, "{valid}");
    let hits = app.wait_hits(1, std::time::Duration::from_secs(10)).await;
    assert_eq!(hits[0].body, body.as_bytes());
    assert_eq!(hits[0].header("svix-id"), "msg_svix_1");
    assert!(hits[0].header("svix-signature").starts_with("v1,"));

    // A tampered body is answered like the library answers it, and never forwarded.
    let tampered = tokio::task::spawn_blocking(move || post(true))
        .await
        .unwrap();
    assert_eq!(tampered["status"], 401, "{tampered}");
    assert_eq!(tampered["content_type"], "application/problem+json");
    assert!(tampered["body"]
        .as_str()
        .unwrap()
        .contains("invalid-signature"));

    let first = listen.next_json();
    assert_eq!(first["verified"], true, "{first}");
    assert_eq!(first["method"], "POST");
    assert_eq!(first["target"], "/webhooks/svix?x=1");
    assert_eq!(first["message_id"], "msg_svix_1");
    assert_eq!(first["forward"]["status"], 202);
    assert_eq!(
        first["body"].as_str().unwrap(),
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(body).unwrap()).unwrap()
    );
    let signature = first["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pair| pair[0] == "svix-signature")
        .expect("the signature header is listed");
    assert_eq!(signature[1], "[redacted]");
    let second = listen.next_json();
    assert_eq!(second["verified"], false, "{second}");
    assert_eq!(second["reason"], "invalid-signature");
    assert_eq!(second["status"], 401);
    assert!(second.get("forward").is_none());
    assert!(listen.wait().success());
    assert_eq!(app.hits().len(), 1);
    assert!(!first.to_string().contains(secret) && !second.to_string().contains(secret));
}

#[test]
fn listen_prints_a_readable_verdict() {
    let mut listen = Running::start(
        &[
            "listen",
            "--scheme",
            "github",
            "--secret",
            "gh-secret",
            "--port",
            "0",
            "--max-requests",
            "1",
        ]
        .map(String::from),
        &[],
    );
    let banner = listen.lines.next().unwrap().unwrap();
    let address = banner
        .strip_prefix("listening on http://")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{banner}"))
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .write_all(b"POST /gh HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        .unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert!(listen.wait().success());
    let printed: Vec<String> = listen.lines.by_ref().map(Result::unwrap).collect();
    let printed = printed.join("\n");
    assert!(
        printed.contains("POST /gh  REJECTED 401 invalid-signature"),
        "{printed}"
    );
    assert!(
        printed.contains("x-hub-signature-256: [redacted]"),
        "{printed}"
    );
    assert!(printed.contains("  hello"), "{printed}");
}

fn output_of(mut command: Command) -> (Option<i32>, Value, String) {
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = if output.stdout.is_empty() {
        Value::Null
    } else {
        stdout_json(&output)
    };
    (output.status.code(), json, stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn send_delivers_through_the_engine_with_retries() {
    use tower_webhooks::scheme::{Scheme, StandardWebhooks};

    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    // The first attempt fails: the engine's retry delivers it.
    let receiver = support::Receiver::start(|index, _| {
        support::Reply::status(if index == 0 { 500 } else { 200 })
    })
    .await;
    let mut send = cli();
    send.args([
        "send",
        "--scheme",
        "standard",
        "--secret-env",
        "CLI_SECRET",
        "--allow-loopback",
    ])
    .args(["--count", "5", "--retry-delays", "50ms", "--json"])
    .arg(receiver.url("/hook"))
    .env("CLI_SECRET", secret);
    let (code, summary, stderr) = tokio::task::spawn_blocking(move || output_of(send))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{summary} {stderr}");
    assert_eq!(summary["delivered"], 5, "{summary}");
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["attempts"], 6);
    assert!(
        summary["latency_ms"]["p99"].as_f64().unwrap()
            >= summary["latency_ms"]["p50"].as_f64().unwrap()
    );
    assert!(!summary.to_string().contains(secret));
    let hits = receiver.hits();
    assert_eq!(hits.len(), 6);
    for hit in &hits {
        let verified = StandardWebhooks::new()
            .verify_headers(&hit.headers, &hit.body, &secret.into(), now())
            .expect("every attempt is signed");
        let event: Value = serde_json::from_slice(&hit.body).unwrap();
        assert_eq!(event["type"], "test.event");
        assert_eq!(verified.message_id.as_deref(), event["id"].as_str());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn send_reports_failures_and_refuses_loopback_unless_allowed() {
    let receiver = support::Receiver::status(503).await;
    let url = receiver.url("/down");
    let mut send = cli();
    send.args([
        "send",
        "--scheme",
        "github",
        "--secret",
        "gh",
        "--allow-loopback",
    ])
    .args(["--retry-delays", "10ms,10ms", "--body", "{}"])
    .arg(&url);
    let output = tokio::task::spawn_blocking(move || send.output().unwrap())
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("failed              1"), "{table}");
    assert!(table.contains("attempts            3"), "{table}");
    assert_eq!(receiver.hits().len(), 3);

    // The SSRF guard refuses 127.0.0.1 without --allow-loopback: nothing is sent.
    let mut refused = cli();
    refused
        .args([
            "send", "--scheme", "github", "--secret", "gh", "--body", "{}",
        ])
        .arg(&url);
    let output = tokio::task::spawn_blocking(move || refused.output().unwrap())
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("127.0.0.1"));
    assert_eq!(receiver.hits().len(), 3);
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Two dead letters written to `store` by the engine itself (the receiver answered 503).
async fn dead_letters_in(
    store: impl tower_webhooks::store::DeliveryStore,
    receiver: &support::Receiver,
) -> [String; 2] {
    use tower_webhooks::delivery::{Delivery, DeliveryState, SigningSpec};
    use tower_webhooks::delivery::{DeliveryEngine, Policy, SsrfGuard};
    use tower_webhooks::scheme::StandardWebhooks;

    let engine = DeliveryEngine::builder()
        .store(store)
        .guard(SsrfGuard::new().allow_loopback())
        .policy(Policy::standard().with_delays([std::time::Duration::from_millis(10)]))
        .build();
    let ids = ["msg_dead_1".to_owned(), "msg_dead_2".to_owned()];
    for id in &ids {
        let delivery = Delivery::new(
            id.clone(),
            receiver.url("/hook"),
            format!(r#"{{"id":"{id}"}}"#),
        )
        .with_signing(SigningSpec::new(
            StandardWebhooks::new(),
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ));
        engine.submit(delivery).await.unwrap();
        // Distinct creation times give the listing a stable order.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let report = engine.shutdown(std::time::Duration::from_secs(10)).await;
    assert!(report.drained);
    for id in &ids {
        let conversation = engine.conversation(id).await.unwrap().unwrap();
        assert_eq!(conversation.delivery.state, DeliveryState::Failed);
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_list_show_resend_and_recover_a_sqlite_file_written_by_the_engine() {
    use tower_webhooks::scheme::{Scheme, StandardWebhooks};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deliveries.db");
    let receiver = support::Receiver::status(503).await;
    let store = tower_webhooks::store::SqliteStore::connect(&path)
        .await
        .unwrap();
    let [first, second] = dead_letters_in(store, &receiver).await;
    assert_eq!(receiver.hits().len(), 4);
    let store = format!("sqlite:{}", path.display());
    let run = |args: Vec<String>| {
        let mut command = cli();
        command
            .arg("deliveries")
            .arg("--store")
            .arg(&store)
            .args(args);
        tokio::task::spawn_blocking(move || output_of(command))
    };
    let args = |text: &str| {
        text.split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };

    // The dead letters, newest first, one page at a time.
    let (code, page, stderr) = run(args("list --state failed --limit 1 --json"))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(page["deliveries"][0]["id"], second.as_str());
    assert_eq!(page["deliveries"][0]["state"], "failed");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, next, _) = run(args(&format!(
        "list --state failed --limit 1 --json --cursor {cursor}"
    )))
    .await
    .unwrap();
    assert_eq!(next["deliveries"][0]["id"], first.as_str());
    let (_, none, _) = run(args("list --state delivered --json")).await.unwrap();
    assert_eq!(none["deliveries"], json!([]));

    // One conversation: both attempts, the signature redacted.
    let (code, conversation, _) = run(args(&format!("show {first} --json"))).await.unwrap();
    assert_eq!(code, Some(0));
    let attempts = conversation["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["response"]["status"], 503);
    let signature = attempts[0]["request_headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pair| pair[0] == "webhook-signature")
        .unwrap();
    assert_eq!(signature[1], "[redacted]");
    let (code, _, stderr) = run(args("show msg_missing")).await.unwrap();
    assert_eq!(code, Some(2));
    assert!(stderr.contains("msg_missing"));

    // The receiver is back: a re-send of one delivers it, signed afresh with the stored secret.
    receiver.behave(|_, _| support::Reply::status(200));
    let (code, outcome, stderr) = run(args(&format!("resend {first} --allow-loopback --json")))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{outcome} {stderr}");
    assert_eq!(outcome["delivered"], 1);
    // The summary counts this run's attempt, not the two before it.
    assert_eq!(outcome["attempts"], 1);
    assert_eq!(outcome["deliveries"][0]["id"], first.as_str());
    let hits = receiver.hits();
    assert_eq!(hits.len(), 5);
    let verified = StandardWebhooks::new()
        .verify_headers(
            &hits[4].headers,
            &hits[4].body,
            &"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            now(),
        )
        .unwrap();
    assert_eq!(verified.message_id.as_deref(), Some(first.as_str()));

    // Recover every failed one since an hour ago: only the other one is left.
    let (code, outcome, stderr) = run(args("recover --since 1h --allow-loopback --json"))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{outcome} {stderr}");
    assert_eq!(outcome["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(outcome["deliveries"][0]["id"], second.as_str());
    assert_eq!(outcome["deliveries"][0]["outcome"], "HTTP 200");
    assert_eq!(outcome["attempts"], 1);
    assert_eq!(receiver.hits().len(), 6);
    let (_, failed, _) = run(args("list --state failed --json")).await.unwrap();
    assert_eq!(failed["deliveries"], json!([]));
    let (_, shown, _) = run(args(&format!("show {second} --json"))).await.unwrap();
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(shown["attempts"][2]["manual"], true);

    // A missing file is an error, not a new empty store.
    let mut command = cli();
    command.args(["deliveries", "--store", "sqlite:/nonexistent/x.db", "list"]);
    let (code, _, stderr) = tokio::task::spawn_blocking(move || output_of(command))
        .await
        .unwrap();
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no such file"));
}

#[test]
fn serve_runs_the_gateway_from_a_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[[routes]]\npath = \"/webhooks/stripe\"\nsecrets = \"{env:CLI_GATEWAY_SECRET}\"\n\
         scheme = { type = \"stripe\" }\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut serve = Running::start(
        &[
            "serve".to_owned(),
            "--config".to_owned(),
            config.display().to_string(),
        ],
        &[
            ("PORT", &port),
            ("CLI_GATEWAY_SECRET", "whsec_gateway"),
            ("RUST_LOG", "off"),
        ],
    );
    let banner = serve.lines.next().unwrap().unwrap();
    assert!(
        banner.starts_with(&format!(
            "tower-webhooks gateway on http://127.0.0.1:{port}"
        )),
        "{banner}"
    );

    let body = r#"{"id":"evt_1","object":"event"}"#;
    let signed = cli()
        .args([
            "sign",
            "--scheme",
            "stripe",
            "--secret",
            "whsec_gateway",
            "--body",
            body,
        ])
        .output()
        .unwrap();
    let signature = String::from_utf8(signed.stdout).unwrap();
    let address = format!("127.0.0.1:{port}");
    let post = |body: &str| raw_post(&address, "/webhooks/stripe", &signature, body);
    let accepted = post(body);
    assert!(accepted.starts_with("HTTP/1.1 200"), "{accepted}");
    let rejected = post(&body.replace("evt_1", "evt_2"));
    assert!(rejected.starts_with("HTTP/1.1 401"), "{rejected}");
    assert!(rejected.contains("application/problem+json"), "{rejected}");

    // SIGTERM stops it gracefully, with exit status 0.
    let killed = StdCommand::new("kill")
        .args(["-TERM", &serve.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(serve.wait().success());
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
async fn deliveries_list_and_resend_on_a_postgres_store() {
    use tower_webhooks::store::PostgresOptions;

    let url = support::postgres_url();
    let schema = support::unique_schema("cli");
    let store = PostgresOptions::new(&url)
        .schema(&schema)
        .connect()
        .await
        .unwrap();
    let receiver = support::Receiver::status(503).await;
    let [first, second] = dead_letters_in(store, &receiver).await;
    let run = |args: &[&str]| {
        let mut command = cli();
        command
            .args(["deliveries", "--store", &url, "--schema", &schema])
            .args(args);
        tokio::task::spawn_blocking(move || output_of(command))
    };

    let (code, page, stderr) = run(&["list", "--state", "failed", "--json"]).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    let ids: Vec<_> = page["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|delivery| delivery["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [second.clone(), first.clone()]);

    receiver.behave(|_, _| support::Reply::status(200));
    let (code, outcome, stderr) = run(&["resend", &first, "--allow-loopback", "--json"])
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{outcome} {stderr}");
    assert_eq!(outcome["delivered"], 1);
    assert_eq!(receiver.hits().len(), 5);
    let (_, shown, _) = run(&["show", &first, "--json"]).await.unwrap();
    assert_eq!(shown["delivery"]["state"], "delivered");
    assert_eq!(shown["attempts"][2]["manual"], true);
    support::drop_schema(&url, &schema).await;
}

/// POSTs `body` with `headers` (`Name: value` lines) over a fresh connection; the raw answer.
fn raw_post(address: &str, path: &str, headers: &str, body: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        headers.trim_end().replace('\n', "\r\n"),
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    response
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_dedupe_answers_a_repeat_without_forwarding_it() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let app = support::Receiver::status(200).await;
    let args: Vec<String> = [
        "listen",
        "--scheme",
        "standard",
        "--secret-env",
        "CLI_SECRET",
    ]
    .iter()
    .chain(&["--port", "0", "--json", "--dedupe", "--max-requests", "2"])
    .map(|s| s.to_string())
    .chain(["--forward".to_owned(), app.url("/app")])
    .collect();
    let mut listen = Running::start(&args, &[("CLI_SECRET", secret)]);
    let url = listen.next_json()["listening"].as_str().unwrap().to_owned();
    let address = url.trim_start_matches("http://").to_owned();
    let body = r#"{"type":"ping"}"#;
    let signed = cli()
        .args(["sign", "--scheme", "standard", "--secret-env", "CLI_SECRET"])
        .args(["--id", "msg_repeat", "--body", body])
        .env("CLI_SECRET", secret)
        .output()
        .unwrap();
    let headers = String::from_utf8(signed.stdout).unwrap();
    let (first, second) = tokio::task::spawn_blocking(move || {
        (
            raw_post(&address, "/hook", &headers, body),
            raw_post(&address, "/hook", &headers, body),
        )
    })
    .await
    .unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.ends_with(r#"{"status":"duplicate"}"#), "{second}");
    assert_eq!(listen.next_json()["forward"]["status"], 200);
    let repeat = listen.next_json();
    assert_eq!(repeat["duplicate"], true, "{repeat}");
    assert_eq!(repeat["message_id"], "msg_repeat");
    assert!(repeat.get("forward").is_none());
    assert!(listen.wait().success());
    assert_eq!(app.hits().len(), 1);
}
