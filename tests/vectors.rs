//! Every built-in HMAC scheme against the vendor vectors in `tests/fixtures/vectors.json`
//! (made by `tests/fixtures/make_vectors.py` with the vendors' own algorithms), plus the
//! rejections each must produce and property tests over random bodies and header values.

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
        verify(&scheme, &headers, &v.secrets(), body, v.now() + 300).unwrap();
        verify(&scheme, &headers, &v.secrets(), body, v.now() - 60).unwrap();
        expect(
            VerifyErrorKind::TimestampTooOld,
            verify(&scheme, &headers, &v.secrets(), body, v.now() + 301),
            &format!("{} stale", v.scheme),
        );
        expect(
            VerifyErrorKind::TimestampInFuture,
            verify(&scheme, &headers, &v.secrets(), body, v.now() - 61),
            &format!("{} future", v.scheme),
        );
        // With the window disabled the same request is accepted.
        let relaxed: BuiltinScheme =
            serde_json::from_value(serde_json::json!({ "type": v.scheme, "replay_window": false }))
                .unwrap();
        verify(&relaxed, &headers, &v.secrets(), body, v.now() + 10_000_000).unwrap();
    }
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
