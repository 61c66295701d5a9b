-- The queue figures (`stats`) kept up to date as rows change, so reading them does not count
-- the table. Buckets: `finished` for every final delivery (due_at IS NULL), else the
-- delivery's state (pending, in_flight). Every statement that changes deliveries appends its
-- net change per bucket (statement-level triggers over the transition tables): appends never
-- wait on each other, where one counter row per bucket would serialise every replica's
-- writes until their commits. `stats` sums the rows and folds them back into one per bucket.
CREATE TABLE delivery_count_changes (
    bucket TEXT   NOT NULL,
    delta  BIGINT NOT NULL
);

INSERT INTO delivery_count_changes (bucket, delta)
SELECT CASE WHEN due_at IS NULL THEN 'finished' ELSE state END, COUNT(*)
FROM deliveries GROUP BY 1;

-- The function keeps the migration's search path (the store's schema): an application may
-- insert through a qualified name from a connection with another search path (the outbox).
-- Static statements, so PL/pgSQL plans them once per session.
CREATE FUNCTION delivery_counts_changed() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO delivery_count_changes (bucket, delta)
        SELECT CASE WHEN due_at IS NULL THEN 'finished' ELSE state END, COUNT(*)
        FROM new_rows GROUP BY 1;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO delivery_count_changes (bucket, delta)
        SELECT CASE WHEN due_at IS NULL THEN 'finished' ELSE state END, -COUNT(*)
        FROM old_rows GROUP BY 1;
    ELSE
        INSERT INTO delivery_count_changes (bucket, delta)
        SELECT bucket, SUM(delta) FROM (
            SELECT CASE WHEN due_at IS NULL THEN 'finished' ELSE state END AS bucket,
                   1 AS delta FROM new_rows
            UNION ALL
            SELECT CASE WHEN due_at IS NULL THEN 'finished' ELSE state END, -1 FROM old_rows
        ) AS changes GROUP BY bucket HAVING SUM(delta) <> 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER delivery_counts_insert AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_counts_changed();
CREATE TRIGGER delivery_counts_update AFTER UPDATE ON deliveries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_counts_changed();
CREATE TRIGGER delivery_counts_delete AFTER DELETE ON deliveries
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION delivery_counts_changed();
