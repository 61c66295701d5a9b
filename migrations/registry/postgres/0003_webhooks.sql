-- tower-webhooks subscription registry (PostgreSQL): the webhooks of `PostgresSubscriptions`,
-- one row per (owner, id). Times are Unix milliseconds.
-- SENSITIVE: `secrets` holds the signing secrets and `headers` the custom header values
-- (often an endpoint's credentials) as given: restrict access to this table (database roles).
CREATE TABLE webhooks (
    owner           TEXT     NOT NULL,  -- the tenant: every query is scoped by it
    id              TEXT     NOT NULL,  -- caller-chosen, unique per owner
    endpoint_url    TEXT     NOT NULL,
    event_types     TEXT[]   NOT NULL,  -- event type names
    description     TEXT     NOT NULL,
    scheme          TEXT     NOT NULL,  -- nextmv | stripe | standard_webhooks | cerebrium | github | slack
    secrets         TEXT     NOT NULL,  -- JSON: [{value (base64), created_at, expires_at}], current first
    headers         TEXT     NOT NULL,  -- JSON: [[name, value], ...] custom delivery headers
    enabled         BOOLEAN  NOT NULL,
    disabled_reason TEXT,
    rate_per_second BIGINT,             -- the rate limit, NULL when none
    rate_burst      BIGINT,
    created_at      BIGINT   NOT NULL,
    updated_at      BIGINT   NOT NULL,
    PRIMARY KEY (owner, id)
);
-- publish: the enabled webhooks subscribed to an event type (`event_types @> ARRAY[$1]`).
CREATE INDEX webhooks_event_types ON webhooks USING GIN (event_types) WHERE enabled;
