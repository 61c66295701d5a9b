//! Every built-in HMAC scheme against the vendor vectors in `tests/fixtures/vectors.json`
//! (made by `tests/fixtures/make_vectors.py` with the vendors' own algorithms), plus the
//! rejections each must produce and property tests over random bodies and header values;
//! Standard Webhooks `v1a` (Ed25519) and mixed headers against
//! `tests/fixtures/standard_vectors.json` (made by `tests/fixtures/make_standard_vectors.py`
//! with Python's `cryptography`) and against that library at run time; and the README's table
//! of default replay windows against the code.

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use proptest::prelude::*;
use serde::Deserialize;
use tower_webhooks::scheme::{
    BuiltinScheme, Message, RequestHead, Scheme, SignError, Verification, Verified, VerifyError,
    VerifyErrorKind,
};
use tower_webhooks::SecretSet;

#[derive(Deserialize)]
struct Vector {
    scheme: String,
    source: String,
    secret: String,
    id: Option<String>,
    timestamp: i64,
    body: String,
    headers: std::collections::BTreeMap<String, String>,
    signature_header: String,
    now: Option<i64>,
    #[serde(default)]
    no_sign: bool,
}

fn vectors() -> Vec<Vector> {
    serde_json::from_str(include_str!("fixtures/vectors.json")).unwrap()
}

fn scheme(name: &str) -> BuiltinScheme {
    serde_json::from_value(serde_json::json!({ "type": name })).unwrap()
}

fn head(headers: &HeaderMap) -> RequestHead {
    let mut request = Request::post("/hook").body(()).unwrap();
    *request.headers_mut() = headers.clone();
    request.into_parts().0
}

fn header_map(pairs: &std::collections::BTreeMap<String, String>) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                HeaderName::try_from(k.as_str()).unwrap(),
                HeaderValue::try_from(v.as_str()).unwrap(),
            )
        })
        .collect()
}

/// Verifies in several frames, as the layer does.
fn verify(
    scheme: &BuiltinScheme,
    headers: &HeaderMap,
    secrets: &SecretSet,
    body: &[u8],
    now: i64,
) -> Result<Verified, VerifyError> {
    let mut verification = scheme.begin(&head(headers), secrets, now)?;
    for chunk in body.chunks(7) {
        verification.update(chunk);
    }
    verification.finish(&Bytes::copy_from_slice(body))
}

impl Vector {
    fn now(&self) -> i64 {
        self.now.unwrap_or(self.timestamp)
    }
    fn secrets(&self) -> SecretSet {
        self.secret.as_str().into()
    }
    fn has_timestamp(&self) -> bool {
        self.scheme != "github"
    }
}

#[test]
fn every_vendor_vector_verifies() {
    for v in vectors() {
        let verified = verify(
            &scheme(&v.scheme),
            &header_map(&v.headers),
            &v.secrets(),
            v.body.as_bytes(),
            v.now(),
        )
        .unwrap_or_else(|err| panic!("{} ({}): {err}", v.scheme, v.source));
        assert_eq!(verified.scheme, v.scheme);
        assert_eq!(verified.secret.as_ref().unwrap().index, 0);
        assert!(verified.replay_key().is_some(), "{}", v.scheme);
        if v.has_timestamp() {
            assert_eq!(verified.timestamp, Some(v.now()), "{}", v.scheme);
        }
        assert_eq!(
            verified.message_id.as_deref(),
            v.id.as_deref(),
            "{}",
            v.scheme
        );
    }
}

#[test]
fn signing_reproduces_vendor_headers_byte_for_byte() {
    for v in vectors().into_iter().filter(|v| !v.no_sign) {
        let mut headers = HeaderMap::new();
        let message = Message {
            id: v.id.as_deref(),
            timestamp: v.timestamp,
            body: v.body.as_bytes(),
        };
        scheme(&v.scheme)
            .sign(&message, &v.secrets(), &mut headers)
            .unwrap();
        for (name, value) in &v.headers {
            assert_eq!(
                headers.get(name.as_str()).map(|h| h.to_str().unwrap()),
                Some(value.as_str()),
                "{}: {name}",
                v.scheme
            );
        }
        assert!(headers[v.signature_header.as_str()].is_sensitive());
    }
}

/// Found by `fuzz/` (`scheme_verify`): an id that is not a header value made `sign` panic in
/// the schemes that write the id into a header. It is an error now, and nothing is written.
#[test]
fn signing_with_an_id_that_is_no_header_value_is_an_error() {
    let secrets = SecretSet::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    for name in ["cerebrium", "standard_webhooks", "svix", "github"] {
        for id in ["msg\n1", "msg\r\nx-injected: 1", "m\u{e9}ssage", "\u{7f}"] {
            let mut headers = HeaderMap::new();
            let result = scheme(name).sign(
                &Message::new(id, 1_731_381_205, b"{}"),
                &secrets,
                &mut headers,
            );
            assert_eq!(result, Err(SignError::InvalidId), "{name}: {id:?}");
            assert!(
                headers.is_empty(),
                "{name}: headers written before the error"
            );
        }
        let mut headers = HeaderMap::new();
        scheme(name)
            .sign(
                &Message::new("msg_1", 1_731_381_205, b"{}"),
                &secrets,
                &mut headers,
            )
            .unwrap();
        assert!(headers.values().any(|value| value == "msg_1"), "{name}");
    }
}

fn expect(kind: VerifyErrorKind, result: Result<Verified, VerifyError>, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(err.kind(), kind, "{what}: {err}");
}

#[test]
fn tampered_body_and_wrong_secret_are_invalid_signatures() {
    for v in vectors() {
        let scheme = scheme(&v.scheme);
        let headers = header_map(&v.headers);
        let mut tampered = v.body.clone().into_bytes();
        tampered[0] ^= 1;
        let what = format!("{} tampered", v.scheme);
        expect(
            VerifyErrorKind::InvalidSignature,
            verify(&scheme, &headers, &v.secrets(), &tampered, v.now()),
            &what,
        );
        let mut extended = v.body.clone().into_bytes();
        extended.push(b' ');
        expect(
            VerifyErrorKind::InvalidSignature,
            verify(&scheme, &headers, &v.secrets(), &extended, v.now()),
            &format!("{} extended", v.scheme),
        );
        let wrong = if v.scheme == "standard_webhooks" {
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        } else {
            "not-the-secret"
        };
        expect(
            VerifyErrorKind::InvalidSignature,
            verify(&scheme, &headers, &wrong.into(), v.body.as_bytes(), v.now()),
            &format!("{} wrong secret", v.scheme),
        );
        expect(
            VerifyErrorKind::NoSecret,
            verify(
                &scheme,
                &headers,
                &SecretSet::new(),
                v.body.as_bytes(),
                v.now(),
            ),
            &format!("{} no secret", v.scheme),
        );
    }
}

#[test]
fn rotation_reports_which_secret_matched() {
    for v in vectors() {
        let old_first = if v.scheme == "standard_webhooks" {
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        } else {
            "retired"
        };
        let secrets = SecretSet::new()
            .add_secret(old_first)
            .add_secret(tower_webhooks::Secret::new(&v.secret).with_id("current"));
        let verified = verify(
            &scheme(&v.scheme),
            &header_map(&v.headers),
            &secrets,
            v.body.as_bytes(),
            v.now(),
        )
        .unwrap();
        let matched = verified.secret.unwrap();
        assert_eq!((matched.index, matched.id.as_deref()), (1, Some("current")));
    }
}

#[test]
fn missing_and_mangled_signature_headers() {
    for v in vectors() {
        let scheme = scheme(&v.scheme);
        let signature = v.headers[&v.signature_header].clone();
        for name in v.headers.keys() {
            let mut headers = header_map(&v.headers);
            headers.remove(name.as_str());
            let err = verify(&scheme, &headers, &v.secrets(), v.body.as_bytes(), v.now())
                .expect_err(&format!("{} without {name}", v.scheme));
            assert!(
                matches!(
                    err.kind(),
                    VerifyErrorKind::MissingHeader | VerifyErrorKind::MalformedHeader
                ),
                "{}: {name}: {err}",
                v.scheme
            );
            assert!(!err.to_string().contains(&v.secret));
        }
        // Same MAC bytes in the other encoding, or behind another version prefix.
        let hex_or_b64 = match signature.split_once("v1,") {
            Some((_, encoded)) => encoded.to_owned(),
            None => signature.rsplit('=').next().unwrap().to_owned(),
        };
        let reencoded = match hex::decode(&hex_or_b64) {
            Ok(bytes) => base64::engine::general_purpose::STANDARD.encode(bytes),
            Err(_) => hex::encode(
                base64::engine::general_purpose::STANDARD
                    .decode(&hex_or_b64)
                    .unwrap(),
            ),
        };
        let mangled = [
            signature.replace(&hex_or_b64, &reencoded),
            signature
                .replacen("v1", "v2", 1)
                .replacen("v0=", "v1=", 1)
                .replacen("sha256=", "sha1=", 1),
            format!("{signature}garbage"),
            String::new(),
        ];
        for bad in mangled {
            let mut headers = header_map(&v.headers);
            headers.insert(
                HeaderName::try_from(v.signature_header.as_str()).unwrap(),
                HeaderValue::try_from(bad.as_str()).unwrap(),
            );
            let err = verify(&scheme, &headers, &v.secrets(), v.body.as_bytes(), v.now())
                .expect_err(&format!("{} accepted {bad:?}", v.scheme));
            let message = err.to_string();
            assert!(!message.contains(&hex_or_b64), "error echoes the signature");
        }
    }
}

#[test]
fn stale_and_future_timestamps() {
    for v in vectors().into_iter().filter(Vector::has_timestamp) {
        let scheme = scheme(&v.scheme);
        let headers = header_map(&v.headers);
        let body = v.body.as_bytes();
        let (past, future) = default_window(&v.scheme).unwrap();
        verify(&scheme, &headers, &v.secrets(), body, v.now() + past).unwrap();
        verify(&scheme, &headers, &v.secrets(), body, v.now() - future).unwrap();
        expect(
            VerifyErrorKind::TimestampTooOld,
            verify(&scheme, &headers, &v.secrets(), body, v.now() + past + 1),
            &format!("{} stale", v.scheme),
        );
        expect(
            VerifyErrorKind::TimestampInFuture,
            verify(&scheme, &headers, &v.secrets(), body, v.now() - future - 1),
            &format!("{} future", v.scheme),
        );
        // With the window disabled the same request is accepted.
        let relaxed: BuiltinScheme =
            serde_json::from_value(serde_json::json!({ "type": v.scheme, "replay_window": false }))
                .unwrap();
        verify(&relaxed, &headers, &v.secrets(), body, v.now() + 10_000_000).unwrap();
    }
}

/// A scheme's default window as its configuration writes it (`(past, future)` seconds), or
/// `None` when the scheme has no window of its own.
fn default_window(name: &str) -> Option<(i64, i64)> {
    let config = serde_json::to_value(scheme(name)).unwrap();
    let window = config.get("replay_window")?;
    Some((
        window["past_secs"].as_i64().unwrap(),
        window["future_secs"].as_i64().unwrap(),
    ))
}

#[test]
fn github_has_no_window() {
    let v = vectors()
        .into_iter()
        .find(|v| v.scheme == "github")
        .unwrap();
    verify(
        &scheme("github"),
        &header_map(&v.headers),
        &v.secrets(),
        v.body.as_bytes(),
        i64::MAX,
    )
    .unwrap();
}

const ALL: [&str; 6] = [
    "cerebrium",
    "nextmv",
    "stripe",
    "standard_webhooks",
    "github",
    "slack",
];

fn secret_for(name: &str) -> SecretSet {
    if name == "standard_webhooks" {
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()
    } else {
        "a-shared-secret".into()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Signing then verifying accepts any body, UTF-8 or not, split into any frames.
    #[test]
    fn sign_verify_round_trip(body in proptest::collection::vec(any::<u8>(), 0..2048), ts in 0i64..4_000_000_000) {
        for name in ALL {
            let scheme = scheme(name);
            let mut headers = HeaderMap::new();
            scheme.sign(&Message::new("msg_1", ts, &body), &secret_for(name), &mut headers).unwrap();
            let verified = verify(&scheme, &headers, &secret_for(name), &body, ts);
            prop_assert!(verified.is_ok(), "{}: {:?}", name, verified);
        }
    }

    /// No header value makes any scheme panic.
    #[test]
    fn arbitrary_header_values_never_panic(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 8), now in any::<i64>()) {
        let names = [
            "x-request-id", "x-cerebrium-webhook-timestamp", "x-cerebrium-webhook-signature",
            "nextmv-signature", "stripe-signature", "webhook-id", "webhook-timestamp", "webhook-signature",
        ];
        let mut headers = HeaderMap::new();
        for (name, value) in names.iter().zip(&values) {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.insert(*name, value);
            }
        }
        headers.insert("x-hub-signature-256", HeaderValue::from_bytes(&values[0]).unwrap_or(HeaderValue::from_static("sha256=00")));
        headers.insert("x-slack-signature", HeaderValue::from_bytes(&values[1]).unwrap_or(HeaderValue::from_static("v0=")));
        headers.insert("x-slack-request-timestamp", HeaderValue::from_bytes(&values[2]).unwrap_or(HeaderValue::from_static("-1")));
        for name in ALL {
            let _ = verify(&scheme(name), &headers, &secret_for(name), b"{}", now);
        }
    }
}

// --- Standard Webhooks: the specification's window, every scheme's default window ---------------------

/// The Standard Webhooks specification's tolerance is five minutes either way: a sender 61 s (and 300 s) ahead is
/// accepted, 301 s ahead or behind is not.
#[test]
fn standard_webhooks_window_is_five_minutes_either_way() {
    let v = vectors()
        .into_iter()
        .find(|v| v.scheme == "standard_webhooks")
        .unwrap();
    let headers = header_map(&v.headers);
    let secrets = v.secrets();
    let standard = scheme("standard_webhooks");
    for skew in [-300, -61, 0, 61, 300] {
        verify(
            &standard,
            &headers,
            &secrets,
            v.body.as_bytes(),
            v.timestamp - skew,
        )
        .unwrap_or_else(|err| panic!("{skew} s ahead: {err}"));
    }
    expect(
        VerifyErrorKind::TimestampInFuture,
        verify(
            &standard,
            &headers,
            &secrets,
            v.body.as_bytes(),
            v.timestamp - 301,
        ),
        "301 s ahead",
    );
    expect(
        VerifyErrorKind::TimestampTooOld,
        verify(
            &standard,
            &headers,
            &secrets,
            v.body.as_bytes(),
            v.timestamp + 301,
        ),
        "301 s behind",
    );
    // Configuration: `true` is the default window, a partial table keeps the other side.
    let configured: BuiltinScheme = serde_json::from_value(serde_json::json!({
        "type": "svix", "replay_window": { "past_secs": 600 }
    }))
    .unwrap();
    assert_eq!(
        serde_json::to_value(configured).unwrap()["replay_window"],
        serde_json::json!({ "past_secs": 600, "future_secs": 300 })
    );
    let enabled: BuiltinScheme = serde_json::from_value(
        serde_json::json!({ "type": "standard_webhooks", "replay_window": true }),
    )
    .unwrap();
    assert_eq!(enabled, scheme("standard_webhooks"));
}

/// The README's "Replay windows" table is every scheme's default, read from the code.
#[test]
fn readme_window_table_matches_each_scheme_default() {
    let readme = include_str!("../README.md");
    let table = readme
        .split("### Replay windows")
        .nth(1)
        .expect("README has a `### Replay windows` section");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| line.split('|').map(str::trim).collect())
        .collect();
    let mut listed = Vec::new();
    for row in rows {
        let name = row[1].split('`').nth(1).expect("a `type` in backticks");
        let (past, future) = (row[2], row[3]);
        listed.push(name.to_owned());
        match default_window(name) {
            Some(window) => assert_eq!(
                (past.parse().ok(), future.parse().ok()),
                (Some(window.0), Some(window.1)),
                "{name}"
            ),
            None if name == "valohai" => {
                assert_eq!((past, future), ("`tolerance`", "`tolerance`"), "{name}")
            }
            None => assert_eq!((past, future), ("none", "none"), "{name}"),
        }
    }
    let mut expected: Vec<String> = ALL.iter().map(|name| name.to_string()).collect();
    expected.push("valohai".into());
    assert_eq!(listed, expected, "one row per built-in scheme, in order");
}

/// Standard Webhooks `v1a` (Ed25519) beside `v1`, against vectors made with Python's
/// `cryptography` and against that library itself.
#[cfg(feature = "ed25519")]
mod v1a {
    use super::*;

    #[derive(Deserialize)]
    struct StandardVectors {
        keys: std::collections::BTreeMap<String, StandardKeys>,
        vectors: Vec<StandardVector>,
    }

    #[derive(Deserialize)]
    struct StandardKeys {
        whsk_seed: String,
        whsk_pair: String,
        whpk: String,
    }

    #[derive(Deserialize)]
    struct StandardVector {
        name: String,
        id: String,
        timestamp: i64,
        body: String,
        signature: String,
        signing_secrets: Option<Vec<String>>,
        verifications: Vec<StandardVerificationCase>,
    }

    #[derive(Deserialize)]
    struct StandardVerificationCase {
        secrets: Vec<String>,
        matched: Option<usize>,
    }

    /// Made by `tests/fixtures/make_standard_vectors.py` with Python's `cryptography`.
    fn standard_vectors() -> StandardVectors {
        serde_json::from_str(include_str!("fixtures/standard_vectors.json")).unwrap()
    }

    fn secret_set(secrets: &[String]) -> SecretSet {
        secrets.iter().map(tower_webhooks::Secret::new).collect()
    }

    fn standard_headers(id: &str, timestamp: i64, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::try_from(id).unwrap());
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        headers.insert(
            "webhook-signature",
            HeaderValue::try_from(signature).unwrap(),
        );
        headers
    }

    #[test]
    fn standard_webhooks_verifies_python_made_v1a_and_mixed_headers() {
        let scheme = scheme("standard_webhooks");
        for v in standard_vectors().vectors {
            let headers = standard_headers(&v.id, v.timestamp, &v.signature);
            for case in &v.verifications {
                let secrets = secret_set(&case.secrets);
                let result = verify(&scheme, &headers, &secrets, v.body.as_bytes(), v.timestamp);
                match case.matched {
                    Some(index) => {
                        let verified = result.unwrap_or_else(|err| {
                            panic!("{} with {:?}: {err}", v.name, case.secrets)
                        });
                        assert_eq!(verified.secret.as_ref().unwrap().index, index, "{}", v.name);
                        assert_eq!(verified.message_id.as_deref(), Some(v.id.as_str()));
                        assert_eq!(
                            verified.replay_key(),
                            Some(format!("standard_webhooks:{}", v.id))
                        );
                    }
                    None => expect(
                        VerifyErrorKind::InvalidSignature,
                        result,
                        &format!("{} with {:?}", v.name, case.secrets),
                    ),
                }
                // Any change to the body breaks every signature, `v1a` ones included.
                let mut tampered = v.body.clone().into_bytes();
                tampered[1] ^= 1;
                expect(
                    VerifyErrorKind::InvalidSignature,
                    verify(&scheme, &headers, &secrets, &tampered, v.timestamp),
                    &format!("{} tampered", v.name),
                );
            }
        }
    }

    #[test]
    fn standard_webhooks_signs_python_made_vectors_byte_for_byte() {
        let vectors = standard_vectors().vectors;
        let signed = vectors.iter().filter(|v| v.signing_secrets.is_some());
        assert!(signed.clone().count() >= 4);
        for v in signed {
            let mut headers = HeaderMap::new();
            scheme("standard_webhooks")
                .sign(
                    &Message::new(&v.id, v.timestamp, v.body.as_bytes()),
                    &secret_set(v.signing_secrets.as_ref().unwrap()),
                    &mut headers,
                )
                .unwrap();
            assert_eq!(
                headers["webhook-signature"],
                v.signature.as_str(),
                "{}",
                v.name
            );
            assert!(headers["webhook-signature"].is_sensitive());
        }
    }

    #[test]
    fn standard_webhooks_public_keys_cannot_sign_and_bad_keys_are_refused() {
        let keys = &standard_vectors().keys["a"];
        let message = Message::new("msg_1", 1_700_000_000, b"{}");
        let refused = [
            keys.whpk.clone(),
            "whsk_AAAA".to_owned(),
            // A 64-byte form whose public half belongs to another seed.
            format!(
                "{}{}",
                &keys.whsk_pair[..49],
                &standard_vectors().keys["b"].whpk[5..]
            ),
        ];
        for secret in refused {
            let err = scheme("standard_webhooks")
                .sign(&message, &secret.as_str().into(), &mut HeaderMap::new())
                .expect_err(&secret);
            assert!(
                matches!(err, tower_webhooks::scheme::SignError::BadSecret(_)),
                "{secret}: {err}"
            );
            assert!(!err.to_string().contains(&secret[5..]), "{err}");
        }
        // A whsk_ key verifies what it signed (the receiver may hold either half).
        for secret in [&keys.whsk_seed, &keys.whsk_pair] {
            let secrets: SecretSet = secret.as_str().into();
            let mut headers = HeaderMap::new();
            scheme("standard_webhooks")
                .sign(&message, &secrets, &mut headers)
                .unwrap();
            let verified = verify(
                &scheme("standard_webhooks"),
                &headers,
                &keys.whpk.as_str().into(),
                b"{}",
                1_700_000_000,
            )
            .unwrap();
            assert_eq!(verified.secret.unwrap().index, 0);
        }
    }

    #[test]
    fn standard_webhooks_secret_sets_are_redacted_in_debug() {
        let keys = &standard_vectors().keys["a"];
        let secrets = secret_set(&[keys.whsk_seed.clone(), keys.whpk.clone()]);
        let shown = format!("{secrets:?}");
        assert!(!shown.contains(&keys.whsk_seed[5..]), "{shown}");
        assert!(!shown.contains(&keys.whpk[5..]), "{shown}");
    }

    /// A whsk_ key for the property tests and the Python round trip.
    const SIGNING_KEY: &str = "whsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const PUBLIC_KEY: &str = "whpk_A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// `v1a` signs and verifies any body, UTF-8 or not, split into any frames, next to `v1`.
        #[test]
        fn standard_webhooks_v1a_round_trip(body in proptest::collection::vec(any::<u8>(), 0..2048), ts in 0i64..4_000_000_000) {
            let scheme = scheme("standard_webhooks");
            let signer = secret_set(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(), SIGNING_KEY.into()]);
            let mut headers = HeaderMap::new();
            scheme.sign(&Message::new("msg_1", ts, &body), &signer, &mut headers).unwrap();
            let verified = verify(&scheme, &headers, &PUBLIC_KEY.into(), &body, ts);
            prop_assert!(verified.is_ok(), "{:?}", verified);
            let mut tampered = body.clone();
            tampered.push(0);
            prop_assert!(verify(&scheme, &headers, &PUBLIC_KEY.into(), &tampered, ts).is_err());
        }
    }

    /// What the crate signs verifies with an independent implementation: Python's `hmac` for `v1`
    /// and `cryptography`'s Ed25519 for `v1a` (`tests/clients/standard_webhooks_verifier.py`).
    #[test]
    fn standard_webhooks_signatures_verify_with_python_cryptography() {
        use std::io::Write as _;
        use std::process::{Command, Stdio};

        let probe = Command::new("python3")
            .args(["-c", "import cryptography"])
            .output();
        assert!(
            probe.is_ok_and(|output| output.status.success()),
            "python3 with `cryptography` is needed: pip install -r tests/clients/requirements.txt"
        );
        let hmac_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let keys = &standard_vectors().keys["b"];
        let bodies: [&[u8]; 4] = [b"", b"{\"ok\":true}", &[0xff, 0x00, 0xfe], &[b'x'; 5000]];
        let mut messages = Vec::new();
        let mut expected = Vec::new();
        for (n, body) in bodies.iter().enumerate() {
            for signer in [
                vec![hmac_secret.to_owned(), keys.whsk_seed.clone()],
                vec![keys.whsk_pair.clone()],
            ] {
                let id = format!("msg_{n}");
                let timestamp = 1_700_000_000 + n as i64;
                let mut headers = HeaderMap::new();
                scheme("standard_webhooks")
                    .sign(
                        &Message::new(&id, timestamp, body),
                        &secret_set(&signer),
                        &mut headers,
                    )
                    .unwrap();
                let signature = headers["webhook-signature"].to_str().unwrap().to_owned();
                let has_v1 = signer.len() == 2;
                messages.push(serde_json::json!({
                    "id": id, "timestamp": timestamp, "signature": signature,
                    "body_base64": base64::engine::general_purpose::STANDARD.encode(body),
                }));
                expected.push(serde_json::json!({ "v1": has_v1, "v1a": true }));
                // The same signature over another body: Python must refuse both halves.
                messages.push(serde_json::json!({
                    "id": id, "timestamp": timestamp, "signature": signature,
                    "body_base64": base64::engine::general_purpose::STANDARD.encode([*body, b"!"].concat()),
                }));
                expected.push(serde_json::json!({ "v1": false, "v1a": false }));
            }
        }
        let request = serde_json::json!({
            "secrets": [hmac_secret], "public_keys": [keys.whpk], "messages": messages,
        });
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/standard_webhooks_verifier.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(request.to_string().as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let results: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(results, serde_json::Value::from(expected));
    }
}
