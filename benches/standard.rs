//! Cost of verifying a 1 KiB Standard Webhooks body signed `v1a` (Ed25519, `whpk_` key)
//! against the same body signed `v1` (HMAC-SHA256, `whsec_` secret), both through
//! `Scheme::begin` / `update` / `finish` in the same run. Prints each mean and the ratio.
//!
//! Run with `cargo bench --bench standard`.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Request};
use tower_webhooks::scheme::{Message, Scheme, StandardWebhooks, Verification};
use tower_webhooks::SecretSet;

const HMAC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SIGNING_KEY: &str = "whsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const PUBLIC_KEY: &str = "whpk_A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";
const TIMESTAMP: i64 = 1_731_381_205;
const ROUNDS: u32 = 5;
const ITERATIONS: u32 = 2_000;

/// Mean nanoseconds per verification of `headers` + `body` with `secrets` (best of rounds).
fn mean_nanos(
    scheme: &StandardWebhooks,
    headers: &HeaderMap,
    secrets: &SecretSet,
    body: &Bytes,
) -> f64 {
    let mut request = Request::post("/hook").body(()).unwrap();
    *request.headers_mut() = headers.clone();
    let head = request.into_parts().0;
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..ITERATIONS {
            let mut verification = scheme.begin(&head, secrets, TIMESTAMP).unwrap();
            verification.update(body);
            black_box(verification.finish(body).unwrap());
        }
        best = best.min(start.elapsed().as_nanos() as f64 / f64::from(ITERATIONS));
    }
    best
}

fn main() {
    let body = Bytes::from(
        (0..1024)
            .map(|i| b"abcdefghijklmnopqrstuvwxyz012345"[i % 32])
            .collect::<Vec<u8>>(),
    );
    let scheme = StandardWebhooks::new();
    let signed = |secret: &str| {
        let mut headers = HeaderMap::new();
        scheme
            .sign(
                &Message::new("msg_1", TIMESTAMP, &body),
                &secret.into(),
                &mut headers,
            )
            .unwrap();
        headers
    };
    let v1 = mean_nanos(&scheme, &signed(HMAC_SECRET), &HMAC_SECRET.into(), &body);
    let v1a = mean_nanos(&scheme, &signed(SIGNING_KEY), &PUBLIC_KEY.into(), &body);
    println!("standard webhooks, 1 KiB body, best of {ROUNDS} rounds of {ITERATIONS}:");
    println!("  v1  (HMAC-SHA256, whsec_): {v1:>10.0} ns/verification");
    println!("  v1a (Ed25519, whpk_):      {v1a:>10.0} ns/verification");
    println!("  v1a / v1: {:.1}x", v1a / v1);
}
