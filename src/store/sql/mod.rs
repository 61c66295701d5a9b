//! What the SQLite and PostgreSQL stores share: the columns and their encoding
//! ([`codec`]), the filters of [`ConversationQuery`], and the statements whose text is the same
//! in both dialects, written once and generic over the [`Dialect`] (a `sqlx::Database` plus
//! the little that differs between the two).
//!
//! Each backend keeps what is its own: how a statement reaches the database (SQLite's one
//! writer connection committing in groups, PostgreSQL's pool with retries through a lost
//! connection) and the statements whose shape differs (multi-row inserts, `LISTEN/NOTIFY`).

use std::fmt;
use std::future::Future;
use std::time::SystemTime;

use sqlx::query::Query;
use sqlx::Database;

use crate::delivery::model::{
    Attempt, Claim, Conversation, ConversationQuery, Delivery, DeliveryState, Lease, Next,
};
use crate::store::StoreError;
use crate::time::{from_unix_millis, unix_millis};

mod api;
mod codec;
mod store;

pub(crate) use codec::{
    attempt_from_row, conversations, decode_state, delivery_from_row, encode_optional,
    lease_from_row, AttemptRow, DeliveryRow, NextRow, RowExt, Signers, ATTEMPT_COLUMNS,
    DELIVERY_COLUMNS,
};

pub(crate) use api::sql_store_api;
pub(crate) use codec::impl_row_ext;
pub(crate) use store::sql_delivery_store;

/// A backend error as a [`StoreError`] (bind values, hence secrets, never appear in sqlx's
/// messages).
pub(crate) fn backend(err: impl fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

/// A fresh lease owner name: process id and a random suffix.
pub(crate) fn owner_name() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("pid{}-{}", std::process::id(), &random[..8])
}

/// Rows per multi-row statement (well under SQLite's 32 766 variables).
pub(crate) const CHUNK: usize = 64;

/// A recorded attempt waiting for its batch.
pub(crate) struct RecordRow {
    pub(crate) id: String,
    pub(crate) token: i64,
    pub(crate) attempt: AttemptRow,
    pub(crate) next: NextRow,
}

impl RecordRow {
    pub(crate) fn new(id: &str, lease: &Lease, attempt: &Attempt, next: &Next) -> Self {
        Self {
            id: id.to_owned(),
            token: token(lease.token),
            attempt: AttemptRow::new(attempt),
            next: NextRow::new(next),
        }
    }
}

/// An update of one in-flight delivery that applies only while `token` is its current lease
/// token (fencing): `sql` binds `at` (a time), `id` and `token` at `$1`, `$2` and `$3`. No row
/// changed means the lease is lost or the delivery is gone, which each backend's `missing`
/// tells apart.
pub(crate) struct LeasedUpdate {
    /// The operation's name, for PostgreSQL's retry log.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) operation: &'static str,
    pub(crate) sql: &'static str,
    pub(crate) at: i64,
    pub(crate) id: String,
    pub(crate) token: i64,
}

impl LeasedUpdate {
    /// [`DeliveryStore::release`](crate::store::DeliveryStore::release): the delivery back to
    /// the queue, due now.
    pub(crate) fn release(id: &str, lease: &Lease) -> Self {
        Self {
            operation: "release",
            sql: "UPDATE deliveries SET state = 'pending', due_at = $1, next_attempt_at = $1, \
                  lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
                  WHERE id = $2 AND lease_token = $3 AND state = 'in_flight'",
            at: unix_millis(SystemTime::now()),
            id: id.to_owned(),
            token: token(lease.token),
        }
    }

    /// [`DeliveryStore::renew`](crate::store::DeliveryStore::renew): the lease held until
    /// `until`.
    pub(crate) fn renew(id: &str, lease: &Lease, until: SystemTime) -> Self {
        Self {
            operation: "renew",
            sql: "UPDATE deliveries SET lease_expires_at = $1, due_at = $1 \
                  WHERE id = $2 AND lease_token = $3 AND state = 'in_flight'",
            at: unix_millis(until),
            id: id.to_owned(),
            token: token(lease.token),
        }
    }
}

/// A [`PendingUpdate`](crate::store::PendingUpdate) as bind values, for [`UPDATE_PENDING`].
pub(crate) struct PendingRow {
    pub(crate) id: String,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) due: i64,
}

impl PendingRow {
    pub(crate) fn new(update: crate::store::PendingUpdate<'_>) -> Self {
        Self {
            id: update.id.to_owned(),
            body: update.body.map(|body| body.to_vec()),
            due: unix_millis(update.due),
        }
    }
}

/// Rewrites a pending, unattempted delivery: `$1` its due time, `$2` its body (`NULL` keeps
/// it), `$3` now, `$4` its id.
pub(crate) const UPDATE_PENDING: &str = "UPDATE deliveries SET next_attempt_at = $1, due_at = $1, \
     body = COALESCE($2, body), updated_at = $3 \
     WHERE id = $4 AND state = 'pending' AND attempts = 0";

/// The row that stores `delivery` already claimed until `until` (claim on insert: in flight,
/// fencing token 1), and the claim its caller holds once the row is stored.
pub(crate) fn claimed_on_insert(
    mut delivery: Delivery,
    until: SystemTime,
    signers: &Signers,
) -> Result<(DeliveryRow, Claim), StoreError> {
    let mut row = DeliveryRow::new(&delivery, signers)?;
    let until = unix_millis(until);
    row.claimed_until = Some(until);
    delivery.state = DeliveryState::InFlight;
    delivery.updated_at = SystemTime::now();
    let lease = Lease {
        token: 1,
        until: from_unix_millis(until),
    };
    Ok((row, Claim { delivery, lease }))
}

/// The claims of the rows a claim statement returned ([`DELIVERY_COLUMNS`]), oldest due first.
pub(crate) fn claims(rows: &[impl RowExt], signers: &Signers) -> Result<Vec<Claim>, StoreError> {
    let mut claims = rows
        .iter()
        .map(|row| {
            Ok(Claim {
                delivery: delivery_from_row(row, signers)?,
                lease: lease_from_row(row)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    claims.sort_by_key(|claim| claim.delivery.next_attempt_at);
    Ok(claims)
}

/// A lease's fencing token as stored.
pub(crate) fn token(token: u64) -> i64 {
    i64::try_from(token).unwrap_or(i64::MAX)
}

/// A count or a limit as bound.
pub(crate) fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The deliveries [`FailTarget::Gone`](crate::store::FailTarget::Gone) names, as a condition
/// for [`fail_matching`] (`$2` is now, `$3` is the endpoint URL): the pending ones.
pub(crate) const FAIL_GONE_CONDITION: &str = "endpoint = $3 AND state = 'pending'";

/// The deliveries [`FailTarget::Deleted`](crate::store::FailTarget::Deleted) names, as a
/// condition for [`fail_matching`] (`$2` is now, `$3` the endpoint id): the pending ones,
/// and the in-flight ones whose lease has run out (`due_at` is the lease expiry then); a live
/// claim is left to finish.
pub(crate) const FAIL_DELETED_CONDITION: &str = "endpoint_id = $3 AND due_at IS NOT NULL \
     AND (state = 'pending' OR (state = 'in_flight' AND due_at <= $2))";

/// The filter bind values of a [`ConversationQuery`].
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub(crate) endpoint: Option<String>,
    pub(crate) endpoint_id: Option<String>,
    pub(crate) state: Option<&'static str>,
    pub(crate) since: Option<i64>,
    pub(crate) limit: i64,
}

impl Filter {
    pub(crate) fn new(query: &ConversationQuery, default_limit: usize) -> Self {
        let limit = if query.limit == 0 {
            default_limit
        } else {
            query.limit
        };
        Self {
            endpoint: query.endpoint.clone(),
            endpoint_id: query.endpoint_id.clone(),
            state: query.state.map(DeliveryState::as_str),
            since: query.since.map(unix_millis),
            limit: count(limit),
        }
    }

    /// Which filters are set, as the index of their statement ([`filter_for`]).
    pub(crate) fn shape(&self) -> usize {
        usize::from(self.endpoint.is_some())
            | usize::from(self.endpoint_id.is_some()) << 1
            | usize::from(self.state.is_some()) << 2
            | usize::from(self.since.is_some()) << 3
    }

    /// The filter of [`resend_matching`](crate::store::DeliveryStore::resend_matching): its
    /// state (failed by default) must be final; every match when no limit is given.
    pub(crate) fn resend(query: &ConversationQuery) -> Result<Self, StoreError> {
        let state = query.state.unwrap_or(DeliveryState::Failed);
        if !state.is_final() {
            return Err(StoreError::NotFinal(format!("deliveries in state {state}")));
        }
        let mut filter = Self::new(query, usize::MAX >> 1);
        filter.state = Some(state.as_str());
        Ok(filter)
    }
}

/// `WHERE` over the filter, its binds at `$1..$4` (`$5` is the limit). The casts tell
/// PostgreSQL the type of a parameter that may be `NULL`; SQLite reads them as no-ops.
const FILTER: &str = "(CAST($1 AS TEXT) IS NULL OR endpoint = $1) \
     AND (CAST($2 AS TEXT) IS NULL OR endpoint_id = $2) \
     AND (CAST($3 AS TEXT) IS NULL OR state = $3) \
     AND (CAST($4 AS BIGINT) IS NULL OR created_at >= $4)";

/// [`FILTER`] for one combination of set filters (bit 0 endpoint, 1 endpoint id, 2 state,
/// 3 since; see [`Filter::shape`]): a set filter as a plain comparison, which the planner
/// serves from its index (`endpoint = $1` walks `deliveries_endpoint` newest first), an unset
/// one as a test of its `NULL` bind. [`FILTER`]'s `$1 IS NULL OR …` form hides the index,
/// so a tenant with few deliveries was found by scanning the whole table.
fn filter_for(shape: usize) -> String {
    const TERMS: [(&str, &str); 4] = [
        ("CAST($1 AS TEXT) IS NULL", "endpoint = $1"),
        ("CAST($2 AS TEXT) IS NULL", "endpoint_id = $2"),
        ("CAST($3 AS TEXT) IS NULL", "state = $3"),
        ("CAST($4 AS BIGINT) IS NULL", "created_at >= $4"),
    ];
    TERMS
        .iter()
        .enumerate()
        .map(|(bit, (unset, set))| {
            if shape & (1 << bit) != 0 {
                *set
            } else {
                *unset
            }
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The keyset of [`ConversationQuery::after`], its binds at `$6` (the id) and `$7` (its
/// creation time): the rows stored before that delivery, or created before it once purged.
const AFTER: &str = "(CAST($6 AS TEXT) IS NULL OR COALESCE(\
     seq < (SELECT a.seq FROM deliveries AS a WHERE a.id = $6), created_at < CAST($7 AS BIGINT)))";

/// A query of database `DB` with its arguments.
pub(crate) type SqlQuery<'q, DB> = Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// What differs between the two SQL dialects the stores speak, and the typed binds the shared
/// statements need (one line each per backend, see `dialect!`).
pub(crate) trait Dialect: Database {
    /// Appended to a subquery that picks rows to change: PostgreSQL locks them and skips
    /// those another replica holds; SQLite's one writer holds the whole file already.
    const SKIP_LOCKED: &'static str;

    /// Binds a text value.
    fn text(query: SqlQuery<'_, Self>, value: Option<String>) -> SqlQuery<'_, Self>;

    /// Binds an integer.
    fn int(query: SqlQuery<'_, Self>, value: Option<i64>) -> SqlQuery<'_, Self>;
}

macro_rules! dialect {
    ($db:ty, $skip_locked:expr) => {
        impl Dialect for $db {
            const SKIP_LOCKED: &'static str = $skip_locked;

            fn text(query: SqlQuery<'_, Self>, value: Option<String>) -> SqlQuery<'_, Self> {
                query.bind(value)
            }

            fn int(query: SqlQuery<'_, Self>, value: Option<i64>) -> SqlQuery<'_, Self> {
                query.bind(value)
            }
        }
    };
}

#[cfg(feature = "sqlite")]
dialect!(sqlx::Sqlite, "");
#[cfg(feature = "postgres")]
dialect!(sqlx::Postgres, " FOR UPDATE SKIP LOCKED");

/// Binds a [`Filter`] at `$1..$5`.
fn bind_filter<'q, DB: Dialect>(query: SqlQuery<'q, DB>, filter: &Filter) -> SqlQuery<'q, DB> {
    let query = DB::text(query, filter.endpoint.clone());
    let query = DB::text(query, filter.endpoint_id.clone());
    let query = DB::text(query, filter.state.map(str::to_owned));
    let query = DB::int(query, filter.since);
    DB::int(query, Some(filter.limit))
}

/// The statements the two dialects share, as text (`format!`ed once per store).
#[derive(Debug)]
pub(crate) struct Statements {
    /// One per [`Filter::shape`].
    list: Vec<String>,
    resend_matching: String,
    fail_gone: String,
    fail_deleted: String,
}

impl Statements {
    pub(crate) fn new<DB: Dialect>() -> Self {
        let skip_locked = DB::SKIP_LOCKED;
        let fail = |condition: &str| {
            format!(
                "UPDATE deliveries SET state = 'failed', last_error = $1, due_at = NULL, \
                 manual = FALSE, lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 \
                 WHERE seq IN (SELECT seq FROM deliveries WHERE {condition} \
                 LIMIT $4{skip_locked}) RETURNING id"
            )
        };
        Self {
            list: (0..16)
                .map(|shape| {
                    format!(
                        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {} AND {AFTER} \
                         ORDER BY seq DESC LIMIT $5",
                        filter_for(shape)
                    )
                })
                .collect(),
            resend_matching: format!(
                "UPDATE deliveries SET state = 'pending', manual = TRUE, next_attempt_at = $6, \
                 due_at = $6, last_error = NULL, updated_at = $6, \
                 scheme = COALESCE($7, scheme), secrets = COALESCE($8, secrets) \
                 WHERE seq IN (SELECT seq FROM deliveries WHERE {FILTER} \
                 ORDER BY seq DESC LIMIT $5{skip_locked}) RETURNING id"
            ),
            fail_gone: fail(FAIL_GONE_CONDITION),
            fail_deleted: fail(FAIL_DELETED_CONDITION),
        }
    }

    /// The rows of [`DeliveryStore::list`](crate::store::DeliveryStore::list), newest first
    /// ([`DELIVERY_COLUMNS`]; 100 when the query sets no limit).
    pub(crate) fn list<'q, DB: Dialect>(&'q self, query: &ConversationQuery) -> SqlQuery<'q, DB> {
        let filter = &Filter::new(query, 100);
        let bound = bind_filter(sqlx::query(&self.list[filter.shape()]), filter);
        let after = query.after.as_ref();
        let bound = DB::text(bound, after.map(|p| p.id.clone()));
        DB::int(bound, after.map(|p| unix_millis(p.created_at)))
    }

    /// Makes the final deliveries of `filter` due at `now` for one manual attempt each, with
    /// a new signing when given (`(scheme, secrets)` columns); returns their ids.
    pub(crate) fn resend_matching<'q, DB: Dialect>(
        &'q self,
        filter: &Filter,
        now: i64,
        signing: Option<&(String, String)>,
    ) -> SqlQuery<'q, DB> {
        let bound = DB::int(
            bind_filter(sqlx::query(&self.resend_matching), filter),
            Some(now),
        );
        let bound = DB::text(bound, signing.map(|s| s.0.clone()));
        DB::text(bound, signing.map(|s| s.1.clone()))
    }

    /// Makes up to `limit` deliveries matching `condition` final as failed with `reason`,
    /// releasing any lease; returns their ids.
    pub(crate) fn fail_matching<'q, DB: Dialect>(
        &'q self,
        request: &FailRow,
        now: i64,
    ) -> SqlQuery<'q, DB> {
        let sql = match request.condition {
            FailCondition::Gone => &self.fail_gone,
            FailCondition::Deleted => &self.fail_deleted,
        };
        let bound = DB::text(sqlx::query(sql), Some(request.reason.clone()));
        let bound = DB::int(bound, Some(now));
        let bound = DB::text(bound, Some(request.key.clone()));
        DB::int(bound, Some(request.limit))
    }
}

/// Which deliveries [`Statements::fail_matching`] fails.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FailCondition {
    /// [`FailTarget::Gone`](crate::store::FailTarget::Gone): the pending deliveries to an
    /// endpoint URL ([`FAIL_GONE_CONDITION`]).
    Gone,
    /// [`FailTarget::Deleted`](crate::store::FailTarget::Deleted): the queued deliveries of a
    /// registered endpoint ([`FAIL_DELETED_CONDITION`]).
    Deleted,
}

/// The conversations of the delivery `rows` ([`DELIVERY_COLUMNS`]), in their order, with the
/// attempts `attempts_of` reads for their ids (never called without any).
pub(crate) async fn conversations_of<F, Fut>(
    rows: &[impl RowExt],
    signers: &Signers,
    attempts_of: F,
) -> Result<Vec<Conversation>, StoreError>
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: Future<Output = Result<Vec<(String, Attempt)>, StoreError>>,
{
    let deliveries = rows
        .iter()
        .map(|row| delivery_from_row(row, signers))
        .collect::<Result<Vec<_>, _>>()?;
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let ids = deliveries.iter().map(|d| d.id.clone()).collect();
    let attempts = attempts_of(ids).await?;
    Ok(conversations(deliveries, attempts))
}

/// A [`FailRequest`](crate::store::FailRequest) as bind values, for
/// [`Statements::fail_matching`] (owned: SQLite's writer runs it on its own task).
#[derive(Debug, Clone)]
pub(crate) struct FailRow {
    condition: FailCondition,
    key: String,
    reason: String,
    limit: i64,
}

impl FailRow {
    pub(crate) fn new(request: &crate::store::FailRequest<'_>) -> Self {
        use crate::store::FailTarget;
        let (condition, key) = match request.target {
            FailTarget::Gone { endpoint } => (FailCondition::Gone, endpoint),
            FailTarget::Deleted { endpoint_id } => (FailCondition::Deleted, endpoint_id),
        };
        Self {
            condition,
            key: key.to_owned(),
            reason: request.reason.to_owned(),
            limit: count(request.limit),
        }
    }

    /// The operation's name, for PostgreSQL's retry log.
    #[cfg(feature = "postgres")]
    pub(crate) fn operation(&self) -> &'static str {
        match self.condition {
            FailCondition::Gone => "fail_queued(gone)",
            FailCondition::Deleted => "fail_queued(deleted)",
        }
    }
}

/// The ids a statement returned.
pub(crate) fn ids(rows: &[impl RowExt]) -> Result<Vec<String>, StoreError> {
    rows.iter().map(|row| row.text("id")).collect()
}

/// The final deliveries retention deletes next (`$1` the state, `$2` the time they must be
/// older than, `$3` how many), as a subquery of `seq`s.
pub(crate) fn purge_candidates<DB: Dialect>() -> String {
    format!(
        "SELECT seq FROM deliveries WHERE due_at IS NULL AND state = $1 AND updated_at < $2 \
         ORDER BY updated_at LIMIT $3{}",
        DB::SKIP_LOCKED
    )
}
