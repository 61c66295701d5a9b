//! The gateway's `GET /metrics` (`metrics-exporter-prometheus`), scraped over TCP and parsed
//! by the reference Prometheus text parser (`prometheus_client`, from
//! `tests/clients/requirements.txt`): every metric has the type and help text of
//! `tower_webhooks::telemetry::METRICS`, and an inbound webhook and a forwarded delivery move
//! their counters.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use serde_json::Value;
use tower_webhooks::scheme::{Cerebrium, Message, Scheme};
use tower_webhooks::telemetry::{MetricKind, METRICS};
use tower_webhooks::SecretSet;

/// The `/webhooks/cerebrium` route's secret in `examples/gateway.toml`.
const CEREBRIUM_SECRET: &str = "demo-cerebrium-secret";

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

fn start_gateway() -> Gateway {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut binary = std::env::current_exe().unwrap();
    binary.pop();
    if binary.ends_with("deps") {
        binary.pop();
    }
    let binary: PathBuf = binary.join("examples").join("gateway");
    assert!(binary.exists(), "{} is missing", binary.display());
    let mut child = Command::new(binary)
        .env("PORT", port.to_string())
        .env("STORE", "memory")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The banner ends with the replay-window note once every route is printed.
    let mut banner = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        let done = line.contains("replay window");
        banner.push(line);
        if done {
            break;
        }
    }
    let gateway = Gateway { child, port };
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "gateway did not start: {banner:?}"
    );
    gateway
}

/// One request over a fresh connection; the status line and the body.
fn exchange(port: u16, request: String) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

fn post(port: u16, path: &str, headers: &str, body: &str) -> String {
    exchange(
        port,
        format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             {headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .0
}

fn cerebrium_headers(id: &str, body: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut headers = HeaderMap::new();
    Cerebrium::new()
        .sign(
            &Message::new(id, now, body.as_bytes()),
            &SecretSet::from(CEREBRIUM_SECRET),
            &mut headers,
        )
        .unwrap();
    headers
        .iter()
        .map(|(name, value)| format!("{name}: {}\r\n", value.to_str().unwrap()))
        .collect()
}

/// Scrapes `/metrics` and parses it with `prometheus_client`: family name to family.
fn scrape(port: u16) -> BTreeMap<String, Value> {
    let (status, body) = exchange(
        port,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_owned(),
    );
    assert!(status.contains(" 200 "), "{status}");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/prometheus_families.py"
    );
    let mut parser = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed (with `pip install -r tests/clients/requirements.txt`)");
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = parser.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client could not parse /metrics (is it installed? \
         pip install -r tests/clients/requirements.txt):\n{}\n{body}",
        String::from_utf8_lossy(&output.stderr)
    );
    let families: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    families
        .into_iter()
        .map(|family| (family["name"].as_str().unwrap().to_owned(), family))
        .collect()
}

/// The value of the sample `name` whose labels include `labels`, if there is one.
fn sample(families: &BTreeMap<String, Value>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families.values().find_map(|family| {
        family["samples"].as_array()?.iter().find_map(|sample| {
            let matches = sample["name"] == name
                && labels
                    .iter()
                    .all(|(key, value)| sample["labels"][key] == *value);
            matches.then(|| sample["value"].as_f64()).flatten()
        })
    })
}

#[test]
fn metrics_scraped_and_parsed_by_prometheus_client() {
    let gateway = start_gateway();
    let port = gateway.port;
    // Inbound: one accepted, its duplicate, one rejected for want of a signature.
    let body = r#"{"run_id":"metrics-1"}"#;
    let headers = cerebrium_headers("metrics-1", body);
    assert!(post(port, "/webhooks/cerebrium", &headers, body).contains(" 200 "));
    assert!(post(port, "/webhooks/cerebrium", &headers, body).contains(" 200 "));
    assert!(post(port, "/webhooks/cerebrium", "", body).contains(" 400 "));
    // Outbound: a run whose result the forward engine delivers to the gateway's receiver.
    let endpoint = format!("http%3A%2F%2F127.0.0.1%3A{port}%2Fdemo%2Freceiver");
    let status = post(
        port,
        &format!("/v4/p-demo/app/run?webhookEndpoint={endpoint}"),
        "X-Webhook-Secret: my-secret\r\n",
        r#"{"param": "metrics"}"#,
    );
    assert!(status.contains(" 200 "), "{status}");
    let delivered = [("engine", "forward"), ("state", "delivered")];
    let deadline = Instant::now() + Duration::from_secs(20);
    let families = loop {
        let families = scrape(port);
        if sample(&families, "webhook_deliveries_finished_total", &delivered).is_some() {
            break families;
        }
        assert!(
            Instant::now() < deadline,
            "no delivery was counted: {families:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // Names, types and help texts are the crate's table, parsed by the reference parser
    // (which names a counter's family without `_total`).
    for metric in METRICS {
        let family_name = metric.name.strip_suffix("_total").unwrap_or(metric.name);
        let Some(family) = families.get(family_name) else {
            // Retention purges nothing in a fresh gateway.
            assert_eq!(metric.name, "webhook_deliveries_purged_total", "not served");
            continue;
        };
        assert_eq!(family["type"], metric.kind.as_str(), "{}", metric.name);
        assert_eq!(family["help"], metric.help, "{}", metric.name);
        if metric.kind == MetricKind::Histogram {
            let samples = family["samples"].as_array().unwrap();
            assert!(
                samples
                    .iter()
                    .any(|s| s["name"] == format!("{}_bucket", metric.name)),
                "{} has buckets",
                metric.name
            );
        }
    }
    let cerebrium = [("scheme", "cerebrium")];
    assert_eq!(
        sample(&families, "webhook_inbound_accepted_total", &cerebrium),
        Some(1.0)
    );
    assert_eq!(
        sample(&families, "webhook_inbound_duplicates_total", &cerebrium),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &families,
            "webhook_inbound_rejected_total",
            &[("scheme", "cerebrium"), ("kind", "missing-header")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&families, "webhook_deliveries_finished_total", &delivered),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &families,
            "webhook_attempts_total",
            &[("engine", "forward"), ("outcome", "2xx")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &families,
            "webhook_delivery_latency_seconds_count",
            &delivered
        ),
        Some(1.0)
    );
    // The two engines keep their own gauges.
    for engine in ["forward", "registry"] {
        assert!(
            sample(&families, "webhook_queue_depth", &[("engine", engine)]).is_some(),
            "{engine}'s queue depth: {:?}",
            families.get("webhook_queue_depth")
        );
    }
}
