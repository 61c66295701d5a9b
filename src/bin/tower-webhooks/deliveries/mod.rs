//! `deliveries`: a delivery store's queue and dead letters, read and acted on through the
//! library's store and engine, with the filters of the registry's API.

use std::sync::Arc;
use std::time::SystemTime;

use clap::{Args, Subcommand};
use tower_webhooks::delivery::{ConversationPosition, ConversationQuery, DeliveryState};
use tower_webhooks::registry::api::ConversationCursor;
use tower_webhooks::store::{
    DeliveryStore, EncryptionKeys, PostgresOptions, SqliteOptions, StoreError, ENCRYPTION_KEYS_ENV,
};

use crate::exit::Failure;

mod resend;
mod view;

/// `deliveries`: inspect and re-send.
#[derive(Debug, Args)]
pub(crate) struct DeliveriesArgs {
    /// The store: `sqlite:PATH` or `postgres://user@host/db`. Secrets stored encrypted need
    /// the key ring in TOWER_WEBHOOKS_ENCRYPTION_KEYS.
    #[arg(
        long,
        env = "TOWER_WEBHOOKS_STORE",
        global = true,
        value_name = "SPEC",
        hide_env_values = true
    )]
    store: Option<String>,
    /// The PostgreSQL schema of the tables.
    #[arg(long, global = true)]
    schema: Option<String>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Deliveries matching the filters, newest first, one page at a time.
    List(view::ListArgs),
    /// One delivery with every attempt (headers redacted, bodies truncated).
    Show(view::ShowArgs),
    /// Re-send final deliveries by id: one manual attempt each, signed afresh.
    Resend(resend::ResendArgs),
    /// Re-send every failed delivery matching the filters (an endpoint, since a time).
    Recover(resend::RecoverArgs),
}

/// The filters of the API: state, endpoint, endpoint id, creation time.
#[derive(Debug, Clone, Args)]
pub(crate) struct Filters {
    /// pending, in_flight, delivered, failed (the dead letters) or refused.
    #[arg(long, value_parser = parse_state)]
    state: Option<DeliveryState>,
    /// Only deliveries to this exact endpoint URL.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// Only deliveries of this registered endpoint (registry webhook) id.
    #[arg(long, value_name = "ID")]
    endpoint_id: Option<String>,
    /// Only deliveries created at or after this time: RFC 3339 (`2026-01-31T12:00:00Z`) or an
    /// age (`2h`, `3days`).
    #[arg(long, value_parser = parse_since, value_name = "TIME|AGE")]
    since: Option<SystemTime>,
}

impl Filters {
    pub(crate) fn query(&self) -> ConversationQuery {
        let mut query = ConversationQuery::new();
        if let Some(state) = self.state {
            query = query.state(state);
        }
        if let Some(endpoint) = &self.endpoint {
            query = query.endpoint(endpoint.clone());
        }
        if let Some(id) = &self.endpoint_id {
            query = query.endpoint_id(id.clone());
        }
        if let Some(since) = self.since {
            query = query.since(since);
        }
        query
    }
}

pub(crate) async fn run(args: DeliveriesArgs) -> Result<(), Failure> {
    let spec = args.store.ok_or_else(|| {
        Failure::usage("--store sqlite:PATH|postgres://… (or TOWER_WEBHOOKS_STORE) is needed")
    })?;
    let store = open(&spec, args.schema.as_deref()).await?;
    match args.action {
        Action::List(list) => view::list(&store, list).await,
        Action::Show(show) => view::show(&store, show).await,
        Action::Resend(resend) => resend::resend(store, resend).await,
        Action::Recover(recover) => resend::recover(store, recover).await,
    }
}

/// Opens the store `spec` names, as a process that shares it with the service that owns it:
/// SQLite deliveries in flight stay claimed (their leases expire if that service died), and
/// PostgreSQL keeps a small pool without `LISTEN`.
async fn open(spec: &str, schema: Option<&str>) -> Result<Arc<dyn DeliveryStore>, Failure> {
    let keys = EncryptionKeys::from_env(ENCRYPTION_KEYS_ENV)
        .map_err(|e| Failure::usage(format!("{ENCRYPTION_KEYS_ENV}: {e}")))?;
    if let Some(path) = spec.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        // Opening creates a missing file: a typo would show an empty store instead of an error.
        if !std::path::Path::new(path).is_file() {
            return Err(Failure::usage(format!("sqlite:{path}: no such file")));
        }
        let mut options = SqliteOptions::new(path).recover_in_flight(false);
        if let Some(keys) = keys {
            options = options.encryption_keys(keys);
        }
        let store = options
            .connect()
            .await
            .map_err(|e| Failure::environment(format!("sqlite:{path}: {e}")))?;
        return Ok(Arc::new(store));
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let mut options = PostgresOptions::new(spec).listen(false).max_connections(2);
        if let Some(schema) = schema {
            options = options.schema(schema);
        }
        if let Some(keys) = keys {
            options = options.encryption_keys(keys);
        }
        // The error never repeats the URL, which may hold a password.
        let store = options
            .connect()
            .await
            .map_err(|e| Failure::environment(format!("the PostgreSQL store: {e}")))?;
        return Ok(Arc::new(store));
    }
    Err(Failure::usage("--store takes sqlite:PATH or postgres://…"))
}

/// A store error as the exit it causes: a missing or non-final delivery is the user's
/// mistake, anything else the environment's.
pub(crate) fn store_failure(error: StoreError) -> Failure {
    match error {
        StoreError::NotFound(_) | StoreError::NotFinal(_) | StoreError::Invalid(_) => {
            Failure::usage(error)
        }
        _ => Failure::environment(error),
    }
}

fn parse_state(text: &str) -> Result<DeliveryState, String> {
    [
        DeliveryState::Pending,
        DeliveryState::InFlight,
        DeliveryState::Delivered,
        DeliveryState::Failed,
        DeliveryState::Refused,
    ]
    .into_iter()
    .find(|state| state.as_str() == text.replace('-', "_"))
    .ok_or_else(|| "expected pending, in_flight, delivered, failed or refused".to_owned())
}

fn parse_since(text: &str) -> Result<SystemTime, String> {
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time);
    }
    let age = humantime::parse_duration(text)
        .map_err(|_| "expected an RFC 3339 time or an age such as 2h".to_owned())?;
    SystemTime::now()
        .checked_sub(age)
        .ok_or_else(|| "that age reaches before 1970".to_owned())
}

/// `--cursor`: the registry's conversation cursor, so one format serves the management API's
/// `next_cursor` and this command.
pub(crate) fn parse_cursor(text: &str) -> Result<ConversationPosition, String> {
    ConversationCursor::parse(text)
        .map(ConversationCursor::into_position)
        .ok_or_else(|| "not a cursor printed by `deliveries list`".to_owned())
}

/// A time as RFC 3339 to the second, UTC.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn cursors_read_back() {
        let position = ConversationPosition::new(
            "msg.1",
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        );
        let cursor = ConversationCursor::from(position.clone()).to_string();
        assert_eq!(parse_cursor(&cursor).unwrap(), position);
        assert!(parse_cursor("msg_1").is_err());
    }

    #[test]
    fn since_takes_a_time_or_an_age() {
        assert_eq!(
            parse_since("2023-11-14T22:13:20Z").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        let since = parse_since("2h").unwrap();
        let age = SystemTime::now().duration_since(since).unwrap();
        assert!(
            age >= Duration::from_secs(7200) && age < Duration::from_secs(7260),
            "{age:?}"
        );
        assert!(parse_since("yesterday-ish").is_err());
        assert_eq!(parse_state("in-flight").unwrap(), DeliveryState::InFlight);
    }
}
