//! The registry's opaque page cursors (`?cursor=` of the webhook and conversation lists):
//! arbitrary text never panics, and every cursor the registry hands out reads back as the
//! position it was made from.

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tower_webhooks::__fuzz::cursor;

#[derive(Arbitrary, Debug)]
struct Input {
    /// What a client sends as `cursor`.
    text: String,
    /// A webhook or delivery id the registry pages after.
    id: String,
    /// A delivery's creation time, in milliseconds since the epoch.
    created_ms: u64,
}

fuzz_target!(|input: Input| {
    let _ = cursor::is_opaque(&input.text);
    let _ = cursor::parse_webhook(&input.text);
    let _ = cursor::parse_conversation(&input.text);

    let made = cursor::webhook(&input.id);
    assert!(cursor::is_opaque(&made));
    assert_eq!(
        cursor::parse_webhook(&made).as_deref(),
        Some(input.id.as_str())
    );

    // Creation times the stores keep: milliseconds up to year ~292 million are in range.
    let created_at = UNIX_EPOCH + Duration::from_millis(input.created_ms % (i64::MAX as u64));
    let made = cursor::conversation(&input.id, created_at);
    let valid_id =
        !input.id.is_empty() && input.id.len() <= 256 && !input.id.chars().any(char::is_control);
    match cursor::parse_conversation(&made) {
        Some(position) => {
            assert!(
                valid_id,
                "a cursor for an unusable id {:?} was accepted",
                input.id
            );
            assert_eq!(position.id, input.id);
            assert_eq!(position.created_at, created_at);
        }
        None => assert!(!valid_id, "the registry's own cursor {made:?} was refused"),
    }
});
