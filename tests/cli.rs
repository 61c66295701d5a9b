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
    let header_args = |headers: &Value| -> Vec<String> {
        headers
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(name, value)| {
                [
                    "-H".to_owned(),
                    format!("{name}: {}", value.as_str().unwrap()),
                ]
            })
            .collect()
    };

    let valid = cli()
        .args([
            "verify",
            "--scheme",
            "standard",
            "--secret-env",
            "CLI_SECRET",
            "--json",
        ])
        .args(header_args(&headers))
        .args(["--body", body])
        .env("CLI_SECRET", secret)
        .output()
        .unwrap();
    assert_eq!(valid.status.code(), Some(0), "{valid:?}");
    let verdict = stdout_json(&valid);
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["scheme"], "standard_webhooks");
    assert_eq!(verdict["message_id"], "msg_py");
    assert!(!String::from_utf8_lossy(&valid.stdout).contains(secret));

    // A tampered body: exit 1, with the rejection kind.
    let tampered = cli()
        .args([
            "verify",
            "--scheme",
            "standard",
            "--secret-env",
            "CLI_SECRET",
            "--json",
        ])
        .args(header_args(&headers))
        .args(["--body", &body.replace("created", "deleted")])
        .env("CLI_SECRET", secret)
        .output()
        .unwrap();
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
