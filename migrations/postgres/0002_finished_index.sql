-- Final deliveries only (due_at IS NULL exactly when final): the queue's own state changes no
-- longer touch this index. Serves retention, dead letters and the finished count.
DROP INDEX deliveries_state;
CREATE INDEX deliveries_finished ON deliveries (state, updated_at) WHERE due_at IS NULL;
