//! Every built-in HMAC scheme's header parsing and streaming verification.
//!
//! Two shapes of input: an arbitrary request head and body (parsing), and a message signed by
//! the scheme itself whose headers are then damaged byte by byte (the grammar's corners that
//! random bytes rarely reach). An undamaged signed message must verify: signing and
//! verifying agree for every id, timestamp, body, secret set and framing.

#![no_main]

use arbitrary::Arbitrary;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use tower_webhooks::scheme::{
    BuiltinScheme, Cerebrium, GitHub, Message, Nextmv, Scheme, Slack, StandardWebhooks, Stripe,
};
use tower_webhooks::{Secret, SecretSet};
use tower_webhooks_fuzz::{verify, Frames, Head};

#[derive(Arbitrary, Debug)]
enum Kind {
    Cerebrium,
    Nextmv,
    Stripe,
    StandardWebhooks,
    GitHub,
    Slack,
}

#[derive(Arbitrary, Debug)]
enum Damage {
    /// Replaces one byte of one signed header.
    Set { header: u8, at: u16, byte: u8 },
    /// Cuts one signed header short.
    Truncate { header: u8, len: u16 },
    /// Appends bytes to one signed header.
    Append { header: u8, bytes: Vec<u8> },
    /// Removes one signed header.
    Remove { header: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    kind: Kind,
    window: bool,
    secrets: Vec<Vec<u8>>,
    /// Writes each secret as `whsec_<base64>`, the form Standard Webhooks keys take.
    whsec: bool,
    /// Extra headers (and the method and URI) of the request.
    head: Head,
    frames: Frames,
    now: i64,
    /// `Some`: the scheme signs the body first, with this id and timestamp.
    signed: Option<(String, u32, Vec<Damage>)>,
}

fn scheme(kind: &Kind, window: bool) -> BuiltinScheme {
    let window = window.then(Default::default);
    match kind {
        Kind::Cerebrium => BuiltinScheme::Cerebrium(Cerebrium::new().replay_window(window)),
        Kind::Nextmv => BuiltinScheme::Nextmv(Nextmv::new().replay_window(window)),
        Kind::Stripe => BuiltinScheme::Stripe(Stripe::new().replay_window(window)),
        Kind::StandardWebhooks => {
            BuiltinScheme::StandardWebhooks(StandardWebhooks::new().replay_window(window))
        }
        Kind::GitHub => BuiltinScheme::GitHub(GitHub::new()),
        Kind::Slack => BuiltinScheme::Slack(Slack::new().replay_window(window)),
    }
}

fn damage(headers: &mut HeaderMap, damage: &Damage) {
    let names: Vec<_> = headers.keys().cloned().collect();
    if names.is_empty() {
        return;
    }
    let pick = |header: u8| names[usize::from(header) % names.len()].clone();
    let edit = |headers: &mut HeaderMap, header: u8, f: &dyn Fn(&mut Vec<u8>)| {
        let name = pick(header);
        let mut bytes = headers[&name].as_bytes().to_vec();
        f(&mut bytes);
        // A value `http` refuses never reaches a service.
        if let Ok(value) = http::HeaderValue::from_bytes(&bytes) {
            headers.insert(name, value);
        }
    };
    match damage {
        Damage::Set { header, at, byte } => edit(headers, *header, &|bytes| {
            if !bytes.is_empty() {
                let at = usize::from(*at) % bytes.len();
                bytes[at] = *byte;
            }
        }),
        Damage::Truncate { header, len } => {
            edit(headers, *header, &|bytes| bytes.truncate(usize::from(*len)))
        }
        Damage::Append {
            header,
            bytes: more,
        } => edit(headers, *header, &|bytes| bytes.extend_from_slice(more)),
        Damage::Remove { header } => {
            headers.remove(pick(*header));
        }
    }
}

fuzz_target!(|input: Input| {
    let scheme = scheme(&input.kind, input.window);
    let secrets: SecretSet = input
        .secrets
        .iter()
        .take(4)
        .map(|bytes| {
            if input.whsec {
                Secret::new(format!("whsec_{}", STANDARD.encode(bytes)))
            } else {
                Secret::new(bytes.clone())
            }
        })
        .collect();
    let mut head = input.head.parts();
    let mut now = input.now;
    let mut must_verify = false;
    if let Some((id, timestamp, damages)) = &input.signed {
        let body = input.frames.body();
        let message = Message::new(id, i64::from(*timestamp), &body);
        let mut signed = HeaderMap::new();
        if scheme.sign(&message, &secrets, &mut signed).is_ok() {
            for d in damages.iter().take(4) {
                damage(&mut signed, d);
            }
            must_verify = damages.is_empty() && head.headers.is_empty();
            // The signed headers replace any arbitrary ones of the same name.
            for (name, value) in &signed {
                head.headers.insert(name.clone(), value.clone());
            }
            now = i64::from(*timestamp);
        }
    }
    let verdict = verify(&scheme, &head, &secrets, now, &input.frames);
    if must_verify {
        if let Err(err) = verdict {
            panic!(
                "a message signed by {} does not verify: {err}",
                scheme.name()
            );
        }
    }
});
