//! Event types, the delivered event envelope, and the registry's own `endpoint.disabled`.

use std::borrow::Cow;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// An event type the application declares, with the example payload the
/// [trigger route](super#routes) sends.
///
/// Event types are an open set: declare each one on the
/// [`RegistryBuilder`](super::RegistryBuilder); webhooks can only subscribe to declared types
/// and [`publish`](super::WebhookRegistry::publish) refuses the others.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EventType {
    /// The name, such as `run.status` (letters, digits, `.`, `_`, `-`; 1 to 64 characters).
    pub name: Cow<'static, str>,
    /// What it means, for the OpenAPI document and users.
    pub description: Cow<'static, str>,
    /// The `data` of a test event sent by the trigger route.
    pub example: serde_json::Value,
    /// The JSON Schema of `data`, for the OpenAPI document and the event type catalog.
    pub schema: Option<serde_json::Value>,
}

impl EventType {
    /// A type named `name`; its test event's `data` is `{}` until [`example`](Self::example).
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            example: serde_json::Value::Object(serde_json::Map::new()),
            schema: None,
        }
    }

    /// Sets the JSON Schema of the events' `data` (shown in the OpenAPI document and the
    /// event type catalog).
    pub fn schema(mut self, schema: serde_json::Value) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Sets the test event's `data`.
    ///
    /// # Panics
    ///
    /// If `example` does not serialise to JSON (a map with non-string keys).
    pub fn example(mut self, example: impl Serialize) -> Self {
        self.example = serde_json::to_value(example).expect("an example event serialises");
        self
    }

    /// `endpoint.disabled`: one of the owner's webhooks was disabled by the health rule. The
    /// payload is [`EndpointDisabled`]. Declare it to have the registry publish it (to the
    /// owner's webhooks that subscribe to it).
    pub fn endpoint_disabled() -> Self {
        Self::new(
            EndpointDisabled::TYPE,
            "A webhook was disabled automatically because its endpoint kept failing.",
        )
        .example(EndpointDisabled {
            webhook_id: "my-webhook".into(),
            endpoint_url: "https://example.com/webhooks".into(),
            reason: "10 failed deliveries within 86400 s".into(),
            disabled_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_731_381_205),
        })
    }

    pub(crate) fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }
}

/// The body of every delivery the registry sends:
///
/// ```json
/// {"id": "evt_…", "type": "run.status", "created_at": "2026-01-02T03:04:05.678Z", "data": {…}}
/// ```
///
/// `id` is the event's id (the same for every webhook it fans out to); each delivery has its
/// own id in `X-Request-Id` (and the signed message id), which stays the same across retries
/// and re-sends: receivers de-duplicate on that one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event<T> {
    /// The event id, `evt_` + 32 hex digits.
    pub id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it was published.
    #[serde(with = "rfc3339")]
    pub created_at: SystemTime,
    /// The payload.
    pub data: T,
}

impl<T> Event<T> {
    /// An event with a fresh id.
    pub fn new(event_type: impl Into<String>, created_at: SystemTime, data: T) -> Self {
        Self {
            id: new_id("evt_"),
            event_type: event_type.into(),
            created_at,
            data,
        }
    }
}

/// A fresh id: `prefix` + 32 lowercase hex digits (a random UUID).
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// The `endpoint.disabled` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EndpointDisabled {
    /// The webhook that was disabled.
    pub webhook_id: String,
    /// Its endpoint.
    pub endpoint_url: String,
    /// Why.
    pub reason: String,
    /// When.
    #[serde(with = "rfc3339")]
    pub disabled_at: SystemTime,
}

impl EndpointDisabled {
    /// The event type name.
    pub const TYPE: &'static str = "endpoint.disabled";
}

/// RFC 3339 text for `SystemTime`, as serde `with` helpers and plain functions.
pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    /// `time` as RFC 3339 in UTC (`2026-01-02T03:04:05.678Z`; fractional seconds only when
    /// there are some), to the millisecond: the precision the durable stores keep, so a
    /// record reads the same in the answer that created it and in every later one.
    pub(crate) fn format(time: SystemTime) -> String {
        let time = OffsetDateTime::from(time);
        let millis = time.nanosecond() / 1_000_000 * 1_000_000;
        time.replace_nanosecond(millis)
            .unwrap_or(time)
            .format(&Rfc3339)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
    }

    /// Parses RFC 3339 text with any offset (`Z`, `+02:00`).
    pub(crate) fn parse(text: &str) -> Option<SystemTime> {
        OffsetDateTime::parse(text.trim(), &Rfc3339)
            .ok()
            .map(SystemTime::from)
    }

    /// serde: serialises as [`format()`].
    pub(crate) fn serialize<S: Serializer>(
        time: &SystemTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*time))
    }

    /// serde: deserialises with [`parse()`].
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 date-time"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_731_381_205_123);
        let text = rfc3339::format(t);
        assert_eq!(text, "2024-11-12T03:13:25.123Z");
        assert_eq!(rfc3339::parse(&text), Some(t));
        assert_eq!(rfc3339::parse("2024-11-12T05:13:25.123+02:00"), Some(t));
        assert_eq!(rfc3339::parse("yesterday"), None);
        // Milliseconds, as the stores keep them.
        let precise = t + Duration::from_nanos(456_789);
        assert_eq!(rfc3339::format(precise), "2024-11-12T03:13:25.123Z");
    }

    #[test]
    fn event_shape() {
        let event = Event::new(
            "run.status",
            SystemTime::UNIX_EPOCH,
            serde_json::json!({"run_id": "run-1"}),
        );
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "run.status");
        assert!(json["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(json["data"]["run_id"], "run-1");
    }

    #[test]
    fn names() {
        assert!(EventType::valid_name("run.status"));
        assert!(!EventType::valid_name(""));
        assert!(!EventType::valid_name("run status"));
    }
}
