//! The library's TOML configuration: a `BuiltinScheme` table (`type = "stripe"`, windows,
//! Valohai conditions with lookups, basestrings, JWT keys, rate limits, responses), as the
//! gateway example and applications load it. Whatever loads must also run: a loaded scheme
//! verifies one request and, for Valohai, renders its success response.
//!
//! The gateway example's own config types are private to the example, so this target fuzzes
//! the library types it is built from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_webhooks::scheme::{BuiltinScheme, Valohai};
use tower_webhooks::{Scheme, SecretSet};
use tower_webhooks_fuzz::{verify, Frames};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (head, ()) = http::Request::post("/hooks?token=abc&ts=1731381205")
        .header("authorization", "abc")
        .header("content-type", "application/json")
        .body(())
        .unwrap()
        .into_parts();
    let frames = Frames(vec![br#"{"token":"abc","ts":1731381205}"#.to_vec()]);
    let secrets = SecretSet::from("abc");
    if let Ok(scheme) = toml::from_str::<BuiltinScheme>(text) {
        let _ = scheme.name();
        if let Ok(verified) = verify(&scheme, &head, &secrets, 1_731_381_205, &frames) {
            let _ = scheme.success_response(&verified.run_id.to_string());
        }
    }
    if let Ok(trigger) = toml::from_str::<Valohai>(text) {
        let _ = verify(&trigger, &head, &secrets, 1_731_381_205, &frames);
        if let Some(action) = trigger.response_action() {
            let _ = action.render("00000000-0000-4000-8000-000000000000");
        }
    }
});
