-- tower-webhooks subscription registry (PostgreSQL): the per-webhook counters every replica
-- shares (`EndpointState` of `PostgresSubscriptions`). Updated by one
-- `INSERT … ON CONFLICT … RETURNING` each, so concurrent replicas count one after the other.
-- A row is removed with its webhook; no secrets here.

-- The health rule: the webhook's recent failed deliveries (Unix milliseconds, newest first,
-- at most the rule's threshold). A successful delivery or re-enabling deletes the row.
CREATE TABLE webhook_failures (
    owner     TEXT     NOT NULL,
    id        TEXT     NOT NULL,
    failed_at BIGINT[] NOT NULL,
    PRIMARY KEY (owner, id)
);

-- The rate limit: the token bucket's theoretical arrival time (Unix microseconds).
CREATE TABLE webhook_rate_limits (
    owner TEXT   NOT NULL,
    id    TEXT   NOT NULL,
    tat   BIGINT NOT NULL,
    PRIMARY KEY (owner, id)
);
