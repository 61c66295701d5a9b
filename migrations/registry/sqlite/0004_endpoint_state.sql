-- tower-webhooks subscription registry (SQLite): the per-webhook counters of
-- `SqliteSubscriptions` (`EndpointState`), the same tables as in PostgreSQL. Updated by one
-- `INSERT … ON CONFLICT … RETURNING` each. A row is removed with its webhook; no secrets here.

-- The health rule: the webhook's recent failed deliveries (JSON array of Unix milliseconds,
-- at most the rule's threshold). A successful delivery or re-enabling deletes the row.
CREATE TABLE webhook_failures (
    owner     TEXT NOT NULL,
    id        TEXT NOT NULL,
    failed_at TEXT NOT NULL,
    PRIMARY KEY (owner, id)
);

-- The rate limit: the token bucket's theoretical arrival time (Unix microseconds).
CREATE TABLE webhook_rate_limits (
    owner TEXT    NOT NULL,
    id    TEXT    NOT NULL,
    tat   INTEGER NOT NULL,
    PRIMARY KEY (owner, id)
);
