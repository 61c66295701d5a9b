//! Valohai conditions reading their token and timestamp from a header, the query string, a
//! form body or a JSON body, configured the way an operator does it (a TOML table, so only
//! configurations the loader accepts are run), against an arbitrary request.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tower_webhooks::scheme::Valohai;
use tower_webhooks::SecretSet;
use tower_webhooks_fuzz::{verify, Frames, Head};

#[derive(Arbitrary, Debug)]
enum Namespace {
    Header,
    Querystring,
    UrlencodedBody,
    JsonBody,
}

impl Namespace {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Querystring => "querystring",
            Self::UrlencodedBody => "urlencoded_body",
            Self::JsonBody => "json_body",
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Auth {
    StaticToken,
    /// HMAC with an arbitrary basestring template (`{body}`, `{header:Name}`, text).
    Hmac {
        basestring: String,
        base64: bool,
    },
}

#[derive(Arbitrary, Debug)]
struct Lookup {
    namespace: Namespace,
    key: String,
    prefix: String,
}

#[derive(Arbitrary, Debug)]
struct Input {
    auth: Auth,
    token: Lookup,
    timestamp: Option<(Lookup, u32)>,
    rate_limit: bool,
    secret: String,
    head: Head,
    frames: Frames,
    now: i64,
}

/// A TOML basic string (escaped by the `toml` crate itself).
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn lookup(lookup: &Lookup) -> String {
    format!(
        "lookup_namespace = \"{}\"\nlookup_key = {}\nvalue_prefix = {}\n",
        lookup.namespace.as_str(),
        quoted(&lookup.key),
        quoted(&lookup.prefix)
    )
}

fn config(input: &Input) -> String {
    let mut toml = String::from("[[conditions]]\ntype = \"web_authentication\"\n");
    match &input.auth {
        Auth::StaticToken => toml.push_str("auth_type = \"static_token\"\n"),
        Auth::Hmac { basestring, base64 } => {
            toml.push_str("auth_type = \"hmac\"\n");
            toml.push_str(&format!("basestring = {}\n", quoted(basestring)));
            if *base64 {
                toml.push_str("encoding = \"base64\"\n");
            }
        }
    }
    toml.push_str(&lookup(&input.token));
    if let Some((timestamp, tolerance)) = &input.timestamp {
        toml.push_str("[[conditions]]\ntype = \"web_timestamp\"\n");
        toml.push_str(&lookup(timestamp));
        toml.push_str(&format!("tolerance = {tolerance}\n"));
    }
    if input.rate_limit {
        toml.push_str("[[conditions]]\ntype = \"rate_limit\"\nperiod = 60\nquota = 1000\n");
    }
    toml
}

fuzz_target!(|input: Input| {
    let Ok(trigger) = toml::from_str::<Valohai>(&config(&input)) else {
        return;
    };
    let secrets = SecretSet::from(input.secret.as_str());
    let head = input.head.parts();
    let _ = verify(&trigger, &head, &secrets, input.now, &input.frames);
});
