//! Valohai tests against vectors made by Valohai's documented Python snippets
//! (`tests/fixtures/make_valohai_vectors.py`).

use std::sync::OnceLock;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use serde_json::Value;

use super::*;
use crate::scheme::mac::{Algorithm, Encoding};
use crate::scheme::{Verification, VerifyErrorKind};
use crate::Secret;

fn vectors() -> &'static Value {
    static VECTORS: OnceLock<Value> = OnceLock::new();
    VECTORS.get_or_init(|| {
        serde_json::from_str(include_str!("../../../tests/fixtures/valohai_vectors.json"))
            .expect("valid fixture")
    })
}

fn text(name: &str) -> &'static str {
    vectors()[name]
        .as_str()
        .unwrap_or_else(|| panic!("fixture `{name}`"))
}

fn token() -> &'static str {
    text("webhook_token")
}

fn ts() -> i64 {
    vectors()["timestamp"].as_i64().unwrap()
}

fn now() -> i64 {
    vectors()["now"].as_i64().unwrap()
}

/// A request carrying vector `name`'s headers, query string and body.
struct Vector {
    head: RequestHead,
    body: Vec<u8>,
}

fn vector(name: &str) -> Vector {
    let v = &vectors()[name];
    assert!(v.is_object(), "fixture `{name}`");
    let uri = match v["query"].as_str() {
        Some(query) => format!("/api/v0/launch/0190fe82/?{query}"),
        None => "/api/v0/launch/0190fe82/".to_owned(),
    };
    let mut request = Request::post(uri);
    if let Some(headers) = v["headers"].as_object() {
        for (name, value) in headers {
            request = request.header(name, value.as_str().unwrap());
        }
    }
    let body = match (v["body"].as_str(), v["body_base64"].as_str()) {
        (Some(body), _) => body.as_bytes().to_vec(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
        (None, None) => Vec::new(),
    };
    Vector {
        head: request.body(()).unwrap().into_parts().0,
        body,
    }
}

impl Vector {
    fn header(&self, name: &str) -> &str {
        self.head.headers[name].to_str().unwrap()
    }

    fn set_header(mut self, name: &'static str, value: &str) -> Self {
        self.head.headers.insert(name, value.parse().unwrap());
        self
    }

    fn remove_header(mut self, name: &str) -> Self {
        self.head.headers.remove(name);
        self
    }

    fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }
}

/// Runs a whole verification, feeding the body in small frames.
fn run(
    scheme: &Valohai,
    request: &Vector,
    secrets: impl Into<SecretSet>,
    now: i64,
) -> Result<Verified, VerifyError> {
    let mut verification = scheme.begin(&request.head, &secrets.into(), now)?;
    for frame in request.body.chunks(7) {
        verification.update(frame);
    }
    let verified = verification.finish(&Bytes::from(request.body.clone()))?;
    // As the layer does for a request that is not a duplicate.
    scheme.admit(&verified, now)?;
    Ok(verified)
}

fn kind(result: Result<Verified, VerifyError>) -> VerifyErrorKind {
    result.expect_err("the request must be refused").kind()
}

fn scheme(toml: &str) -> Valohai {
    toml::from_str(toml).unwrap_or_else(|err| panic!("{err}\n{toml}"))
}

fn config_error(toml: &str) -> String {
    toml::from_str::<Valohai>(toml)
        .expect_err("the configuration must be refused")
        .to_string()
}

/// One `web_authentication` condition read from the given keys.
fn auth(keys: &str) -> Valohai {
    scheme(&format!(
        "[[conditions]]\ntype = \"web_authentication\"\n{keys}"
    ))
}

fn no_secrets() -> SecretSet {
    SecretSet::new()
}

// ---- static token ------------------------------------------------------------------------

#[test]
fn static_token_in_a_header_seed_example() {
    let trigger = auth("auth_type = \"static_token\"\nlookup_key = \"Authorization\"");
    let request = vector("static_header");
    let verified = run(&trigger, &request, token(), now()).unwrap();
    assert_eq!(verified.scheme, "valohai");
    assert_eq!(verified.secret.as_ref().unwrap().index, 0);
    assert_eq!(verified.replay_key(), None, "a static token signs nothing");
    assert_eq!(verified.timestamp, None);
    assert_eq!(verified.run_id.to_string().len(), 36);

    // Rotation: any configured secret may match, and the metadata says which.
    let rotation = SecretSet::new()
        .add_secret(Secret::new("old-token").with_id("2025"))
        .add_secret(Secret::new(token()).with_id("2026"));
    let verified = run(&trigger, &request, rotation, now()).unwrap();
    let matched = verified.secret.unwrap();
    assert_eq!((matched.index, matched.id.as_deref()), (1, Some("2026")));

    assert_eq!(
        kind(run(&trigger, &request, "wrong-token", now())),
        VerifyErrorKind::InvalidSignature
    );
    let shorter = &token()[..token().len() - 1];
    assert_eq!(
        kind(run(&trigger, &request, shorter, now())),
        VerifyErrorKind::InvalidSignature
    );
    let missing = vector("static_header").remove_header("authorization");
    assert_eq!(
        kind(run(&trigger, &missing, token(), now())),
        VerifyErrorKind::MissingHeader
    );
    assert_eq!(
        kind(run(&trigger, &request, no_secrets(), now())),
        VerifyErrorKind::NoSecret
    );
}

#[test]
fn static_token_with_a_value_prefix() {
    let trigger = auth(
        "auth_type = \"static_token\"\nlookup_key = \"Authorization\"\nvalue_prefix = \"secret=\"",
    );
    run(&trigger, &vector("static_prefixed"), token(), now()).unwrap();
    // The prefix is cut exactly: a bare token (or another prefix) fails.
    let err = run(&trigger, &vector("static_header"), token(), now()).unwrap_err();
    assert_eq!(err.kind(), VerifyErrorKind::MalformedHeader);
    assert!(!err.detail().contains(token()), "{err}");
    let other =
        vector("static_prefixed").set_header("authorization", &format!("Secret={}", token()));
    assert_eq!(
        kind(run(&trigger, &other, token(), now())),
        VerifyErrorKind::MalformedHeader
    );
}

#[test]
fn static_token_in_the_body_and_the_query_string() {
    let secret = vectors()["static_urlencoded_body"]["secret"]
        .as_str()
        .unwrap();
    let form = auth(&format!(
        "auth_type = \"static_token\"\nlookup_namespace = \"urlencoded_body\"\n\
         lookup_key = \"token\"\nsecret = \"{secret}\""
    ));
    let request = vector("static_urlencoded_body");
    // The condition's own secret wins over the verifier's (which are empty here).
    run(&form, &request, no_secrets(), now()).unwrap();
    let tampered =
        vector("static_urlencoded_body").body(b"token=pat_842717_0000&event_type=new_data");
    assert_eq!(
        kind(run(&form, &tampered, no_secrets(), now())),
        VerifyErrorKind::InvalidSignature
    );
    // A list of secrets in the condition: any one matches (rotation), and we learn which.
    let rotated = auth(&format!(
        "auth_type = \"static_token\"\nlookup_namespace = \"urlencoded_body\"\n\
         lookup_key = \"token\"\nsecret = [\"pat_old\", \"{secret}\"]"
    ));
    let verified = run(&rotated, &request, token(), now()).unwrap();
    assert_eq!(verified.secret.unwrap().index, 1);
    let missing = vector("static_urlencoded_body").body(b"event_type=new_data");
    assert_eq!(
        kind(run(&form, &missing, no_secrets(), now())),
        VerifyErrorKind::MissingHeader
    );

    let query = auth(
        "auth_type = \"static_token\"\nlookup_namespace = \"querystring\"\nlookup_key = \"token\"",
    );
    run(&query, &vector("static_querystring"), token(), now()).unwrap();
    assert_eq!(
        kind(run(&query, &vector("static_header"), token(), now())),
        VerifyErrorKind::MissingHeader
    );

    let json = auth(
        "auth_type = \"static_token\"\nlookup_namespace = \"json_body\"\nlookup_key = \"token\"",
    );
    let request = vector("static_json_body");
    run(&json, &request, token(), now()).unwrap();
    // Only the top-level key counts, not `data.token`.
    assert_eq!(
        kind(run(&json, &request, "nested", now())),
        VerifyErrorKind::InvalidSignature
    );
    let not_json = vector("static_json_body").body(vector("static_header").body.as_slice());
    assert_eq!(
        kind(run(&json, &not_json, token(), now())),
        VerifyErrorKind::MalformedHeader
    );
}

#[test]
fn timestamp_and_token_in_a_json_body() {
    let trigger = scheme(
        r#"
        [[conditions]]
        type = "web_authentication"
        auth_type = "static_token"
        lookup_namespace = "json_body"
        lookup_key = "token"
        [[conditions]]
        type = "web_timestamp"
        lookup_namespace = "json_body"
        lookup_key = "ts"
        tolerance = 60
        "#,
    );
    let request = vector("static_json_body");
    let verified = run(&trigger, &request, token(), now()).unwrap();
    assert_eq!(verified.timestamp, Some(ts()));
    assert_eq!(
        kind(run(&trigger, &request, token(), ts() + 61)),
        VerifyErrorKind::TimestampTooOld
    );
    let float = vector("static_json_body")
        .body(format!(r#"{{"token": "{}", "ts": {}.5}}"#, token(), ts()).as_bytes());
    assert_eq!(
        kind(run(&trigger, &float, token(), now())),
        VerifyErrorKind::MalformedHeader
    );
}

// ---- HMAC --------------------------------------------------------------------------------

#[test]
fn hmac_over_the_body_seed_example() {
    std::env::set_var("TW_VALOHAI_TEST_TOKEN", token());
    let trigger = auth(
        "auth_type = \"hmac\"\nlookup_key = \"Authorization\"\nsecret = \"{env:TW_VALOHAI_TEST_TOKEN}\"\nalgorithm = \"sha256\"",
    );
    let request = vector("hmac_body");
    let verified = run(&trigger, &request, no_secrets(), now()).unwrap();
    assert_eq!(
        verified.replay_key().unwrap(),
        format!("valohai:{}", request.header("authorization"))
    );

    let tampered = vector("hmac_body").body(b"hello=valohai&prompt=draw+me+a+whale");
    let err = run(&trigger, &tampered, no_secrets(), now()).unwrap_err();
    assert_eq!(err.kind(), VerifyErrorKind::InvalidSignature);
    let expected = hex::encode(compute(
        Algorithm::Sha256,
        token().as_bytes(),
        &[&tampered.body],
    ));
    assert!(!err.detail().contains(&expected) && !err.detail().contains(token()));

    let verifier_secret = auth("auth_type = \"hmac\"\nlookup_key = \"Authorization\"");
    assert_eq!(
        kind(run(&verifier_secret, &request, "another-secret", now())),
        VerifyErrorKind::InvalidSignature
    );
    let not_hex = vector("hmac_body").set_header("authorization", "zz");
    assert_eq!(
        kind(run(&verifier_secret, &not_hex, token(), now())),
        VerifyErrorKind::MalformedHeader
    );
    let upper = vector("hmac_body").set_header(
        "authorization",
        &request.header("authorization").to_ascii_uppercase(),
    );
    run(&verifier_secret, &upper, token(), now()).unwrap();
}

#[test]
fn hmac_digests_and_encodings() {
    let sha1 = auth("auth_type = \"hmac\"\nlookup_key = \"Authorization\"\nalgorithm = \"SHA1\"");
    run(&sha1, &vector("hmac_body_sha1"), token(), now()).unwrap();
    assert_eq!(
        kind(run(&sha1, &vector("hmac_body"), token(), now())),
        VerifyErrorKind::InvalidSignature
    );
    let sha512 = auth(
        "auth_type = \"hmac\"\nlookup_key = \"Authorization\"\nalgorithm = \"sha512\"\nencoding = \"base64\"",
    );
    run(&sha512, &vector("hmac_body_sha512_base64"), token(), now()).unwrap();
}

#[test]
fn hmac_over_a_header_template_with_a_prefix() {
    let trigger = auth(
        r#"auth_type = "hmac"
        lookup_key = "X-Hmac-Signature"
        value_prefix = "v0="
        basestring = "hmac:{header:X-Hmac-Timestamp}:{body}""#,
    );
    let request = vector("hmac_header_template");
    assert!(std::str::from_utf8(&request.body).unwrap().contains('🦈'));
    run(&trigger, &request, token(), now()).unwrap();

    let missing = vector("hmac_header_template").remove_header("x-hmac-timestamp");
    let err = run(&trigger, &missing, token(), now()).unwrap_err();
    assert_eq!(err.kind(), VerifyErrorKind::MissingHeader);
    assert_eq!(err.detail(), "missing `x-hmac-timestamp` header");

    let other_ts = vector("hmac_header_template").set_header("x-hmac-timestamp", "1731381206");
    assert_eq!(
        kind(run(&trigger, &other_ts, token(), now())),
        VerifyErrorKind::InvalidSignature
    );
    let signature = request.header("x-hmac-signature");
    let wrong_prefix = vector("hmac_header_template")
        .set_header("x-hmac-signature", &signature.replace("v0=", "v1="));
    assert_eq!(
        kind(run(&trigger, &wrong_prefix, token(), now())),
        VerifyErrorKind::MalformedHeader
    );
    let no_signature = vector("hmac_header_template").remove_header("x-hmac-signature");
    assert_eq!(
        kind(run(&trigger, &no_signature, token(), now())),
        VerifyErrorKind::MissingHeader
    );
}

#[test]
fn hmac_with_a_web_timestamp_seed_example() {
    let trigger = scheme(
        r#"
        [[conditions]]
        type = "web_authentication"
        auth_type = "hmac"
        lookup_namespace = "header"
        lookup_key = "Authorization"
        basestring = "prefix.{body}.{header:Request-Timestamp}"
        algorithm = "sha256"

        [[conditions]]
        type = "web_timestamp"
        lookup_namespace = "header"
        lookup_key = "Request-Timestamp"
        tolerance = 60
        "#,
    );
    let request = vector("hmac_timestamp");
    let verified = run(&trigger, &request, token(), now()).unwrap();
    assert_eq!(verified.timestamp, Some(ts()));
    assert!(verified.replay_key().unwrap().starts_with("valohai:"));

    // Drift tolerance, both ways, edges included.
    run(&trigger, &request, token(), ts() + 60).unwrap();
    run(&trigger, &request, token(), ts() - 60).unwrap();
    assert_eq!(
        kind(run(&trigger, &request, token(), ts() + 61)),
        VerifyErrorKind::TimestampTooOld
    );
    assert_eq!(
        kind(run(&trigger, &request, token(), ts() - 61)),
        VerifyErrorKind::TimestampInFuture
    );
    for bad in [
        "+1731381205",
        "1731381205.0",
        "-1",
        "99999999999999999999",
        " 1731381205",
    ] {
        let malformed = vector("hmac_timestamp").set_header("request-timestamp", bad);
        assert_eq!(
            kind(run(&trigger, &malformed, token(), now())),
            VerifyErrorKind::MalformedHeader,
            "{bad}"
        );
    }
    // Extreme clocks do not overflow.
    assert!(run(&trigger, &request, token(), i64::MIN).is_err());
    assert!(run(&trigger, &request, token(), i64::MAX).is_err());
    // The timestamp is signed: moving it (within the window) breaks the MAC.
    let moved = vector("hmac_timestamp").set_header("request-timestamp", &(ts() + 1).to_string());
    assert_eq!(
        kind(run(&trigger, &moved, token(), now())),
        VerifyErrorKind::InvalidSignature
    );
    let tampered = vector("hmac_timestamp").body(b"hello=valohai&prompt=draw+me+a+shark&x=1");
    assert_eq!(
        kind(run(&trigger, &tampered, token(), now())),
        VerifyErrorKind::InvalidSignature
    );
}

#[test]
fn hmac_streams_any_bytes_and_templates_without_body() {
    let trigger = auth("auth_type = \"hmac\"\nlookup_key = \"Authorization\"");
    let request = vector("hmac_binary_body");
    assert!(std::str::from_utf8(&request.body).is_err());
    run(&trigger, &request, token(), now()).unwrap();

    // No `{body}`: everything is prefix, the body is not covered.
    let header_only = auth(
        "auth_type = \"hmac\"\nlookup_key = \"Authorization\"\nbasestring = \"ts={header:X-Ts}\"",
    );
    let mac = hex::encode(compute(Algorithm::Sha256, token().as_bytes(), &[b"ts=17"]));
    let request = vector("hmac_body")
        .set_header("authorization", &mac)
        .set_header("x-ts", "17");
    run(&header_only, &request, token(), now()).unwrap();
    run(&header_only, &request.body(b"anything"), token(), now()).unwrap();
}

#[test]
fn hmac_signature_in_the_body() {
    // The MAC is still streamed; the candidate is read from the body at the end.
    let trigger = auth(
        "auth_type = \"hmac\"\nlookup_namespace = \"querystring\"\nlookup_key = \"sig\"\n\
         basestring = \"{header:X-Ts}\"",
    );
    let mac = hex::encode(compute(Algorithm::Sha256, token().as_bytes(), &[b"42"]));
    let mut request = vector("hmac_body").set_header("x-ts", "42");
    request.head.uri = format!("/launch/?sig={mac}").parse().unwrap();
    run(&trigger, &request, token(), now()).unwrap();

    let in_json = auth(
        "auth_type = \"hmac\"\nlookup_namespace = \"json_body\"\nlookup_key = \"sig\"\n\
         basestring = \"{header:X-Ts}\"",
    );
    let request = vector("hmac_body")
        .set_header("x-ts", "42")
        .body(format!(r#"{{"sig": "{mac}"}}"#).as_bytes());
    run(&in_json, &request, token(), now()).unwrap();
    assert_eq!(
        kind(run(
            &in_json,
            &request.body(br#"{"sig": "00"}"#),
            token(),
            now()
        )),
        VerifyErrorKind::InvalidSignature
    );
}

// ---- JWT ---------------------------------------------------------------------------------

#[cfg(feature = "jwt")]
mod jwt_conditions {
    use super::*;

    fn hs256() -> Valohai {
        auth("auth_type = \"jwt\"\nlookup_key = \"Authorization\"\nalgorithm = \"HS256\"")
    }

    #[test]
    fn hs256_with_exp_in_the_jose_header_seed_example() {
        let request = vector("jwt_hs256");
        // `jsonwebtoken`'s own header type refuses PyJWT's numeric header `exp`, which is why
        // the token is parsed by hand.
        assert!(jsonwebtoken::decode_header(request.header("authorization")).is_err());

        let verified = run(&hs256(), &request, token(), now()).unwrap();
        assert!(verified.replay_key().unwrap().starts_with("valohai:"));
        assert_eq!(verified.secret.unwrap().index, 0);
        // Header `exp` = ts + 60, leeway 5 s.
        run(&hs256(), &request, token(), ts() + 65).unwrap();
        assert_eq!(
            kind(run(&hs256(), &request, token(), ts() + 66)),
            VerifyErrorKind::TimestampTooOld
        );
        assert_eq!(
            kind(run(
                &hs256(),
                &request,
                "another-secret-of-some-length",
                now()
            )),
            VerifyErrorKind::InvalidSignature
        );
        let token_text = request.header("authorization");
        let (signing_input, _) = token_text.rsplit_once('.').unwrap();
        let forged = vector("jwt_hs256").set_header(
            "authorization",
            &format!("{signing_input}.{}", "A".repeat(43)),
        );
        assert_eq!(
            kind(run(&hs256(), &forged, token(), now())),
            VerifyErrorKind::InvalidSignature
        );
        for garbage in ["", "abc", "a.b", "a.b.c.d", "JWT x.y.z"] {
            let request = vector("jwt_hs256").set_header("authorization", garbage);
            assert_eq!(
                kind(run(&hs256(), &request, token(), now())),
                VerifyErrorKind::MalformedHeader,
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn hs256_with_a_jwt_prefix() {
        let trigger =
            auth("auth_type = \"jwt\"\nlookup_key = \"Authorization\"\nvalue_prefix = \"JWT \"");
        let request = vector("jwt_hs256_prefixed");
        run(&trigger, &request, token(), now()).unwrap();
        // Claims `exp` = ts + 60.
        assert_eq!(
            kind(run(&trigger, &request, token(), ts() + 66)),
            VerifyErrorKind::TimestampTooOld
        );
        assert_eq!(
            kind(run(&hs256(), &request, token(), now())),
            VerifyErrorKind::MalformedHeader
        );
        let bare = vector("jwt_hs256");
        assert_eq!(
            kind(run(&trigger, &bare, token(), now())),
            VerifyErrorKind::MalformedHeader
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        for name in ["jwt_expired_header", "jwt_expired_claims"] {
            let err = run(&hs256(), &vector(name), token(), now()).unwrap_err();
            assert_eq!(err.kind(), VerifyErrorKind::TimestampTooOld, "{name}");
            assert_eq!(err.detail(), "JWT has expired");
        }
        // A larger leeway accepts them (exp = ts - 540, now = ts + 10).
        let lenient = auth("auth_type = \"jwt\"\nlookup_key = \"Authorization\"\nleeway = 600");
        run(&lenient, &vector("jwt_expired_claims"), token(), now()).unwrap();
    }

    #[test]
    fn rs256_and_es256_with_pem_public_keys() {
        let rs256 = auth(&format!(
            "auth_type = \"jwt\"\nlookup_key = \"Authorization\"\nalgorithm = \"RS256\"\n\
             secret = '''{}'''",
            text("rsa_public_pem")
        ));
        let verified = run(&rs256, &vector("jwt_rs256"), no_secrets(), now()).unwrap();
        assert_eq!(verified.secret.unwrap().index, 0);
        assert_eq!(
            kind(run(&rs256, &vector("jwt_rs256"), no_secrets(), ts() + 66)),
            VerifyErrorKind::TimestampTooOld
        );
        // Secrets from the verifier work too.
        let verifier_key =
            auth("auth_type = \"jwt\"\nlookup_key = \"Authorization\"\nalgorithm = \"RS256\"");
        run(
            &verifier_key,
            &vector("jwt_rs256"),
            text("rsa_public_pem"),
            now(),
        )
        .unwrap();
        assert_eq!(
            kind(run(
                &verifier_key,
                &vector("jwt_rs256"),
                text("ec_public_pem"),
                now()
            )),
            VerifyErrorKind::NoSecret
        );

        let es256 =
            auth("auth_type = \"jwt\"\nlookup_key = \"Authorization\"\nalgorithm = \"ES256\"");
        run(&es256, &vector("jwt_es256"), text("ec_public_pem"), now()).unwrap();
        assert_eq!(
            kind(run(
                &es256,
                &vector("jwt_rs256"),
                text("ec_public_pem"),
                now()
            )),
            VerifyErrorKind::InvalidSignature
        );
    }

    #[test]
    fn no_algorithm_confusion() {
        let rs256 = auth(&format!(
            "auth_type = \"jwt\"\nlookup_key = \"Authorization\"\nalgorithm = \"RS256\"\n\
             secret = '''{}'''",
            text("rsa_public_pem")
        ));
        // An HS256 token keyed with the public key text, against an RS256 condition.
        let confused = vector("jwt_hs256_with_public_pem");
        assert_eq!(
            kind(run(&rs256, &confused, no_secrets(), now())),
            VerifyErrorKind::InvalidSignature
        );
        // A genuine HS256 token against an RS256 condition.
        assert_eq!(
            kind(run(&rs256, &vector("jwt_hs256"), no_secrets(), now())),
            VerifyErrorKind::InvalidSignature
        );
        // An RS256 token against an HS256 condition.
        assert_eq!(
            kind(run(&hs256(), &vector("jwt_rs256"), token(), now())),
            VerifyErrorKind::InvalidSignature
        );
        // `alg: none`, unsigned.
        let none = vector("jwt_alg_none");
        assert!(none.header("authorization").ends_with('.'));
        for trigger in [&hs256(), &rs256] {
            assert_eq!(
                kind(run(trigger, &none, token(), now())),
                VerifyErrorKind::InvalidSignature
            );
        }
    }
}

// ---- rate limits, modes, responses --------------------------------------------------------

#[test]
fn rate_limits_count_only_accepted_launches() {
    // The token is in the body, so it is checked at `finish`, right before the limits.
    let trigger = scheme(
        r#"
        [[conditions]]
        type = "rate_limit"
        period = 60
        quota = 2
        [[conditions]]
        type = "rate_limit"
        period = 3600
        quota = 3
        [[conditions]]
        type = "web_authentication"
        auth_type = "static_token"
        lookup_namespace = "json_body"
        lookup_key = "token"
        "#,
    );
    let clone = trigger.clone();
    let request = vector("static_json_body");
    let t = 1_000_000;
    // Bad requests neither pass nor use up the quota.
    for _ in 0..5 {
        assert_eq!(
            kind(run(&trigger, &request, "wrong", t)),
            VerifyErrorKind::InvalidSignature
        );
    }
    run(&trigger, &request, token(), t).unwrap();
    // Clones share the launch log.
    run(&clone, &request, token(), t + 1).unwrap();
    let err = run(&trigger, &request, token(), t + 2).unwrap_err();
    assert_eq!(err.kind(), VerifyErrorKind::RateLimited);
    assert_eq!(err.detail(), "rate limit of 2 launches per 60 s reached");
    // The 60 s window has room again at t + 61 (t and t + 1 left it)…
    run(&trigger, &request, token(), t + 61).unwrap();
    // …but that was the hourly limit's third and last launch.
    let err = run(&clone, &request, token(), t + 122).unwrap_err();
    assert_eq!(err.detail(), "rate limit of 3 launches per 3600 s reached");
    // A refusal by the hourly limit did not count in the 60 s one either.
    let Condition::RateLimit(short) = &trigger.conditions()[0] else {
        panic!("{trigger:?}")
    };
    assert_eq!(short.remaining(t + 122), 2);
    run(&trigger, &request, token(), t + 3601).unwrap();

    // Rate limiting in compatible mode still answers 400.
    assert_eq!(
        trigger.uniform_rejection_status(),
        Some(StatusCode::BAD_REQUEST)
    );
}

#[test]
fn compatible_mode_answers_every_rejection_with_400() {
    assert_eq!(
        Valohai::new().uniform_rejection_status(),
        Some(StatusCode::BAD_REQUEST)
    );
    let default = auth("auth_type = \"static_token\"\nlookup_key = \"Authorization\"");
    assert!(default.is_compatible());
    assert_eq!(
        default.uniform_rejection_status(),
        Some(StatusCode::BAD_REQUEST)
    );
    let strict = scheme("compatible = false");
    assert_eq!(strict.uniform_rejection_status(), None);
    assert_eq!(
        Valohai::new().compatible(false).uniform_rejection_status(),
        None
    );
}

#[test]
fn success_responses() {
    let default = Valohai::new().success_response("r-1").unwrap();
    assert_eq!(
        (default.content_type, default.body.as_str()),
        ("text/plain", "ok")
    );

    let text = scheme("[response]\ntext = \"Created run {run_id}\"");
    let response = text.success_response("r-1").unwrap();
    assert_eq!(
        (response.content_type, response.body.as_str()),
        ("text/plain", "Created run r-1")
    );

    let json = scheme(
        r#"
        [response.json]
        status = "success"
        run_id = "{run_id}"
        count = 3
        nested = { ref = "run {run_id}", list = ["{run_id}", 1] }
        "{run_id}" = "key untouched"
        "#,
    );
    let response = json.success_response("r-1").unwrap();
    assert_eq!(response.content_type, "application/json");
    let body: Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "status": "success", "run_id": "r-1", "count": 3,
            "nested": {"ref": "run r-1", "list": ["r-1", 1]},
            "{run_id}": "key untouched",
        })
    );

    // Only the first response action counts.
    let many = scheme("[[response]]\ntext = \"first {run_id}\"\n[[response]]\ntext = \"second\"");
    assert_eq!(many.success_response("x").unwrap().body, "first x");
}

// ---- signing ------------------------------------------------------------------------------

fn sign_then_verify(trigger: &Valohai, signing: SecretSet, verifying: SecretSet) -> Verified {
    let body = b"hello=valohai&prompt=draw+me+a+shark";
    let mut headers = HeaderMap::new();
    trigger
        .sign(&Message::new("unused", ts(), body), &signing, &mut headers)
        .unwrap();
    let mut request = Request::post("/launch/").body(()).unwrap();
    *request.headers_mut() = headers;
    let request = Vector {
        head: request.into_parts().0,
        body: body.to_vec(),
    };
    let verified = run(trigger, &request, verifying.clone(), now()).unwrap();
    let tampered = Vector {
        head: request.head.clone(),
        body: b"hello=valohai&prompt=draw+me+a+whale".to_vec(),
    };
    let covers_body = trigger.conditions().iter().any(|condition| {
        matches!(condition, Condition::WebAuthentication(WebAuthentication { auth: AuthType::Hmac { basestring, .. }, .. }) if basestring.contains_body())
    });
    if covers_body {
        assert_eq!(
            kind(run(trigger, &tampered, verifying, now())),
            VerifyErrorKind::InvalidSignature
        );
    }
    verified
}

#[test]
fn sign_then_verify_static_token_and_hmac() {
    let static_token = Valohai::new().condition(WebAuthentication::static_token(
        Lookup::header("Authorization").prefix("secret="),
    ));
    sign_then_verify(&static_token, token().into(), token().into());

    let hmac = Valohai::new()
        .condition(WebAuthentication::hmac(
            Lookup::header("Authorization"),
            "prefix.{body}.{header:Request-Timestamp}".parse().unwrap(),
        ))
        .condition(WebTimestamp::new(Lookup::header("Request-Timestamp"), 60));
    let verified = sign_then_verify(&hmac, token().into(), token().into());
    assert_eq!(verified.timestamp, Some(ts()));

    // The signer reproduces the documented example's vector byte for byte.
    let mut headers = HeaderMap::new();
    let body = vector("hmac_timestamp").body;
    hmac.sign(
        &Message::new("x", ts(), &body),
        &token().into(),
        &mut headers,
    )
    .unwrap();
    let seed = vector("hmac_timestamp");
    assert_eq!(headers["authorization"], seed.header("authorization"));
    assert_eq!(
        headers["request-timestamp"],
        seed.header("request-timestamp")
    );
    assert!(headers["authorization"].is_sensitive());

    let slack_like = Valohai::new()
        .condition(WebAuthentication::new(
            AuthType::Hmac {
                algorithm: Algorithm::Sha512,
                basestring: "v0:{header:X-Ts}:{body}".parse().unwrap(),
                encoding: Encoding::Base64,
            },
            Lookup::header("X-Signature").prefix("v0="),
        ))
        .condition(WebTimestamp::new(Lookup::header("X-Ts"), 300));
    sign_then_verify(&slack_like, token().into(), token().into());
}

#[cfg(feature = "jwt")]
#[test]
fn sign_then_verify_jwt() {
    let hs256 = Valohai::new().condition(WebAuthentication::jwt(
        Lookup::header("Authorization").prefix("JWT "),
        JwtAlgorithm::HS256,
    ));
    sign_then_verify(&hs256, token().into(), token().into());

    let rs256 = Valohai::new().condition(
        WebAuthentication::jwt(Lookup::header("Authorization"), JwtAlgorithm::RS256)
            .with_secret(text("rsa_public_pem")),
    );
    sign_then_verify(&rs256, text("rsa_private_pem").into(), no_secrets());
    let es256 = Valohai::new().condition(WebAuthentication::jwt(
        Lookup::header("Authorization"),
        JwtAlgorithm::ES256,
    ));
    sign_then_verify(
        &es256,
        text("ec_private_pem").into(),
        text("ec_public_pem").into(),
    );

    let mut headers = HeaderMap::new();
    let err = rs256
        .sign(
            &Message::new("x", ts(), b""),
            &text("rsa_public_pem").into(),
            &mut headers,
        )
        .unwrap_err();
    assert!(matches!(err, SignError::BadSecret(_)), "{err}");
}

#[test]
fn sign_refuses_what_a_sender_cannot_produce() {
    let message = Message::new("x", ts(), b"body");
    let mut headers = HeaderMap::new();
    let query = auth(
        "auth_type = \"static_token\"\nlookup_namespace = \"querystring\"\nlookup_key = \"token\"",
    );
    assert!(matches!(
        query.sign(&message, &token().into(), &mut headers),
        Err(SignError::Unsupported(_))
    ));
    let body_ts = scheme(
        "[[conditions]]\ntype = \"web_timestamp\"\nlookup_namespace = \"json_body\"\n\
         lookup_key = \"ts\"\ntolerance = 60",
    );
    assert!(matches!(
        body_ts.sign(&message, &token().into(), &mut headers),
        Err(SignError::Unsupported(_))
    ));
    let needs_header = auth(
        "auth_type = \"hmac\"\nlookup_key = \"Authorization\"\nbasestring = \"{header:X-Ts}.{body}\"",
    );
    assert_eq!(
        needs_header.sign(&message, &token().into(), &mut headers),
        Err(SignError::MissingHeader("x-ts".to_owned()))
    );
    assert_eq!(
        needs_header.sign(&message, &no_secrets(), &mut headers),
        Err(SignError::NoSecret)
    );
    assert!(headers.is_empty());
}

// ---- configuration and secrecy ------------------------------------------------------------

#[test]
fn the_documented_configuration_loads() {
    std::env::set_var("TW_VALOHAI_DOC_TOKEN", token());
    let trigger = scheme(
        r#"
        compatible = true
        [[conditions]]
        type = "web_authentication"
        auth_type = "hmac"
        lookup_namespace = "header"
        lookup_key = "Authorization"
        value_prefix = ""
        secret = "{env:TW_VALOHAI_DOC_TOKEN}"
        basestring = "prefix.{body}.{header:Request-Timestamp}"
        algorithm = "sha256"
        [[conditions]]
        type = "web_timestamp"
        lookup_namespace = "header"
        lookup_key = "Request-Timestamp"
        tolerance = 60
        [[conditions]]
        type = "rate_limit"
        period = 3600
        quota = 10
        [response]
        json = { status = "success", run_id = "{run_id}" }
        "#,
    );
    let verified = run(&trigger, &vector("hmac_timestamp"), no_secrets(), now()).unwrap();
    assert_eq!(verified.timestamp, Some(ts()));
    let Condition::RateLimit(limit) = &trigger.conditions()[2] else {
        panic!("{trigger:?}")
    };
    assert_eq!(limit.remaining(now()), 9);

    // Neither `Debug` nor serialisation shows the secret.
    let shown = format!(
        "{trigger:?} {:?}",
        trigger.begin(&vector("hmac_timestamp").head, &no_secrets(), now())
    );
    let dumped = serde_json::to_string(&trigger).unwrap();
    for output in [&shown, &dumped] {
        assert!(!output.contains(token()), "{output}");
    }
    assert!(dumped.contains("[redacted]"), "{dumped}");
    assert!(
        dumped.contains(r#""type":"web_authentication""#),
        "{dumped}"
    );
}

#[test]
fn invalid_configurations_are_refused_clearly() {
    let cases = [
        (
            "auth_type = \"hmac\"\nlookup_key = \"A\"\nalgorithm = \"md5\"",
            "unknown HMAC algorithm",
        ),
        (
            "auth_type = \"static_token\"\nlookup_key = \"A\"\nbasestring = \"{body}\"",
            "`basestring` does not apply",
        ),
        (
            "auth_type = \"hmac\"\nlookup_key = \"A\"\nbasestring = \"{body}{body}\"",
            "more than once",
        ),
        (
            "auth_type = \"hmac\"\nlookup_key = \"A\"\nbasestring = \"{bdy}\"",
            "unknown basestring placeholder",
        ),
        (
            "auth_type = \"static_token\"\nlookup_key = \"Bad Header\"",
            "not a valid header name",
        ),
        (
            "auth_type = \"static_token\"\nlookup_key = \"\"",
            "`lookup_key` is empty",
        ),
        (
            "auth_type = \"static_token\"\nlookup_key = \"A\"\nsecret = \"{env:TW_VALOHAI_UNSET}\"",
            "TW_VALOHAI_UNSET",
        ),
        (
            "auth_type = \"token\"\nlookup_key = \"A\"",
            "unknown variant",
        ),
        (
            "auth_type = \"static_token\"\nlookup_key = \"A\"\nlookup_namespace = \"cookie\"",
            "unknown variant",
        ),
        (
            "auth_type = \"static_token\"\nlookup_key = \"A\"\ntolerance = 3",
            "unknown field",
        ),
    ];
    for (keys, expected) in cases {
        let err = config_error(&format!(
            "[[conditions]]\ntype = \"web_authentication\"\n{keys}"
        ));
        assert!(err.contains(expected), "{keys}: {err}");
    }
    let err = config_error("[[conditions]]\ntype = \"rate_limit\"\nperiod = 0\nquota = 1");
    assert!(err.contains("at least 1 second"), "{err}");
    let err = config_error("[[conditions]]\ntype = \"captcha\"");
    assert!(err.contains("unknown variant"), "{err}");
    let err = config_error("compatible = true\nconditons = []");
    assert!(err.contains("unknown field"), "{err}");
}

#[cfg(feature = "jwt")]
#[test]
fn invalid_jwt_configurations_are_refused() {
    let err = config_error(
        "[[conditions]]\ntype = \"web_authentication\"\nauth_type = \"jwt\"\nlookup_key = \"A\"\nalgorithm = \"none\"",
    );
    assert!(err.contains("unknown JWT algorithm"), "{err}");
    let err = config_error(
        "[[conditions]]\ntype = \"web_authentication\"\nauth_type = \"jwt\"\nlookup_key = \"A\"\nalgorithm = \"RS256\"\nsecret = \"not-a-pem\"",
    );
    assert!(
        err.contains("PEM public key") && !err.contains("not-a-pem"),
        "{err}"
    );
    // JOSE names are accepted case-insensitively.
    auth("auth_type = \"jwt\"\nlookup_key = \"A\"\nalgorithm = \"hs512\"");
}

#[cfg(not(feature = "jwt"))]
#[test]
fn jwt_conditions_need_the_feature() {
    let err = config_error(
        "[[conditions]]\ntype = \"web_authentication\"\nauth_type = \"jwt\"\nlookup_key = \"A\"",
    );
    assert!(err.contains("`jwt` feature"), "{err}");
}

#[test]
fn loads_inside_a_type_tagged_route_table() {
    // The shape the gateway uses: `[routes.scheme]` tagged `type = "valohai"` by an outer enum.
    #[derive(Debug, serde::Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Outer {
        Valohai(Valohai),
    }
    #[derive(Debug, serde::Deserialize)]
    struct Route {
        scheme: Outer,
    }
    #[derive(Debug, serde::Deserialize)]
    struct Gateway {
        routes: Vec<Route>,
    }
    let gateway: Gateway = toml::from_str(&format!(
        r#"
        [[routes]]
        [routes.scheme]
        type = "valohai"
        compatible = false
        [[routes.scheme.conditions]]
        type = "web_authentication"
        auth_type = "static_token"
        lookup_key = "Authorization"
        secret = "{}"
        [[routes.scheme.conditions]]
        type = "rate_limit"
        period = 60
        quota = 1
        [routes.scheme.response]
        text = "Created run {{run_id}}"
        "#,
        token()
    ))
    .unwrap();
    let Outer::Valohai(trigger) = &gateway.routes[0].scheme;
    assert!(!trigger.is_compatible());
    run(trigger, &vector("static_header"), no_secrets(), now()).unwrap();
    assert_eq!(
        kind(run(trigger, &vector("static_header"), no_secrets(), now())),
        VerifyErrorKind::RateLimited
    );
    assert_eq!(trigger.success_response("r").unwrap().body, "Created run r");
}
