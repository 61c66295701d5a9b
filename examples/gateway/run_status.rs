//! The demo's `run.status` event: the payload the gateway publishes when one of its demo runs
//! changes state. An application declares its own event types the same way; the tests and
//! benchmarks include this file to publish realistic events.
// Each includer uses a part of it.
#![allow(dead_code)]

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tower_webhooks::registry::EventType;

/// A run's state, as carried by `run.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Accepted, waiting for a worker.
    Queued,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Canceled before it finished.
    Canceled,
}

impl RunState {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }
}

/// The `run.status` payload (the `data` of the event): which run of which application is now
/// in which state.
///
/// ```json
/// {"run_id": "run-123", "application_id": "routing-app", "status": "succeeded",
///  "created_at": "2026-01-02T03:04:05Z", "updated_at": "2026-01-02T03:04:35Z"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunStatus {
    /// The run.
    pub run_id: String,
    /// The application the run belongs to.
    pub application_id: String,
    /// Its state now.
    pub status: RunState,
    /// When the run was created (RFC 3339).
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: SystemTime,
    /// When it entered `status` (RFC 3339).
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: SystemTime,
}

impl RunStatus {
    /// The event type name.
    pub const TYPE: &'static str = "run.status";

    /// A payload for `run_id` of `application_id` in `status`, created and updated at `at`.
    pub fn new(
        run_id: impl Into<String>,
        application_id: impl Into<String>,
        status: RunState,
        at: SystemTime,
    ) -> Self {
        Self {
            run_id: run_id.into(),
            application_id: application_id.into(),
            status,
            created_at: at,
            updated_at: at,
        }
    }

    /// Sets when the run entered its state.
    pub fn updated_at(mut self, at: SystemTime) -> Self {
        self.updated_at = at;
        self
    }

    /// The test event's payload.
    pub fn example() -> Self {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_731_381_205);
        Self::new("test-run", "test-application", RunState::Succeeded, at)
    }
}

/// `run.status` as a declared event type: its description, example and JSON Schema.
pub fn event_type() -> EventType {
    EventType::new(
        RunStatus::TYPE,
        "A run changed state (queued, running, succeeded, failed or canceled).",
    )
    .example(RunStatus::example())
    .schema(
        serde_json::to_value(<RunStatus as utoipa::PartialSchema>::schema()).unwrap_or_default(),
    )
}

/// RFC 3339 times in UTC, to the millisecond, as the registry writes its own.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        let at = OffsetDateTime::from(*at);
        let at = at
            .replace_nanosecond(at.nanosecond() / 1_000_000 * 1_000_000)
            .unwrap_or(at);
        let text = at.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        OffsetDateTime::parse(&text, &Rfc3339)
            .map(SystemTime::from)
            .map_err(serde::de::Error::custom)
    }
}
