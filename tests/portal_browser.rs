//! The gateway's delivery portal in a real browser: headless Chromium driven through
//! WebDriver (`chromedriver`, the `fantoccini` crate) logs in with an API key, opens a
//! webhook, sends two test events (one delivered, one answered `410 Gone` and failed), opens
//! the failed delivery, re-sends it and sees the new attempt appear. Screenshots of each step
//! are saved under `target/portal-screenshots/` for review.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them) and the gateway example built with the
//! `portal` feature (`cargo build --all-features --examples`). It is ignored by default and
//! `.ci/run` runs it with `--ignored browser`; without a browser it fails saying so.
#![cfg(feature = "portal")]

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::{Receiver, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The demo gateway's API key of owner `demo` (`examples/gateway.toml`).
const API_KEY: &str = "demo-api-key";

/// A child process killed when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `target/` (or `CARGO_TARGET_DIR`): the directory above this test binary's profile.
fn target_dir() -> PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.pop();
    dir
}

fn start_gateway() -> (Process, String) {
    // The examples sit beside this test binary's `deps/`.
    let mut binary = std::env::current_exe().unwrap();
    binary.pop();
    if binary.ends_with("deps") {
        binary.pop();
    }
    let binary = binary.join("examples").join("gateway");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --all-features --examples` first",
        binary.display()
    );
    let port = free_port();
    let mut child = Command::new(binary)
        .env("PORT", port.to_string())
        .env("STORE", "memory")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let process = Process(child);
    let mut banner = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.contains("replay window");
        banner.push(line);
        if done || Instant::now() > deadline {
            break;
        }
    }
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        banner
            .iter()
            .any(|line| line.contains(&format!("{base}/portal"))),
        "the banner names the portal: {banner:#?}"
    );
    (process, base)
}

fn start_chromedriver() -> (Process, String) {
    for binary in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing: install Debian's chromium and chromium-driver (.ci/run does)"
        );
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let process = Process(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (process, format!("http://127.0.0.1:{port}"))
}

/// `POST {base}{path}` with the API key and a JSON body; the status code.
async fn api_post(base: &str, path: &str, body: &serde_json::Value) -> u16 {
    let host = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

struct Browser {
    client: Client,
    shots: PathBuf,
}

impl Browser {
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(name), png).unwrap();
    }

    /// Reloads the page until `css` matches (the engine works in the background).
    async fn reload_until(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(found) = self.client.find(Locator::Css(css)).await {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "`{css}` never appeared in {}",
                self.client.source().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
            self.client.refresh().await.unwrap();
        }
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("no `{css}`: {err}"))
            .click()
            .await
            .unwrap();
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: .ci/run installs them"]
async fn browser_logs_in_sees_attempts_and_resends() {
    let (_driver, driver_url) = start_chromedriver();
    let (_gateway, base) = start_gateway();

    // The first test event is delivered, the second answered 410 Gone (a final failure that
    // also disables the webhook), the re-send delivered.
    let receiver = Receiver::start(|n, _| Reply::status(if n == 1 { 410 } else { 200 })).await;
    let created = api_post(
        &base,
        "/v1/webhooks",
        &json!({"id": "browser-hook", "endpoint_url": receiver.url("/hook"), "event_types": ["run.status"]}),
    )
    .await;
    assert_eq!(created, 201);

    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"],
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver_url)
        .await
        .expect("a Chromium session");
    let shots = target_dir().join("portal-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let browser = Browser { client, shots };

    // Log in.
    browser
        .client
        .goto(&format!("{base}/portal"))
        .await
        .unwrap();
    browser
        .client
        .wait()
        .for_element(Locator::Css("#token"))
        .await
        .unwrap();
    browser.screenshot("01-login.png").await;
    browser
        .client
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(API_KEY)
        .await
        .unwrap();
    browser.click("#login").await;
    browser
        .client
        .wait()
        .for_element(Locator::Css("table#webhooks"))
        .await
        .unwrap();
    assert!(browser.text("header .owner").await.contains("demo"));
    browser.screenshot("02-webhooks.png").await;

    // Open the webhook and send two test events.
    browser.click(r#"tr[data-webhook="browser-hook"] a"#).await;
    browser
        .client
        .wait()
        .for_element(Locator::Css("#send-test"))
        .await
        .unwrap();
    browser.click("#send-test").await;
    browser
        .client
        .wait()
        .for_element(Locator::Css(".notice"))
        .await
        .unwrap();
    receiver.wait_hits(1, Duration::from_secs(20)).await;
    browser.reload_until(r#"tr[data-state="delivered"]"#).await;
    browser.click("#send-test").await;
    receiver.wait_hits(2, Duration::from_secs(20)).await;
    browser.reload_until(r#"tr[data-state="failed"]"#).await;
    browser
        .client
        .find(Locator::Css(r#"tr[data-state="delivered"]"#))
        .await
        .unwrap();
    browser.screenshot("03-webhook-deliveries.png").await;

    // The failed delivery: its attempt, then a re-send and the new attempt.
    browser.click(r#"tr[data-state="failed"] a"#).await;
    browser
        .client
        .wait()
        .for_element(Locator::Css("#resend"))
        .await
        .unwrap();
    assert!(browser
        .text(r#"section.attempt[data-number="1"]"#)
        .await
        .contains("HTTP 410"));
    browser.screenshot("04-failed-delivery.png").await;
    browser.click("#resend").await;
    let second = browser
        .reload_until(r#"section.attempt[data-number="2"]"#)
        .await;
    let text = second.text().await.unwrap();
    assert!(text.contains("HTTP 200"), "{text}");
    assert!(text.contains("re-send"), "{text}");
    assert_eq!(browser.text("#delivery-state").await, "delivered");
    assert_eq!(receiver.hits().len(), 3);
    browser.screenshot("05-resent.png").await;

    browser.client.close().await.unwrap();
}
