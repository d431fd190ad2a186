-- A resend is recognised by (send_id, create_time, local_id) (see store/mod.rs, `Key`): a
-- sender's keys are ordered by time, so the index grows at its end even for random local_ids.
DROP INDEX messages_dedup;
CREATE UNIQUE INDEX messages_dedup ON messages (send_id, create_time, local_id)
    WHERE local_id <> '';

-- The greatest create_time among the user's stored messages that have a local_id (-1: none).
-- A message created later than that cannot be a resend of a stored one, so it needs no lookup.
ALTER TABLE user_seq ADD COLUMN created_upto INTEGER NOT NULL DEFAULT -1;
UPDATE user_seq SET created_upto = COALESCE(
    (SELECT MAX(create_time) FROM messages WHERE send_id = user_seq.user_id AND local_id <> ''),
    -1
);
