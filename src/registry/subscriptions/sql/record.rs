//! A [`Webhook`] as columns and back, in either database.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::dialect::SubscriptionDialect;
use crate::registry::model::{
    Endpoint as Webhook, EndpointRateLimit as RateLimit, Owner, SigningScheme, WebhookSecret,
};
use crate::registry::subscriptions::SubscriptionError;
use crate::secret::Secret;
use crate::store::encryption::{open_column, seal_column};
use crate::store::sql::SqlQuery;
use crate::store::{EncryptionKeys, StoreError};
use crate::time::{from_unix_millis, unix_millis};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The columns every webhook query returns, in this order.
pub(super) const COLUMNS: &str = "owner, id, endpoint_url, event_types, description, scheme, \
     secrets, headers, enabled, disabled_reason, rate_per_second, rate_burst, created_at, \
     updated_at";

/// The associated data a sealed `secrets` / `headers` value is bound to.
const SECRETS_COLUMN: &str = "webhooks.secrets";
const HEADERS_COLUMN: &str = "webhooks.headers";

/// A backend error (bind values, hence secrets, never appear in sqlx's messages).
pub(super) fn backend(err: impl std::fmt::Display) -> SubscriptionError {
    SubscriptionError::Backend(err.to_string())
}

/// A row that could not be read as a [`SubscriptionError`].
pub(super) fn from_store(err: StoreError) -> SubscriptionError {
    match err {
        StoreError::Backend(why) => SubscriptionError::Backend(why),
        other => SubscriptionError::Backend(other.to_string()),
    }
}

/// Whether a database error is a unique violation (the `(owner, id)` key is taken).
pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// One entry of the `secrets` column.
#[derive(Serialize, Deserialize)]
struct SecretColumn {
    /// Base64 of the secret's bytes.
    value: String,
    created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// A webhook as bind values (and as read back).
pub(super) struct Record {
    pub(super) owner: String,
    pub(super) id: String,
    pub(super) endpoint_url: String,
    pub(super) event_types: Vec<String>,
    pub(super) description: String,
    pub(super) scheme: String,
    pub(super) secrets: String,
    pub(super) headers: String,
    pub(super) enabled: bool,
    pub(super) disabled_reason: Option<String>,
    pub(super) rate_per_second: Option<i64>,
    pub(super) rate_burst: Option<i64>,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

impl Record {
    /// `keys` seal the secret columns (`secrets`, `headers`) when configured.
    pub(super) fn new(
        webhook: &Webhook,
        keys: Option<&EncryptionKeys>,
    ) -> Result<Self, SubscriptionError> {
        let secrets: Vec<SecretColumn> = webhook
            .secrets
            .iter()
            .map(|s| SecretColumn {
                value: B64.encode(s.secret.expose()),
                created_at: unix_millis(s.created_at),
                expires_at: s.expires_at.map(unix_millis),
            })
            .collect();
        Ok(Self {
            owner: webhook.owner.as_str().to_owned(),
            id: webhook.id.clone(),
            endpoint_url: webhook.endpoint_url.clone(),
            event_types: webhook.event_types.clone(),
            description: webhook.description.clone(),
            scheme: webhook.scheme.as_str().to_owned(),
            secrets: seal_column(
                keys,
                SECRETS_COLUMN,
                serde_json::to_string(&secrets).map_err(backend)?,
            ),
            headers: seal_column(
                keys,
                HEADERS_COLUMN,
                serde_json::to_string(&webhook.headers).map_err(backend)?,
            ),
            enabled: webhook.enabled,
            disabled_reason: webhook.disabled_reason.clone(),
            rate_per_second: webhook.rate_limit.map(|r| i64::from(r.per_second)),
            rate_burst: webhook.rate_limit.map(|r| i64::from(r.burst)),
            created_at: unix_millis(webhook.created_at),
            updated_at: unix_millis(webhook.updated_at),
        })
    }

    /// A row of [`COLUMNS`].
    pub(super) fn read<DB: SubscriptionDialect>(row: &DB::Row) -> Result<Self, SubscriptionError> {
        let columns = DB::columns(row);
        let text = |column: &str| columns.text(column).map_err(from_store);
        let int = |column: &str| columns.int(column).map_err(from_store);
        let opt_int = |column: &str| columns.opt_int(column).map_err(from_store);
        Ok(Self {
            owner: text("owner")?,
            id: text("id")?,
            endpoint_url: text("endpoint_url")?,
            event_types: DB::read_event_types(row)?,
            description: text("description")?,
            scheme: text("scheme")?,
            secrets: text("secrets")?,
            headers: text("headers")?,
            enabled: columns.flag("enabled").map_err(from_store)?,
            disabled_reason: columns.opt_text("disabled_reason").map_err(from_store)?,
            rate_per_second: opt_int("rate_per_second")?,
            rate_burst: opt_int("rate_burst")?,
            created_at: int("created_at")?,
            updated_at: int("updated_at")?,
        })
    }

    /// `sql` with every column bound at `$1..$14`, in [`COLUMNS`] order.
    pub(super) fn bind<'q, DB: SubscriptionDialect>(
        &self,
        sql: &'q str,
    ) -> Result<SqlQuery<'q, DB>, SubscriptionError> {
        let text = |query, value: &String| DB::text(query, Some(value.clone()));
        let query = text(sqlx::query(sql), &self.owner);
        let query = text(query, &self.id);
        let query = text(query, &self.endpoint_url);
        let query = DB::event_types(query, &self.event_types)?;
        let query = text(query, &self.description);
        let query = text(query, &self.scheme);
        let query = text(query, &self.secrets);
        let query = text(query, &self.headers);
        let query = DB::flag(query, self.enabled);
        let query = DB::text(query, self.disabled_reason.clone());
        let query = DB::int(query, self.rate_per_second);
        let query = DB::int(query, self.rate_burst);
        let query = DB::int(query, Some(self.created_at));
        Ok(DB::int(query, Some(self.updated_at)))
    }

    /// The webhook, its secret columns opened with `keys` when they were sealed.
    pub(super) fn into_webhook(
        self,
        keys: Option<&EncryptionKeys>,
    ) -> Result<Webhook, SubscriptionError> {
        let corrupt =
            |what: &str| SubscriptionError::Backend(format!("unreadable webhook {what} column"));
        let open = |column: &str, text: &str| {
            open_column(keys, column, text)
                .map(|text| text.into_owned())
                .map_err(|err| SubscriptionError::Backend(err.to_string()))
        };
        let scheme = SigningScheme::from_name(&self.scheme).ok_or_else(|| corrupt("scheme"))?;
        let columns: Vec<SecretColumn> =
            serde_json::from_str(&open(SECRETS_COLUMN, &self.secrets)?)
                .map_err(|_| corrupt("secrets"))?;
        let secrets = columns
            .into_iter()
            .map(|column| {
                let bytes = B64.decode(column.value).map_err(|_| corrupt("secrets"))?;
                let mut secret =
                    WebhookSecret::new(Secret::new(bytes), from_unix_millis(column.created_at));
                secret.expires_at = column.expires_at.map(from_unix_millis);
                Ok(secret)
            })
            .collect::<Result<Vec<_>, SubscriptionError>>()?;
        let headers: Vec<(String, String)> =
            serde_json::from_str(&open(HEADERS_COLUMN, &self.headers)?)
                .map_err(|_| corrupt("headers"))?;
        let to_u32 = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        let rate_limit = self.rate_per_second.map(|per_second| RateLimit {
            per_second: to_u32(per_second),
            burst: to_u32(self.rate_burst.unwrap_or(per_second)),
        });
        Ok(Webhook {
            owner: Owner::new(self.owner),
            id: self.id,
            endpoint_url: self.endpoint_url,
            event_types: self.event_types,
            description: self.description,
            scheme,
            secrets,
            headers,
            enabled: self.enabled,
            disabled_reason: self.disabled_reason,
            rate_limit,
            created_at: from_unix_millis(self.created_at),
            updated_at: from_unix_millis(self.updated_at),
        })
    }
}
