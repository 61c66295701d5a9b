//! `sign` and `verify`: one message, through the library's schemes and verifier.

use clap::Args;
use http::{HeaderMap, Method, Uri};
use serde_json::json;
use tower_webhooks::inbound::WebhookVerifier;
use tower_webhooks::scheme::{Message, Scheme};

use crate::exit::Failure;
use crate::input::{unix_now, BodyArgs, HeaderArgs, SchemeArgs, SecretArgs, StdinOnce};

/// `sign`: the headers a scheme puts on a body.
#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    #[command(flatten)]
    scheme: SchemeArgs,
    #[command(flatten)]
    secrets: SecretArgs,
    #[command(flatten)]
    body: BodyArgs,
    /// The message id, for schemes that sign one (default: a fresh UUID).
    #[arg(long)]
    id: Option<String>,
    /// The signed timestamp in Unix seconds (default: now).
    #[arg(long, allow_negative_numbers = true)]
    timestamp: Option<i64>,
    /// Print one JSON object (`scheme`, `id`, `timestamp`, `headers`) instead of header lines.
    #[arg(long)]
    json: bool,
}

/// `verify`: whether headers and a body carry a valid signature.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    scheme: SchemeArgs,
    #[command(flatten)]
    secrets: SecretArgs,
    #[command(flatten)]
    headers: HeaderArgs,
    #[command(flatten)]
    body: BodyArgs,
    /// The request target, for conditions that read the query string (Valohai).
    #[arg(long, default_value = "/", value_name = "PATH?QUERY")]
    target: String,
    /// The request method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// Verify as of this Unix time instead of now (for recorded requests).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    now: Option<i64>,
    /// Print one JSON object (`valid`, and `scheme`, `message_id`, `timestamp` or `reason`,
    /// `status`, `detail`).
    #[arg(long)]
    json: bool,
}

pub(crate) fn sign(args: SignArgs) -> Result<(), Failure> {
    let scheme = args.scheme.scheme()?;
    let secrets = args.secrets.secrets(args.scheme.secrets_optional())?;
    let body = args
        .body
        .read(&mut StdinOnce::default())?
        .ok_or_else(|| Failure::usage("a body is needed: --body TEXT or --body-file PATH|-"))?;
    let id = args
        .id
        .unwrap_or_else(|| format!("msg_{}", uuid::Uuid::new_v4().simple()));
    let timestamp = args.timestamp.unwrap_or_else(unix_now);
    let mut headers = HeaderMap::new();
    scheme
        .sign(&Message::new(&id, timestamp, &body), &secrets, &mut headers)
        .map_err(|e| Failure::usage(format!("cannot sign with {}: {e}", scheme.name())))?;
    if args.json {
        let headers: serde_json::Map<_, _> = headers
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string(),
                    json!(String::from_utf8_lossy(value.as_bytes())),
                )
            })
            .collect();
        let output = json!({
            "scheme": scheme.name(),
            "id": id,
            "timestamp": timestamp,
            "headers": headers,
        });
        println!("{output}");
    } else {
        for (name, value) in &headers {
            println!("{name}: {}", String::from_utf8_lossy(value.as_bytes()));
        }
    }
    Ok(())
}

pub(crate) fn verify(args: VerifyArgs) -> Result<(), Failure> {
    let scheme = args.scheme.scheme()?;
    let secrets = args.secrets.secrets(args.scheme.secrets_optional())?;
    if args.body.uses_stdin() && args.headers.uses_stdin() {
        return Err(Failure::usage(
            "--body-file - and --headers-file - cannot both read stdin",
        ));
    }
    let mut stdin = StdinOnce::default();
    let headers = args.headers.read(&mut stdin)?;
    let body = args
        .body
        .read(&mut stdin)?
        .ok_or_else(|| Failure::usage("a body is needed: --body TEXT or --body-file PATH|-"))?;
    let method = Method::from_bytes(args.method.as_bytes())
        .map_err(|_| Failure::usage(format!("--method {}: not a method", args.method)))?;
    let uri: Uri = args
        .target
        .parse()
        .map_err(|_| Failure::usage(format!("--target {}: not a request target", args.target)))?;
    let mut request = http::Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let (head, ()) = request.into_parts();

    let now = args.now.unwrap_or_else(unix_now);
    let verifier = WebhookVerifier::new(scheme, secrets)
        .limit(usize::MAX)
        .clock(move || now);
    let verdict = verifier.verify_parts(&head, &body);
    let output = match &verdict {
        Ok(verified) => json!({
            "valid": true,
            "scheme": verified.scheme,
            "message_id": verified.message_id,
            "timestamp": verified.timestamp,
            "secret_index": verified.secret.as_ref().map(|secret| secret.index),
        }),
        Err(rejection) => json!({
            "valid": false,
            "reason": rejection.kind().slug(),
            "status": rejection.status().as_u16(),
            "detail": rejection.detail(),
        }),
    };
    if args.json {
        println!("{output}");
    } else {
        match &verdict {
            Ok(verified) => {
                let mut line = format!("valid ({})", verified.scheme);
                if let Some(id) = &verified.message_id {
                    line.push_str(&format!(", id {id}"));
                }
                if let Some(timestamp) = verified.timestamp {
                    line.push_str(&format!(", timestamp {timestamp}"));
                }
                if let Some(secret) = &verified.secret {
                    line.push_str(&format!(", secret #{}", secret.index + 1));
                }
                println!("{line}");
            }
            Err(rejection) => println!(
                "invalid: {} ({}): {}",
                rejection.kind().slug(),
                rejection.status().as_u16(),
                rejection.detail()
            ),
        }
    }
    verdict.map(drop).map_err(|_| Failure::Negative)
}
