//! The Valohai JWT condition: arbitrary tokens, and tokens built from arbitrary JOSE headers
//! and claims (numeric dates of every JSON type, `alg` confusion, `crit`), signed correctly
//! for the HMAC algorithms so the claim checks behind the signature are reached too.

#![no_main]

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use arbitrary::Arbitrary;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{HeaderValue, Request};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use tower_webhooks::scheme::Valohai;
use tower_webhooks::SecretSet;
use tower_webhooks_fuzz::{verify, Frames};

const SECRET: &str = "fuzz-jwt-secret";

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Algorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    ES256,
}

#[derive(Arbitrary, Debug)]
enum Key {
    Alg,
    Typ,
    Exp,
    Nbf,
    Iat,
    Kid,
    Crit,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Claim {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Algorithm(Algorithm),
    None,
    List(Vec<String>),
    Object(Vec<(String, i64)>),
}

#[derive(Arbitrary, Debug)]
enum Segment {
    Raw(Vec<u8>),
    Object(Vec<(Key, Claim)>),
}

#[derive(Arbitrary, Debug)]
enum Signature {
    /// The right MAC for an HMAC condition (the right bytes' length otherwise).
    Valid,
    Raw(Vec<u8>),
    Missing,
}

#[derive(Arbitrary, Debug)]
enum Token {
    Raw(String),
    Built {
        header: Segment,
        claims: Segment,
        signature: Signature,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Leeway {
    None,
    Default,
    TenMinutes,
}

#[derive(Arbitrary, Debug)]
struct Input {
    algorithm: Algorithm,
    leeway: Leeway,
    prefix: bool,
    token: Token,
    now: i64,
    body: Frames,
}

fn name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
    }
}

/// One trigger per configuration, loaded once (PEM keys from the test vectors for RS256 and
/// ES256): the TOML loader has its own target.
fn trigger(algorithm: Algorithm, leeway: Leeway, prefix: bool) -> Valohai {
    static TRIGGERS: OnceLock<Mutex<HashMap<(Algorithm, Leeway, bool), Valohai>>> = OnceLock::new();
    let mut triggers = TRIGGERS.get_or_init(Default::default).lock().unwrap();
    triggers
        .entry((algorithm, leeway, prefix))
        .or_insert_with(|| load(algorithm, leeway, prefix))
        .clone()
}

fn load(algorithm: Algorithm, leeway: Leeway, prefix: bool) -> Valohai {
    static VECTORS: OnceLock<Value> = OnceLock::new();
    let vectors = VECTORS.get_or_init(|| {
        serde_json::from_str(include_str!("../../tests/fixtures/valohai_vectors.json"))
            .expect("the Valohai vectors are JSON")
    });
    let secret = match algorithm {
        Algorithm::RS256 => vectors["rsa_public_pem"].as_str().unwrap(),
        Algorithm::ES256 => vectors["ec_public_pem"].as_str().unwrap(),
        _ => SECRET,
    };
    let leeway = match leeway {
        Leeway::None => 0,
        Leeway::Default => 5,
        Leeway::TenMinutes => 600,
    };
    let toml = format!(
        "[[conditions]]\ntype = \"web_authentication\"\nauth_type = \"jwt\"\n\
         lookup_key = \"Authorization\"\nalgorithm = \"{}\"\nleeway = {leeway}\n\
         value_prefix = \"{}\"\nsecret = '''{secret}'''\n",
        name(algorithm),
        if prefix { "Bearer " } else { "" },
    );
    toml::from_str(&toml).expect("the JWT trigger configuration loads")
}

fn claim(claim: &Claim) -> Value {
    match claim {
        Claim::Null => Value::Null,
        Claim::Bool(b) => json!(b),
        Claim::Int(n) => json!(n),
        Claim::Float(x) => json!(x),
        Claim::Text(s) => json!(s),
        Claim::Algorithm(a) => json!(name(*a)),
        Claim::None => json!("none"),
        Claim::List(items) => json!(items),
        Claim::Object(fields) => {
            Value::Object(fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
        }
    }
}

fn segment(segment: &Segment) -> Vec<u8> {
    match segment {
        Segment::Raw(bytes) => bytes.clone(),
        Segment::Object(fields) => {
            let mut object = Map::new();
            for (key, value) in fields {
                let key = match key {
                    Key::Alg => "alg",
                    Key::Typ => "typ",
                    Key::Exp => "exp",
                    Key::Nbf => "nbf",
                    Key::Iat => "iat",
                    Key::Kid => "kid",
                    Key::Crit => "crit",
                    Key::Other(other) => other,
                };
                object.insert(key.to_owned(), claim(value));
            }
            serde_json::to_vec(&Value::Object(object)).unwrap()
        }
    }
}

fn mac(algorithm: Algorithm, signed: &[u8]) -> Vec<u8> {
    fn compute<M: Mac + hmac::digest::KeyInit>(signed: &[u8]) -> Vec<u8> {
        let mut mac = <M as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(signed);
        mac.finalize().into_bytes().to_vec()
    }
    match algorithm {
        Algorithm::HS256 => compute::<Hmac<sha2::Sha256>>(signed),
        Algorithm::HS384 => compute::<Hmac<sha2::Sha384>>(signed),
        Algorithm::HS512 => compute::<Hmac<sha2::Sha512>>(signed),
        Algorithm::RS256 => vec![0x5a; 256],
        Algorithm::ES256 => vec![0x5a; 64],
    }
}

fn token(input: &Input) -> String {
    match &input.token {
        Token::Raw(text) => text.clone(),
        Token::Built {
            header,
            claims,
            signature,
        } => {
            let mut token = URL_SAFE_NO_PAD.encode(segment(header));
            token.push('.');
            token.push_str(&URL_SAFE_NO_PAD.encode(segment(claims)));
            let signature = match signature {
                Signature::Valid => mac(input.algorithm, token.as_bytes()),
                Signature::Raw(bytes) => bytes.clone(),
                Signature::Missing => return token,
            };
            token.push('.');
            token.push_str(&URL_SAFE_NO_PAD.encode(signature));
            token
        }
    }
}

fuzz_target!(|input: Input| {
    let trigger = trigger(input.algorithm, input.leeway, input.prefix);
    let mut value = token(&input);
    if input.prefix {
        value.insert_str(0, "Bearer ");
    }
    let Ok(value) = HeaderValue::from_str(&value) else {
        return;
    };
    let (head, ()) = Request::post("/hooks/valohai")
        .header("authorization", value)
        .body(())
        .unwrap()
        .into_parts();
    let _ = verify(&trigger, &head, &SecretSet::new(), input.now, &input.body);
});
