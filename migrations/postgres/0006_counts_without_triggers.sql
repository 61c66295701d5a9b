-- `stats` no longer reads counts kept by triggers: the statement-level triggers of 0005 ran on
-- every write to deliveries and cost a share of the durable write rate. `stats` counts the
-- unfinished rows instead, through the due index, which now carries the state so the count
-- reads the index alone (an index-only scan); the finished rows are counted up to a bound
-- and estimated from the table's statistics beyond it.
DROP TRIGGER delivery_counts_insert ON deliveries;
DROP TRIGGER delivery_counts_update ON deliveries;
DROP TRIGGER delivery_counts_delete ON deliveries;
DROP FUNCTION delivery_counts_changed();
DROP TABLE delivery_count_changes;

-- Every update that moves a row in the queue changes due_at, an indexed column already, so
-- including the state costs no heap-only update.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (due_at) INCLUDE (state) WHERE due_at IS NOT NULL;
