-- The queue figures (`stats`) kept up to date as rows change, so reading them does not count
-- the table: one row per bucket, `finished` for every final delivery (due_at IS NULL), else
-- the delivery's state (pending, in_flight). SQLite has one writer, so one row per bucket
-- costs no contention.
CREATE TABLE delivery_counts (
    bucket TEXT    PRIMARY KEY,
    n      INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO delivery_counts (bucket, n)
SELECT CASE WHEN due_at IS NULL THEN 'finished' ELSE state END, COUNT(*)
FROM deliveries GROUP BY 1;

CREATE TRIGGER delivery_counts_insert AFTER INSERT ON deliveries
BEGIN
    INSERT INTO delivery_counts (bucket, n)
    VALUES (CASE WHEN NEW.due_at IS NULL THEN 'finished' ELSE NEW.state END, 1)
    ON CONFLICT (bucket) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER delivery_counts_delete AFTER DELETE ON deliveries
BEGIN
    UPDATE delivery_counts SET n = n - 1
    WHERE bucket = CASE WHEN OLD.due_at IS NULL THEN 'finished' ELSE OLD.state END;
END;

CREATE TRIGGER delivery_counts_update AFTER UPDATE OF state, due_at ON deliveries
WHEN (CASE WHEN OLD.due_at IS NULL THEN 'finished' ELSE OLD.state END)
     IS NOT (CASE WHEN NEW.due_at IS NULL THEN 'finished' ELSE NEW.state END)
BEGIN
    UPDATE delivery_counts SET n = n - 1
    WHERE bucket = CASE WHEN OLD.due_at IS NULL THEN 'finished' ELSE OLD.state END;
    INSERT INTO delivery_counts (bucket, n)
    VALUES (CASE WHEN NEW.due_at IS NULL THEN 'finished' ELSE NEW.state END, 1)
    ON CONFLICT (bucket) DO UPDATE SET n = n + 1;
END;
