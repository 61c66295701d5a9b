//! Prints the headers a built-in scheme puts on a body, and a curl line that sends it.
//!
//! ```text
//! cargo run --example sign -- --scheme stripe --secret whsec_test --body '{"id":"evt_1"}'
//! cargo run --example sign -- --scheme cerebrium --secret s3cret --body @payload.json \
//!     --url http://127.0.0.1:3000/webhooks/cerebrium
//! ```
//!
//! Options: `--scheme NAME` (cerebrium, nextmv, stripe, standard_webhooks, github, slack,
//! or a TOML scheme table with `--scheme-toml 'type = "valohai" …'`), `--secret S` (repeat for
//! a rotation), `--body TEXT|@FILE`, `--id ID` (default: a fresh UUID), `--timestamp SECS`
//! (default: now), `--url URL` (default: the gateway route for the scheme).

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use tower_webhooks::scheme::{BuiltinScheme, Message, Scheme};
use tower_webhooks::{Secret, SecretSet};

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sign: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let mut scheme_table = None;
    let mut secrets = SecretSet::new();
    let mut body = String::from("{\"hello\":\"world\"}");
    let mut id = uuid::Uuid::new_v4().to_string();
    let mut timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    let mut url = None;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--scheme" => scheme_table = Some(format!("type = \"{}\"", value()?)),
            "--scheme-toml" => scheme_table = Some(value()?),
            "--secret" => secrets.push(Secret::resolve(&value()?).map_err(|e| e.to_string())?),
            "--body" => {
                let text = value()?;
                body = match text.strip_prefix('@') {
                    Some(path) => {
                        std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?
                    }
                    None => text,
                };
            }
            "--id" => id = value()?,
            "--timestamp" => {
                timestamp = value()?
                    .parse()
                    .map_err(|_| "--timestamp takes Unix seconds")?
            }
            "--url" => url = Some(value()?),
            "-h" | "--help" => {
                println!("usage: sign --scheme NAME --secret S [--secret S2] [--body TEXT|@FILE] [--id ID] [--timestamp SECS] [--url URL]");
                return Ok(());
            }
            other => return Err(format!("unknown option {other} (try --help)")),
        }
    }
    let table = scheme_table.ok_or("--scheme is required")?;
    let scheme: BuiltinScheme = toml::from_str(&table).map_err(|e| format!("scheme: {e}"))?;
    if secrets.is_empty() {
        return Err("--secret is required".into());
    }
    let mut headers = HeaderMap::new();
    scheme
        .sign(
            &Message::new(&id, timestamp, body.as_bytes()),
            &secrets,
            &mut headers,
        )
        .map_err(|e| e.to_string())?;
    let url = url.unwrap_or_else(|| format!("http://127.0.0.1:3000/webhooks/{}", scheme.name()));
    let mut curl = format!("curl -sS -i -X POST '{url}' -H 'Content-Type: application/json'");
    for (name, value) in &headers {
        let value = value.to_str().map_err(|e| e.to_string())?;
        println!("{name}: {value}");
        curl.push_str(&format!(" -H '{name}: {value}'"));
    }
    curl.push_str(&format!(" --data-binary '{}'", body.replace('\'', r"'\''")));
    println!("\n{curl}");
    Ok(())
}
