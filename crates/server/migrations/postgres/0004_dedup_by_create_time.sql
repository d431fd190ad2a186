-- A resend is recognised by (send_id, create_time, local_id) (see store/mod.rs, `Key`): a
-- sender's keys are ordered by time, so the index grows at its end even for random local_ids.
DROP INDEX messages_dedup;
CREATE UNIQUE INDEX messages_dedup ON messages (send_id, create_time, local_id)
    WHERE local_id <> '';
