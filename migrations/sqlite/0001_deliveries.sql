-- tower-webhooks delivery store (SQLite): one table that is both the queue and the
-- conversation log, with the attempts hanging off it. Times are Unix milliseconds.
CREATE TABLE deliveries (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT    NOT NULL UNIQUE,   -- the run id: X-Request-Id, the signed message id
    endpoint         TEXT    NOT NULL,
    endpoint_id      TEXT,                      -- a registered endpoint (subscription), if any
    source           TEXT    NOT NULL,          -- forward | forward_async | event:<type> | ...
    scheme           TEXT,                      -- JSON description of the signing scheme; NULL: unsigned
    secrets          TEXT,                      -- JSON: the signing secrets AS GIVEN (protect this file)
    headers          TEXT    NOT NULL,          -- JSON: extra request headers sent on every attempt
    body             BLOB    NOT NULL,
    state            TEXT    NOT NULL,          -- pending | in_flight | delivered | failed | refused
    attempts         INTEGER NOT NULL DEFAULT 0,
    manual           INTEGER NOT NULL DEFAULT 0, -- the next attempt is a manual re-send
    next_attempt_at  INTEGER NOT NULL,
    due_at           INTEGER,                   -- queue key: next_attempt_at while pending,
                                                -- lease_expires_at while in flight, NULL when final
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    lease_token      INTEGER NOT NULL DEFAULT 0, -- fencing token, incremented on every claim
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    last_error       TEXT                       -- why the final state (failed, refused)
);
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX deliveries_state ON deliveries (state, updated_at);
CREATE INDEX deliveries_endpoint ON deliveries (endpoint, seq);
CREATE INDEX deliveries_endpoint_id ON deliveries (endpoint_id, seq) WHERE endpoint_id IS NOT NULL;

CREATE TABLE attempts (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id        TEXT    NOT NULL,
    number             INTEGER NOT NULL,
    manual             INTEGER NOT NULL,
    started_at         INTEGER NOT NULL,
    latency_us         INTEGER NOT NULL,
    request_headers    TEXT    NOT NULL,        -- JSON pairs, signatures and secrets redacted
    body_size          INTEGER NOT NULL,
    body_sha256        TEXT    NOT NULL,
    outcome            TEXT    NOT NULL,        -- status | timeout | connect | network | refused | sign_failed
    outcome_detail     TEXT,
    decision           TEXT    NOT NULL,        -- delivered | retry | gave_up | disable_endpoint | refused
    retry_at           INTEGER,
    response_status    INTEGER,
    response_headers   TEXT,
    response_body      BLOB,                    -- truncated to the engine's response limit
    response_truncated INTEGER
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, number);
