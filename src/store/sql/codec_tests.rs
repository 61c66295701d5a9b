//! The column encoding's round trips, and rows written by earlier versions.
use super::*;
use crate::scheme::{Cerebrium, StandardWebhooks};

#[test]
fn signing_round_trips_through_its_columns() {
    let signing = SigningSpec::new(
        StandardWebhooks::new(),
        SecretSet::from(vec![
            Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").with_id("new"),
            Secret::new([0u8, 159, 255]),
        ]),
    );
    let signers = Signers::default();
    let (scheme, secrets) = encode_signing(&signing, &signers).unwrap();
    assert!(scheme.contains("standard_webhooks"), "{scheme}");
    assert_eq!(
        decode_signing(&scheme, &secrets, &signers).unwrap(),
        signing
    );
    // A second encoding comes from the cache and is the same column.
    assert_eq!(encode_signing(&signing, &signers).unwrap().0, scheme);

    let custom = SigningSpec::new(SchemeSpec::custom("custom-hmac"), "s");
    let (scheme, secrets) = encode_signing(&custom, &signers).unwrap();
    assert_eq!(scheme, r#"{"custom":"custom-hmac"}"#);
    assert_eq!(decode_signing(&scheme, &secrets, &signers).unwrap(), custom);
}

#[test]
fn columns_written_before_the_signing_spec_still_load() {
    // The `scheme` and `secrets` columns as the store wrote them when a delivery held a
    // signer object (`{"builtin": <the scheme's description>}` / `{"custom": <name>}`).
    let signers = Signers::default();
    let secrets = r#"[{"value":"czNjcmV0"}]"#;
    let written =
        r#"{"builtin":{"replay_window":{"future_secs":60,"past_secs":300},"type":"cerebrium"}}"#;
    let builtin = decode_signing(written, secrets, &signers).unwrap();
    assert_eq!(builtin, SigningSpec::new(Cerebrium::new(), "s3cret"));
    let custom = decode_signing(r#"{"custom":"custom-hmac"}"#, secrets, &signers).unwrap();
    assert_eq!(custom.scheme(), &SchemeSpec::custom("custom-hmac"));
    // And the same signing is written as the same columns today.
    let (scheme, sealed) = encode_signing(&builtin, &signers).unwrap();
    assert_eq!((scheme.as_str(), sealed.as_str()), (written, secrets));
    for (stored, source) in [
        ("forward", Source::origin("forward")),
        ("forward_async", Source::origin("forward_async")),
        ("forward_legacy", Source::origin("forward_legacy")),
        ("other:app", Source::origin("app")),
        ("event:run.status", Source::Event("run.status".into())),
        ("resend", Source::Resend),
    ] {
        assert_eq!(decode_source(stored), source, "{stored}");
    }
}

#[test]
fn headers_sources_and_recorded_pairs() {
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", HeaderValue::from_static("acme"));
    headers.append("x-raw", HeaderValue::from_bytes(&[0xfe, b'a']).unwrap());
    let signers = Signers::default();
    let decoded = decode_headers(&encode_headers(&headers, &signers), &signers).unwrap();
    assert_eq!(decoded, headers);
    assert!(
        decoded.values().all(HeaderValue::is_sensitive),
        "write-only"
    );
    for source in [
        Source::origin("forward"),
        Source::APPLICATION,
        Source::Resend,
        Source::Event("run.status".into()),
        Source::origin("resend"),
        Source::origin("event:x"),
        Source::origin("other:y"),
    ] {
        assert_eq!(decode_source(&encode_source(&source)), source);
    }
    let pairs: RecordedHeaders = [
        ("authorization", "Bearer t0ken"),
        ("x-webhook-secret", "s3cret"),
        ("x-request-id", "run-1"),
    ]
    .into_iter()
    .collect();
    let stored = encode_pairs(&pairs);
    assert!(
        !stored.contains("t0ken") && !stored.contains("s3cret"),
        "{stored}"
    );
    assert_eq!(
        decode_pairs(&stored).unwrap().get("x-request-id"),
        Some("run-1")
    );
}
