//! The README as a path that works: every command of its `sh`/`bash`/`console` blocks runs,
//! in order and in one shell, against the demo gateway (`examples/gateway`) started here on a
//! free port, so the README cannot rot; and the gateway drains on SIGTERM as on Ctrl-C.
//!
//! The gateway binary is built by `cargo test`; `cargo test --test readme` alone builds it
//! when it is missing (rebuild it after changing `examples/gateway/`).

#![cfg(unix)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// README commands the test does not run, each with the reason. Every entry must still
/// appear in the README (so the list cannot outlive the commands it excuses).
const NOT_RUN: &[(&str, &str)] = &[
    (
        "cargo run --example gateway",
        "the test starts that same gateway binary itself, built by cargo, on a free port",
    ),
    (
        "cargo test --all-features",
        "the whole test suite, of which this test is a part",
    ),
    (
        "cargo install cargo-fuzz",
        "installs a tool from crates.io; fuzzing runs for minutes per target, outside the suite",
    ),
    (
        "cargo +nightly fuzz run",
        "fuzzing runs for minutes per target, outside the suite",
    ),
    (
        "fuzz/run-all.sh",
        "every fuzz target in turn: tens of minutes, outside the suite",
    ),
];

/// How long the whole walkthrough may take before the test reports the line it stopped at
/// (a hang, e.g. an `until` loop whose condition never holds).
const WALKTHROUGH_LIMIT: Duration = Duration::from_secs(180);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/debug/examples/gateway`, built with this test's features when missing.
fn gateway_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = dir.join("examples").join("gateway");
    if !binary.exists() {
        let features: Vec<&str> = [
            ("jwt", cfg!(feature = "jwt")),
            ("ed25519", cfg!(feature = "ed25519")),
            ("forward", cfg!(feature = "forward")),
            ("rustls", cfg!(feature = "rustls")),
            ("http2", cfg!(feature = "http2")),
            ("registry", cfg!(feature = "registry")),
            ("portal", cfg!(feature = "portal")),
            ("sqlite", cfg!(feature = "sqlite")),
            ("postgres", cfg!(feature = "postgres")),
            ("redis", cfg!(feature = "redis")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(root())
            .args(["build", "--example", "gateway", "--no-default-features"])
            .args(["--features", &features.join(",")])
            .status()
            .unwrap();
        assert!(
            status.success() && binary.exists(),
            "cannot build {}",
            binary.display()
        );
    }
    binary
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The demo gateway with its built-in configuration (`examples/gateway.toml`), run in its own
/// directory (its SQLite files land there), stdout (banner and log) in `gateway.log`.
struct Gateway {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start(rust_log: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("gateway.log");
        let port = free_port();
        let child = Command::new(gateway_binary())
            .current_dir(dir.path())
            .env("PORT", port.to_string())
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .stdout(fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let gateway = Self {
            child,
            port,
            log,
            _dir: dir,
        };
        // The banner ends with the replay-window note, printed just before serving.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !gateway.output().contains("replay window") {
            assert!(
                Instant::now() < deadline,
                "the gateway did not start:\n{}",
                gateway.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "the gateway does not listen on {port}:\n{}",
            gateway.output()
        );
        gateway
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The README's shell commands as one bash script whose line N is README line N (every other
/// line blank), so `$LINENO` names the README line. Line 1 (the title) holds the set-up.
struct Walkthrough {
    script: String,
    readme: Vec<String>,
}

fn walkthrough(readme: &str, port: u16) -> Walkthrough {
    let readme: Vec<String> = readme.lines().map(str::to_owned).collect();
    let mut script = vec![String::new(); readme.len()];
    let mut unused: Vec<&str> = NOT_RUN.iter().map(|(command, _)| *command).collect();
    // `None` outside a fence; `Some(shell?)` inside one.
    let mut fence: Option<Option<&str>> = None;
    let mut commands = 0;
    for (index, line) in readme.iter().enumerate() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(match info.trim() {
                    "sh" | "bash" | "shell" => Some("sh"),
                    "console" => Some("console"),
                    _ => None,
                }),
            };
            continue;
        }
        let Some(Some(kind)) = fence else { continue };
        assert!(index > 0, "README.md:1 cannot be a command");
        let command = if kind == "console" {
            // `$ command` lines run; the others are output shown to the reader.
            match line.strip_prefix("$ ") {
                Some(command) => command,
                None => continue,
            }
        } else {
            line.as_str()
        };
        let not_run = NOT_RUN
            .iter()
            .find(|(skipped, _)| command.trim_start().starts_with(skipped));
        script[index] = match not_run {
            Some((skipped, _)) => {
                unused.retain(|unused| unused != skipped);
                ":".to_owned()
            }
            None => {
                if !command.trim().is_empty() && !command.trim_start().starts_with('#') {
                    commands += 1;
                }
                let tested = to_test(command, port);
                assert!(
                    !tested.contains(":3000") && !tested.contains("%3A3000"),
                    "README.md:{}: names port 3000 in a form the test does not replace \
                     (use 127.0.0.1:3000): {line}",
                    index + 1
                );
                tested
            }
        };
    }
    assert!(
        unused.is_empty(),
        "NOT_RUN names commands the README no longer has: {unused:?}"
    );
    assert!(commands >= 20, "only {commands} README commands found");
    script[0] = [
        // No `pipefail`: the README's pipelines end in `grep -q`, which may close the pipe
        // before curl is done, exactly as in the reader's shell.
        "set -eE",
        r#"trap 'echo "$LINENO" > "$README_FAILED_AT"' ERR"#,
        r#"trap 'echo "$LINENO" > "$README_AT"' DEBUG"#,
        r#"export PATH="$README_BIN:$PATH""#,
    ]
    .join("; ");
    Walkthrough {
        script: script.join("\n") + "\n",
        readme,
    }
}

/// One README line as the test runs it: the gateway's port in place of 3000 (also
/// URL-encoded, as in a `webhookEndpoint`); a
/// `curl … -w '%{http_code}\n' …   # 404` line checks the printed status; `NAME=$(…)` must
/// capture something (an empty cursor or id would only fail later, further from its cause).
fn to_test(line: &str, port: u16) -> String {
    let line = line
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{port}"))
        .replace("localhost:3000", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1%3A3000", &format!("127.0.0.1%3A{port}"));
    if line.contains("-w '%{http_code}\\n'") {
        if let Some((command, status)) = line.rsplit_once("# ") {
            let status = status.trim();
            assert!(
                status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit()),
                "a README line printing the status must end in `# <status>`: {line}"
            );
            return format!(r#"[ "$({})" = "{status}" ]"#, command.trim_end());
        }
    }
    if let Some((name, rest)) = line.split_once("=$(") {
        let name = name.trim();
        if !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && rest.ends_with(')')
        {
            return format!(r#"{line}; [ -n "${name}" ]"#);
        }
    }
    line
}

/// A `curl` first in `PATH` that fails on an HTTP error status (4xx/5xx: exit 22) while still
/// printing the body, which the reader's plain `curl -sS` would only show.
fn strict_curl(dir: &Path) {
    let found = Command::new("sh")
        .args(["-c", "command -v curl"])
        .output()
        .unwrap();
    let real = String::from_utf8(found.stdout).unwrap().trim().to_owned();
    assert!(
        found.status.success() && !real.is_empty(),
        "the README's commands need `curl` (Debian: apt-get install curl)"
    );
    let path = dir.join("curl");
    let mut file = fs::File::create(&path).unwrap();
    writeln!(file, "#!/bin/sh\nexec '{real}' --fail-with-body \"$@\"").unwrap();
    drop(file);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn readme_line(walkthrough: &Walkthrough, file: &Path) -> (usize, String) {
    let number: usize = fs::read_to_string(file)
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let text = walkthrough
        .readme
        .get(number.wrapping_sub(1))
        .cloned()
        .unwrap_or_default();
    (number, text)
}

#[test]
fn every_readme_command_runs_and_the_walkthrough_ends_in_a_verified_delivery() {
    let mut gateway = Gateway::start("warn");
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let walkthrough = walkthrough(&readme, gateway.port);
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    fs::create_dir(&bin).unwrap();
    strict_curl(&bin);
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_tower-webhooks"),
        bin.join("tower-webhooks"),
    )
    .unwrap();
    let script = work.path().join("readme.sh");
    fs::write(&script, &walkthrough.script).unwrap();
    let failed_at = work.path().join("failed-at");
    let at = work.path().join("at");
    let (stdout, stderr) = (work.path().join("stdout"), work.path().join("stderr"));
    let mut shell = Command::new("bash")
        .arg(&script)
        .current_dir(work.path())
        .env("README_FAILED_AT", &failed_at)
        .env("README_AT", &at)
        .env("README_BIN", &bin)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout).unwrap())
        .stderr(fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WALKTHROUGH_LIMIT;
    let status = loop {
        if let Some(status) = shell.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = shell.kill();
            let _ = shell.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = fs::read_to_string(&stdout).unwrap_or_default();
    let errors = fs::read_to_string(&stderr).unwrap_or_default();
    match status {
        None => {
            let (number, text) = readme_line(&walkthrough, &at);
            panic!(
                "README.md:{number}: did not finish within {WALKTHROUGH_LIMIT:?}: {text}\n\
                 stdout:\n{output}\nstderr:\n{errors}\ngateway:\n{}",
                gateway.output()
            );
        }
        Some(status) if !status.success() => {
            let (number, text) = readme_line(&walkthrough, &failed_at);
            panic!(
                "README.md:{number}: command failed ({status}): {text}\n\
                 stdout:\n{output}\nstderr:\n{errors}\ngateway:\n{}",
                gateway.output()
            );
        }
        Some(_) => {}
    }
    // The walkthrough's inbox listing: the demo run's last event, verified by the receiver.
    assert!(
        output.contains(r#""verified":true"#) && output.contains(r#""status":"succeeded""#),
        "the walkthrough did not end in a verified delivery:\n{output}"
    );
    assert!(
        gateway.child.try_wait().unwrap().is_none(),
        "the gateway stopped during the walkthrough:\n{}",
        gateway.output()
    );
}

/// A receiver that accepts one delivery, tells the test it has it, and answers `200` only
/// when the test says so.
fn slow_receiver() -> (u16, mpsc::Receiver<String>, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (got, got_rx) = mpsc::channel();
    let (answer, answer_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut request = Vec::new();
        let mut buffer = [0; 4096];
        // Headers and the (small, Content-Length) body.
        while let Ok(n) = stream.read(&mut buffer) {
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
        }
        got.send(String::from_utf8_lossy(&request).into_owned())
            .unwrap();
        let _ = answer_rx.recv();
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    });
    (port, got_rx, answer)
}

#[test]
fn sigterm_drains_the_in_flight_delivery_and_exits_0() {
    let mut gateway = Gateway::start("warn,gateway=info,tower_webhooks=info");
    let (receiver_port, got, answer) = slow_receiver();
    let endpoint = format!("http%3A%2F%2F127.0.0.1%3A{receiver_port}%2Fhook");
    let accepted = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "POST"])
        .arg(format!(
            "http://127.0.0.1:{}/v4/p-demo/app/run?async=true&webhookEndpoint={endpoint}",
            gateway.port
        ))
        .args(["-H", "Content-Type: application/json", "--data", "{}"])
        .output()
        .unwrap();
    assert!(
        accepted.status.success(),
        "the forward route refused the run: {}",
        String::from_utf8_lossy(&accepted.stdout)
    );
    let request = got
        .recv_timeout(Duration::from_secs(60))
        .expect("the delivery never reached the receiver");
    assert!(request.starts_with("POST /hook"), "{request}");

    // The attempt is in flight: the receiver holds its answer until after the signal.
    let pid = gateway.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    // The receiver answers only once the gateway has taken the signal and is draining.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gateway
        .output()
        .contains("shutting down: draining deliveries")
    {
        assert!(
            Instant::now() < deadline && gateway.child.try_wait().unwrap().is_none(),
            "the gateway did not start draining on SIGTERM:\n{}",
            gateway.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    answer.send(()).unwrap();
    let status = gateway
        .wait(Duration::from_secs(30))
        .expect("the gateway did not exit after SIGTERM");
    let output = gateway.output();
    assert!(
        status.success(),
        "SIGTERM: {status} (expected exit 0):\n{output}"
    );
    assert!(
        output.contains("webhook delivered"),
        "the in-flight delivery was not delivered:\n{output}"
    );
    assert!(
        output.contains("forward deliveries: every one final"),
        "the forward engine did not drain:\n{output}"
    );
}

/// `curl -sS` against the gateway: (HTTP status, body).
fn curl(port: u16, args: &[&str], path: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn the_demo_inbox_verifies_each_tenants_deliveries_and_rejects_forged_ones() {
    let gateway = Gateway::start("warn");
    let port = gateway.port;
    let register = |key: &str| {
        let body = format!(
            r#"{{"id":"shared-name","endpoint_url":"http://127.0.0.1:{port}/demo/inbox/shared-name","event_types":["run.status"]}}"#
        );
        let auth = format!("Authorization: Bearer {key}");
        let (status, answer) = curl(
            port,
            &[
                "-X",
                "POST",
                "-H",
                &auth,
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
            ],
            "/v1/webhooks",
        );
        assert_eq!(status, 201, "{answer}");
    };
    // Two tenants (examples/gateway.toml's two keys) name their webhooks alike.
    register("demo-api-key");
    register("demo-api-key-2");

    let second = "Authorization: Bearer demo-api-key-2";
    let (status, answer) = curl(port, &["-X", "POST", "-H", second], "/v1/runs");
    assert_eq!(status, 202, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let (status, listed) = curl(port, &["-H", second], "/demo/inbox/shared-name");
        assert_eq!(status, 200, "{listed}");
        if listed.contains(r#""status":"succeeded""#) {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "the second tenant's run never arrived verified: {listed}\n{}",
            gateway.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(listed.contains(r#""verified":true"#), "{listed}");
    // The first tenant sees none of it; without a key, nothing at all.
    let (status, first) = curl(
        port,
        &["-H", "Authorization: Bearer demo-api-key"],
        "/demo/inbox/shared-name",
    );
    assert_eq!((status, first.as_str()), (200, r#"{"data":[]}"#));
    let (status, _) = curl(port, &[], "/demo/inbox/shared-name");
    assert_eq!(status, 401);

    // A delivery signed with no tenant's secret is refused with the scheme's problem.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged = format!("Nextmv-Signature: t={now},v1={}", "ab".repeat(32));
    let (status, problem) = curl(
        port,
        &[
            "-X",
            "POST",
            "-H",
            &forged,
            "-H",
            "Content-Type: application/json",
            "-d",
            "{}",
        ],
        "/demo/inbox/shared-name",
    );
    assert_eq!(status, 401, "{problem}");
    assert!(problem.contains("invalid-signature"), "{problem}");
    let (status, _) = curl(port, &["-X", "POST", "-d", "{}"], "/demo/inbox/nobody");
    assert_eq!(status, 404);
}
