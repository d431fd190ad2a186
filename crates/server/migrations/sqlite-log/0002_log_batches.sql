-- The log holds accepted batches, one row each, instead of a row per message: `first_id` is the
-- id of the batch's first message (ids are consecutive in commit order), `body` the batch's
-- messages packed (store/pack.rs). `message_log` stays for the rows an older version left there:
-- they are moved on start, and nothing writes to it any more.
CREATE TABLE log_batches (
    first_id INTEGER PRIMARY KEY,
    count    INTEGER NOT NULL,
    body     BLOB    NOT NULL
);
