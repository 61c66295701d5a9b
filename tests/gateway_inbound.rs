//! The gateway example's inbound server settings, over real TCP: a shared replay store
//! between two gateway processes, and the header-read and body-read deadlines.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

const SECRET: &str = "gateway-inbound-secret";

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
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration with one Cerebrium route and `inbound` as its `[inbound]` table.
fn write_config(dir: &Path, inbound: &str) -> PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[inbound]\n{inbound}\n\n[[routes]]\npath = \"/hook\"\nsecrets = \"{SECRET}\"\n\
             scheme = {{ type = \"cerebrium\" }}\n"
        ),
    )
    .unwrap();
    path
}

fn start(config: &Path) -> Gateway {
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
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(config)
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .env_remove("REPLAY_STORE")
        .env_remove("REPLAY_SCHEMA")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
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
    Gateway { child, port }
}

fn signed_request(id: &str, body: &str) -> Vec<u8> {
    support::cerebrium_request("/hook", id, body, SECRET).into_bytes()
}

/// Sends `request` and reads until the server closes the connection.
fn exchange(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("the gateway closes the connection");
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn a_connection_that_never_finishes_its_headers_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(&write_config(
        dir.path(),
        "header_read_timeout_secs = 1\nbody_read_deadline_secs = 1",
    ));
    let mut stream = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    // Generous: a server that holds the connection fails by hitting it, not by being slow.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"POST /hook HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .unwrap();
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        // Closed (hyper may first answer 408).
        Ok(_) => {
            let text = String::from_utf8_lossy(&answer);
            assert!(
                text.is_empty() || text.starts_with("HTTP/1.1 408"),
                "{text}"
            );
        }
        Err(err) => assert!(
            !matches!(
                err.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the server held the connection open: {err}"
        ),
    }
}

#[test]
fn a_stalled_body_is_answered_408_by_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(&write_config(dir.path(), "body_read_deadline_secs = 1"));
    let mut request = signed_request("stall", "{\"a\":1}");
    // Declare more than is sent: the body never completes.
    let text = String::from_utf8(request.clone()).unwrap();
    request = text
        .replace("Content-Length: 7", "Content-Length: 70")
        .into_bytes();
    let response = exchange(gateway.port, &request);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
    assert!(response.contains("body-timeout"), "{response}");
}

/// Two gateway processes on one `[inbound]` table: a webhook verified at one is answered as a
/// duplicate at the other.
#[cfg(any(feature = "postgres", feature = "redis"))]
fn two_gateways_share_deduplication(inbound: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), inbound);
    let one = start(&config);
    let two = start(&config);
    // Ids unique to this run: a shared server may hold other runs' keys.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (first_id, second_id) = (format!("{run}-1"), format!("{run}-2"));
    let first = exchange(one.port, &signed_request(&first_id, "{\"n\":1}"));
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.contains("\"accepted\":true"), "{first}");
    // The same delivery at the other replica is a duplicate, not processed again.
    let again = exchange(two.port, &signed_request(&first_id, "{\"n\":1}"));
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    assert!(again.contains("{\"status\":\"duplicate\"}"), "{again}");
    // Another id is processed at the second replica.
    let other = exchange(two.port, &signed_request(&second_id, "{\"n\":2}"));
    assert!(other.contains("\"accepted\":true"), "{other}");
}

#[cfg(feature = "postgres")]
#[test]
#[ignore = "needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL"]
fn two_gateways_on_one_postgres_schema_share_deduplication() {
    let url = std::env::var("TOWER_WEBHOOKS_POSTGRES_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .expect("this test needs PostgreSQL: set TOWER_WEBHOOKS_POSTGRES_URL");
    let schema = format!(
        "tw_gw_replay_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    two_gateways_share_deduplication(&format!(
        "replay_store = \"{url}\"\nreplay_schema = \"{schema}\""
    ));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut conn)
            .await
            .unwrap();
    });
}

#[cfg(feature = "redis")]
#[test]
#[ignore = "needs Redis: set TOWER_WEBHOOKS_REDIS_URL"]
fn two_gateways_on_one_redis_share_deduplication() {
    let url = std::env::var("TOWER_WEBHOOKS_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .expect("this test needs Redis: set TOWER_WEBHOOKS_REDIS_URL");
    // The keys expire with the replay TTL (360 s); the run's unique ids keep them apart.
    two_gateways_share_deduplication(&format!("replay_store = \"{url}\""));
}
