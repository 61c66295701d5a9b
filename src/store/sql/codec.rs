//! How a delivery, its signing and its attempts become columns, and rows become them again.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::backend;
use crate::delivery::model::{
    Attempt, AttemptOutcome, AttemptResponse, Conversation, Decision, Delivery, DeliveryState,
    Lease, Next, RecordedHeaders, SchemeSpec, SigningSpec, Source,
};
use crate::secret::{Secret, SecretSet};
use crate::store::StoreError;
use crate::time::{from_unix_millis, unix_millis};

use crate::store::encryption::{open_column, seal_column, EncryptionKeys};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The associated data a sealed `secrets` / `headers` value is bound to.
const SECRETS_COLUMN: &str = "deliveries.secrets";
const HEADERS_COLUMN: &str = "deliveries.headers";

/// The columns every delivery query returns, in this order.
pub(crate) const DELIVERY_COLUMNS: &str = "id, endpoint, endpoint_id, source, scheme, secrets, \
     headers, body, state, attempts, manual, next_attempt_at, lease_token, lease_expires_at, \
     created_at, updated_at, last_error";

/// The columns every attempt query returns, in this order.
pub(crate) const ATTEMPT_COLUMNS: &str = "delivery_id, number, manual, started_at, latency_us, \
     request_headers, body_size, body_sha256, outcome, outcome_detail, decision, retry_at, \
     response_status, response_headers, response_body, response_truncated";

// ---------------------------------------------------------------------------------------------
// Signing

/// How the secret columns (`secrets`, `headers`) are sealed, and the last few `scheme`
/// columns both ways: the deliveries of one forward layer or one webhook share a scheme, so
/// its column is encoded (and decoded) once, not per row.
#[derive(Clone, Default)]
pub(crate) struct Signers {
    cache: Arc<Mutex<SchemeCache>>,
    /// Seals the secret columns when configured.
    keys: Option<EncryptionKeys>,
}

#[derive(Default)]
struct SchemeCache {
    encoded: Vec<(SchemeSpec, String)>,
    decoded: HashMap<String, SchemeSpec>,
}

const CACHED_SCHEMES: usize = 32;

impl Signers {
    /// Encrypts the secret columns from now on (see [`EncryptionKeys`]).
    pub(crate) fn set_keys(&mut self, keys: EncryptionKeys) {
        self.keys = Some(keys);
    }

    /// The ring sealing the secret columns, when configured.
    #[cfg(all(feature = "postgres", feature = "registry"))]
    pub(crate) fn keys(&self) -> Option<&EncryptionKeys> {
        self.keys.as_ref()
    }

    /// Whether the secret columns are encrypted.
    pub(crate) fn encrypts(&self) -> bool {
        self.keys.is_some()
    }

    fn seal(&self, column: &str, text: String) -> String {
        seal_column(self.keys.as_ref(), column, text)
    }

    fn open<'a>(&self, column: &str, text: &'a str) -> Result<Cow<'a, str>, StoreError> {
        open_column(self.keys.as_ref(), column, text)
            .map_err(|err| StoreError::Backend(err.to_string()))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, SchemeCache> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for Signers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signers")
            .field("encrypted", &self.encrypts())
            .finish()
    }
}

/// The `scheme` column of a scheme, cached.
fn scheme_column(scheme: &SchemeSpec, signers: &Signers) -> Result<String, StoreError> {
    if let Some((_, column)) = signers
        .cache()
        .encoded
        .iter()
        .find(|(cached, _)| cached == scheme)
    {
        return Ok(column.clone());
    }
    // Through a `Value`, whose maps are ordered by key: the column reads the same whichever
    // order the scheme's fields are declared in.
    let value = serde_json::to_value(scheme).map_err(backend)?;
    // Only a configuration that reads back as the same scheme is kept: a scheme whose
    // serialised form redacts a secret would sign differently after a restart.
    let back = serde_json::from_value::<SchemeSpec>(value.clone()).ok();
    if back.as_ref() != Some(scheme) {
        return Err(StoreError::Invalid(format!(
            "the scheme `{}` cannot be persisted with its secrets: register it with the \
             engine's `custom_signer` and sign with `SchemeSpec::custom`",
            scheme.name()
        )));
    }
    let column = value.to_string();
    let mut cache = signers.cache();
    if cache.encoded.len() >= CACHED_SCHEMES {
        cache.encoded.remove(0);
    }
    cache.encoded.push((scheme.clone(), column.clone()));
    Ok(column)
}

/// One entry of the `secrets` column. The value is stored as given (base64 of its bytes).
#[derive(Serialize, Deserialize)]
struct SecretColumn {
    value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

/// The `(scheme, secrets)` columns of a signing.
pub(crate) fn encode_signing(
    signing: &SigningSpec,
    signers: &Signers,
) -> Result<(String, String), StoreError> {
    let scheme = scheme_column(signing.scheme(), signers)?;
    let secrets: Vec<SecretColumn> = signing
        .secrets()
        .iter()
        .map(|secret| SecretColumn {
            value: B64.encode(secret.expose()),
            id: secret.id().map(str::to_owned),
        })
        .collect();
    let secrets = serde_json::to_string(&secrets).map_err(backend)?;
    Ok((scheme, signers.seal(SECRETS_COLUMN, secrets)))
}

/// The `(scheme, secrets)` columns of a signing, when one is given.
pub(crate) fn encode_optional(
    signing: Option<SigningSpec>,
    signers: &Signers,
) -> Result<Option<(String, String)>, StoreError> {
    signing
        .map(|signing| encode_signing(&signing, signers))
        .transpose()
}

/// A signing from its columns.
pub(crate) fn decode_signing(
    scheme: &str,
    secrets: &str,
    signers: &Signers,
) -> Result<SigningSpec, StoreError> {
    let corrupt = |what: &str| StoreError::Backend(format!("unreadable {what} column"));
    let cached = signers.cache().decoded.get(scheme).cloned();
    let spec = match cached {
        Some(spec) => spec,
        None => {
            let spec: SchemeSpec = serde_json::from_str(scheme).map_err(|_| corrupt("scheme"))?;
            let mut cache = signers.cache();
            if cache.decoded.len() >= CACHED_SCHEMES {
                cache.decoded.clear();
            }
            cache.decoded.insert(scheme.to_owned(), spec.clone());
            spec
        }
    };
    let secrets = signers.open(SECRETS_COLUMN, secrets)?;
    let columns: Vec<SecretColumn> =
        serde_json::from_str(&secrets).map_err(|_| corrupt("secrets"))?;
    let mut set = SecretSet::new();
    for column in columns {
        let bytes = B64.decode(column.value).map_err(|_| corrupt("secrets"))?;
        let mut secret = Secret::new(bytes);
        if let Some(id) = column.id {
            secret = secret.with_id(id);
        }
        set.push(secret);
    }
    Ok(SigningSpec::new(spec, set))
}

// ---------------------------------------------------------------------------------------------
// Headers, sources, outcomes

#[derive(Serialize, Deserialize)]
struct HeaderColumn {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    /// Base64 of a value that is not visible ASCII.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<String>,
}

/// The `headers` column: the delivery's extra request headers, sent on every attempt (sealed
/// when encryption is configured: they may carry an endpoint's credentials).
pub(crate) fn encode_headers(headers: &HeaderMap, signers: &Signers) -> String {
    let columns: Vec<HeaderColumn> = headers
        .iter()
        .map(|(name, value)| match value.to_str() {
            Ok(text) => HeaderColumn {
                name: name.as_str().to_owned(),
                value: Some(text.to_owned()),
                bytes: None,
            },
            Err(_) => HeaderColumn {
                name: name.as_str().to_owned(),
                value: None,
                bytes: Some(B64.encode(value.as_bytes())),
            },
        })
        .collect();
    let text = serde_json::to_string(&columns).unwrap_or_else(|_| "[]".to_owned());
    signers.seal(HEADERS_COLUMN, text)
}

fn decode_headers(text: &str, signers: &Signers) -> Result<HeaderMap, StoreError> {
    let corrupt = || StoreError::Backend("unreadable headers column".into());
    let text = signers.open(HEADERS_COLUMN, text)?;
    let columns: Vec<HeaderColumn> = serde_json::from_str(&text).map_err(|_| corrupt())?;
    let mut headers = HeaderMap::with_capacity(columns.len());
    for column in columns {
        let name = HeaderName::from_bytes(column.name.as_bytes()).map_err(|_| corrupt())?;
        let value = match (column.value, column.bytes) {
            (Some(text), _) => HeaderValue::from_str(&text).map_err(|_| corrupt())?,
            (None, Some(bytes)) => {
                HeaderValue::from_bytes(&B64.decode(bytes).map_err(|_| corrupt())?)
                    .map_err(|_| corrupt())?
            }
            (None, None) => return Err(corrupt()),
        };
        let mut value = value;
        // Custom header values are write-only (see `Delivery::with_headers`).
        value.set_sensitive(true);
        headers.append(name, value);
    }
    Ok(headers)
}

/// Recorded (already redacted) header pairs, redacted again on the way in.
pub(crate) fn encode_pairs(pairs: &RecordedHeaders) -> String {
    let redacted: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(name, value)| (name, crate::sensitive::redact(name, value)))
        .collect();
    serde_json::to_string(&redacted).unwrap_or_else(|_| "[]".to_owned())
}

fn decode_pairs(text: &str) -> Result<RecordedHeaders, StoreError> {
    serde_json::from_str::<Vec<(String, String)>>(text)
        .map(RecordedHeaders::from_iter)
        .map_err(|_| StoreError::Backend("unreadable recorded headers column".into()))
}

/// The `source` column: `resend`, `event:<type>`, or the origin's bare label (`other:<label>`
/// when the bare label would read back as something else).
pub(crate) fn encode_source(source: &Source) -> String {
    match source {
        Source::Resend => "resend".to_owned(),
        Source::Event(kind) => format!("event:{kind}"),
        Source::Origin(label) => {
            if matches!(decode_source(label), Source::Origin(ref same) if same == label) {
                label.clone().into_owned()
            } else {
                format!("other:{label}")
            }
        }
    }
}

fn decode_source(text: &str) -> Source {
    match text {
        "resend" => Source::Resend,
        _ => match text.split_once(':') {
            Some(("event", kind)) => Source::Event(kind.to_owned()),
            Some(("other", label)) => Source::origin(label.to_owned()),
            _ => Source::origin(text.to_owned()),
        },
    }
}

/// The `state` column back to a state.
pub(crate) fn decode_state(text: &str) -> Result<DeliveryState, StoreError> {
    Ok(match text {
        "pending" => DeliveryState::Pending,
        "in_flight" => DeliveryState::InFlight,
        "delivered" => DeliveryState::Delivered,
        "failed" => DeliveryState::Failed,
        "refused" => DeliveryState::Refused,
        other => return Err(StoreError::Backend(format!("unknown state `{other}`"))),
    })
}

fn encode_outcome(outcome: &AttemptOutcome) -> (&'static str, Option<String>) {
    match outcome {
        AttemptOutcome::Status(status) => ("status", Some(status.to_string())),
        AttemptOutcome::Timeout => ("timeout", None),
        AttemptOutcome::Connect(why) => ("connect", Some(why.clone())),
        AttemptOutcome::Network(why) => ("network", Some(why.clone())),
        AttemptOutcome::Refused(why) => ("refused", Some(why.clone())),
        AttemptOutcome::SignFailed(why) => ("sign_failed", Some(why.clone())),
    }
}

fn decode_outcome(kind: &str, detail: Option<String>) -> AttemptOutcome {
    let detail_text = detail.clone().unwrap_or_default();
    match kind {
        "status" => AttemptOutcome::Status(detail_text.parse().unwrap_or(0)),
        "timeout" => AttemptOutcome::Timeout,
        "connect" => AttemptOutcome::Connect(detail_text),
        "refused" => AttemptOutcome::Refused(detail_text),
        "sign_failed" => AttemptOutcome::SignFailed(detail_text),
        _ => AttemptOutcome::Network(detail_text),
    }
}

fn encode_decision(decision: &Decision) -> (&'static str, Option<i64>) {
    match decision {
        Decision::Delivered => ("delivered", None),
        Decision::RetryAt(at) => ("retry", Some(unix_millis(*at))),
        Decision::GaveUp => ("gave_up", None),
        Decision::DisableEndpoint => ("disable_endpoint", None),
        Decision::Refused => ("refused", None),
    }
}

fn decode_decision(kind: &str, at: Option<i64>) -> Decision {
    match kind {
        "delivered" => Decision::Delivered,
        "retry" => Decision::RetryAt(from_unix_millis(at.unwrap_or(0))),
        "disable_endpoint" => Decision::DisableEndpoint,
        "refused" => Decision::Refused,
        _ => Decision::GaveUp,
    }
}

// ---------------------------------------------------------------------------------------------
// Rows

/// A delivery as bind values.
pub(crate) struct DeliveryRow {
    pub(crate) id: String,
    pub(crate) endpoint: String,
    pub(crate) endpoint_id: Option<String>,
    pub(crate) source: String,
    pub(crate) scheme: Option<String>,
    pub(crate) secrets: Option<String>,
    pub(crate) headers: String,
    pub(crate) body: Bytes,
    pub(crate) next_attempt_at: i64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    /// Claimed as it is inserted ([`enqueue_claimed`](crate::store::DeliveryStore::enqueue_claimed)):
    /// the lease expiry; the row starts in flight with fencing token 1.
    pub(crate) claimed_until: Option<i64>,
}

impl DeliveryRow {
    /// The row's `state`, `due_at`, `lease_token` and `lease_expires_at` on insert.
    pub(crate) fn queue_columns(&self) -> (&'static str, i64, i64, Option<i64>) {
        match self.claimed_until {
            Some(until) => (DeliveryState::InFlight.as_str(), until, 1, Some(until)),
            None => (
                DeliveryState::Pending.as_str(),
                self.next_attempt_at,
                0,
                None,
            ),
        }
    }

    /// Encodes a new delivery (the signing must be persistable).
    pub(crate) fn new(delivery: &Delivery, signers: &Signers) -> Result<Self, StoreError> {
        let (scheme, secrets) = match &delivery.signing {
            Some(signing) => {
                let (scheme, secrets) = encode_signing(signing, signers)?;
                (Some(scheme), Some(secrets))
            }
            None => (None, None),
        };
        Ok(Self {
            id: delivery.id.clone(),
            endpoint: delivery.endpoint.clone(),
            endpoint_id: delivery.endpoint_id.clone(),
            source: encode_source(&delivery.source),
            scheme,
            secrets,
            headers: encode_headers(&delivery.headers, signers),
            body: delivery.body.clone(),
            next_attempt_at: unix_millis(delivery.next_attempt_at),
            created_at: unix_millis(delivery.created_at),
            updated_at: unix_millis(SystemTime::now()),
            claimed_until: None,
        })
    }
}

/// An attempt as bind values.
pub(crate) struct AttemptRow {
    pub(crate) number: i64,
    pub(crate) manual: bool,
    pub(crate) started_at: i64,
    pub(crate) latency_us: i64,
    pub(crate) request_headers: String,
    pub(crate) body_size: i64,
    pub(crate) body_sha256: String,
    pub(crate) outcome: &'static str,
    pub(crate) outcome_detail: Option<String>,
    pub(crate) decision: &'static str,
    pub(crate) retry_at: Option<i64>,
    pub(crate) response_status: Option<i64>,
    pub(crate) response_headers: Option<String>,
    pub(crate) response_body: Option<Vec<u8>>,
    pub(crate) response_truncated: Option<bool>,
}

impl AttemptRow {
    pub(crate) fn new(attempt: &Attempt) -> Self {
        let (outcome, outcome_detail) = encode_outcome(&attempt.outcome);
        let (decision, retry_at) = encode_decision(&attempt.decision);
        let response = attempt.response.as_ref();
        Self {
            number: i64::from(attempt.number),
            manual: attempt.manual,
            started_at: unix_millis(attempt.started_at),
            latency_us: i64::try_from(attempt.latency.as_micros()).unwrap_or(i64::MAX),
            request_headers: encode_pairs(&attempt.request_headers),
            body_size: i64::try_from(attempt.body_size).unwrap_or(i64::MAX),
            body_sha256: attempt.body_sha256.clone(),
            outcome,
            outcome_detail,
            decision,
            retry_at,
            response_status: response.map(|r| i64::from(r.status)),
            response_headers: response.map(|r| encode_pairs(&r.headers)),
            response_body: response.map(|r| r.body.to_vec()),
            response_truncated: response.map(|r| r.body_truncated),
        }
    }
}

/// What [`DeliveryStore::record_attempt`](crate::store::DeliveryStore::record_attempt) writes to the
/// delivery row.
pub(crate) struct NextRow {
    pub(crate) state: &'static str,
    /// The next due time (`None` for a final state).
    pub(crate) due_at: Option<i64>,
    pub(crate) last_error: Option<String>,
}

impl NextRow {
    pub(crate) fn new(next: &Next) -> Self {
        match next {
            Next::Retry { at } => Self {
                state: DeliveryState::Pending.as_str(),
                due_at: Some(unix_millis(*at)),
                last_error: None,
            },
            Next::Final { state, reason } => Self {
                state: state.as_str(),
                due_at: None,
                last_error: reason.clone(),
            },
        }
    }
}

/// Typed column access shared by the SQLite and PostgreSQL rows.
pub(crate) trait RowExt {
    fn text(&self, column: &str) -> Result<String, StoreError>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    fn blob(&self, column: &str) -> Result<Vec<u8>, StoreError>;
    fn opt_blob(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn flag(&self, column: &str) -> Result<bool, StoreError>;
    fn opt_flag(&self, column: &str) -> Result<Option<bool>, StoreError>;
}

macro_rules! impl_row_ext {
    ($row:ty) => {
        impl $crate::store::sql::RowExt for $row {
            fn text(&self, column: &str) -> Result<String, StoreError> {
                sqlx::Row::try_get(self, column).map_err($crate::store::sql::backend)
            }
            fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
                sqlx::Row::try_get(self, column).map_err($crate::store::sql::backend)
            }
            fn int(&self, column: &str) -> Result<i64, StoreError> {
                sqlx::Row::try_get(self, column).map_err($crate::store::sql::backend)
            }
            fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
                sqlx::Row::try_get(self, column).map_err($crate::store::sql::backend)
            }
            fn blob(&self, column: &str) -> Result<Vec<u8>, StoreError> {
                sqlx::Row::try_get(self, column).map_err($crate::store::sql::backend)
            }
            fn opt_blob(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
                sqlx::Row::try_get(self, column).map_err($crate::store::sql::backend)
            }
            fn flag(&self, column: &str) -> Result<bool, StoreError> {
                sqlx::Row::try_get(self, column).map_err($crate::store::sql::backend)
            }
            fn opt_flag(&self, column: &str) -> Result<Option<bool>, StoreError> {
                sqlx::Row::try_get(self, column).map_err($crate::store::sql::backend)
            }
        }
    };
}
pub(crate) use impl_row_ext;

fn to_u32(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

/// A delivery from a row of [`DELIVERY_COLUMNS`].
pub(crate) fn delivery_from_row(
    row: &impl RowExt,
    signers: &Signers,
) -> Result<Delivery, StoreError> {
    let signing = match (row.opt_text("scheme")?, row.opt_text("secrets")?) {
        (Some(scheme), Some(secrets)) => Some(decode_signing(&scheme, &secrets, signers)?),
        _ => None,
    };
    let mut delivery = Delivery::new(row.text("id")?, row.text("endpoint")?, row.blob("body")?);
    delivery.endpoint_id = row.opt_text("endpoint_id")?;
    delivery.signing = signing;
    delivery.headers = decode_headers(&row.text("headers")?, signers)?;
    delivery.attempts = to_u32(row.int("attempts")?);
    delivery.next_attempt_at = from_unix_millis(row.int("next_attempt_at")?);
    delivery.state = decode_state(&row.text("state")?)?;
    delivery.created_at = from_unix_millis(row.int("created_at")?);
    delivery.updated_at = from_unix_millis(row.int("updated_at")?);
    delivery.source = decode_source(&row.text("source")?);
    delivery.last_error = row.opt_text("last_error")?;
    delivery.manual = row.flag("manual")?;
    Ok(delivery)
}

/// The lease of a claimed row of [`DELIVERY_COLUMNS`].
pub(crate) fn lease_from_row(row: &impl RowExt) -> Result<Lease, StoreError> {
    Ok(Lease {
        token: u64::try_from(row.int("lease_token")?).unwrap_or(0),
        until: from_unix_millis(row.opt_int("lease_expires_at")?.unwrap_or(0)),
    })
}

/// An attempt (and its delivery id) from a row of [`ATTEMPT_COLUMNS`].
pub(crate) fn attempt_from_row(row: &impl RowExt) -> Result<(String, Attempt), StoreError> {
    let outcome = decode_outcome(&row.text("outcome")?, row.opt_text("outcome_detail")?);
    let mut attempt = Attempt::new(
        to_u32(row.int("number")?),
        from_unix_millis(row.int("started_at")?),
        outcome,
    );
    attempt.manual = row.flag("manual")?;
    attempt.latency = Duration::from_micros(row.int("latency_us")?.max(0).unsigned_abs());
    attempt.request_headers = decode_pairs(&row.text("request_headers")?)?;
    attempt.body_size = usize::try_from(row.int("body_size")?).unwrap_or(0);
    attempt.body_sha256 = row.text("body_sha256")?;
    attempt.decision = decode_decision(&row.text("decision")?, row.opt_int("retry_at")?);
    if let Some(status) = row.opt_int("response_status")? {
        attempt.response = Some(AttemptResponse::new(
            u16::try_from(status).unwrap_or(0),
            decode_pairs(&row.opt_text("response_headers")?.unwrap_or_default())
                .unwrap_or_default(),
            Bytes::from(row.opt_blob("response_body")?.unwrap_or_default()),
            row.opt_flag("response_truncated")?.unwrap_or(false),
        ));
    }
    Ok((row.text("delivery_id")?, attempt))
}

/// Groups attempts (ordered by delivery) under their deliveries, keeping the deliveries' order.
pub(crate) fn conversations(
    deliveries: Vec<Delivery>,
    attempts: Vec<(String, Attempt)>,
) -> Vec<Conversation> {
    let mut by_id: HashMap<String, Vec<Attempt>> = HashMap::new();
    for (id, attempt) in attempts {
        by_id.entry(id).or_default().push(attempt);
    }
    deliveries
        .into_iter()
        .map(|delivery| {
            let mut attempts = by_id.remove(&delivery.id).unwrap_or_default();
            attempts.sort_by_key(|a| (a.number, a.started_at));
            Conversation { delivery, attempts }
        })
        .collect()
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
