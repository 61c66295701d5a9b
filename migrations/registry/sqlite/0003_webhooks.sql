-- tower-webhooks subscription registry (SQLite): the webhooks of `SqliteSubscriptions`,
-- one row per (owner, id). Times are Unix milliseconds.
-- SENSITIVE: `secrets` holds the signing secrets and `headers` the custom header values
-- (often an endpoint's credentials) as given: protect this file like any credential store.
CREATE TABLE webhooks (
    owner           TEXT    NOT NULL,  -- the tenant: every query is scoped by it
    id              TEXT    NOT NULL,  -- caller-chosen, unique per owner
    endpoint_url    TEXT    NOT NULL,
    event_types     TEXT    NOT NULL,  -- JSON array of event type names
    description     TEXT    NOT NULL,
    scheme          TEXT    NOT NULL,  -- nextmv | stripe | standard_webhooks | cerebrium | github | slack
    secrets         TEXT    NOT NULL,  -- JSON: [{value (base64), created_at, expires_at}], current first
    headers         TEXT    NOT NULL,  -- JSON: [[name, value], ...] custom delivery headers
    enabled         INTEGER NOT NULL,
    disabled_reason TEXT,
    rate_per_second INTEGER,           -- the rate limit, NULL when none
    rate_burst      INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (owner, id)
);
