//! The answer to an accepted request: Valohai's "Web Response Text/JSON" actions.

use serde::{Deserialize, Serialize};

use crate::scheme::SuccessResponse;
#[cfg(doc)]
use crate::scheme::Verified;

/// The answer to an accepted request (Valohai's "Web Response Text/JSON" actions).
/// `{run_id}` is replaced by [`Verified::run_id`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseAction {
    /// `text/plain`; `{run_id}` is replaced anywhere.
    Text(String),
    /// `application/json`; `{run_id}` is replaced inside JSON strings only (nested included).
    Json(serde_json::Value),
}

// `serde_json::Value` cannot hold a NaN, so its equality is total.
impl Eq for ResponseAction {}

impl ResponseAction {
    /// Renders the response for `run_id`.
    pub fn render(&self, run_id: &str) -> SuccessResponse {
        match self {
            Self::Text(text) => SuccessResponse {
                content_type: "text/plain",
                body: text.replace("{run_id}", run_id),
            },
            Self::Json(value) => {
                let mut value = value.clone();
                replace_in_strings(&mut value, run_id);
                SuccessResponse {
                    content_type: "application/json",
                    body: value.to_string(),
                }
            }
        }
    }
}

fn replace_in_strings(value: &mut serde_json::Value, run_id: &str) {
    match value {
        serde_json::Value::String(text) if text.contains("{run_id}") => {
            *text = text.replace("{run_id}", run_id);
        }
        serde_json::Value::Array(items) => {
            for item in items {
                replace_in_strings(item, run_id);
            }
        }
        serde_json::Value::Object(fields) => {
            for item in fields.values_mut() {
                replace_in_strings(item, run_id);
            }
        }
        _ => {}
    }
}
