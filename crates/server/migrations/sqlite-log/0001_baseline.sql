-- natter-log.db, the SQLite store's hot file (store/sqlite/). A change to it is a new numbered
-- file beside this one, with a test that opens a database of the previous version.

-- Committed batches, a row each: `first_id` is the id of the batch's first message (ids are
-- consecutive in commit order), `body` its messages packed (store/sqlite/pack.rs).
CREATE TABLE log_batches (
    first_id INTEGER PRIMARY KEY,
    count    INTEGER NOT NULL,
    body     BLOB    NOT NULL
);

-- Read receipts as read marks: `reader` has read every message from `peer` up to the one whose
-- server_id is `upto` (UUIDv7: text order is send order).
CREATE TABLE read_marks (
    reader TEXT NOT NULL,
    peer   TEXT NOT NULL,
    upto   TEXT NOT NULL,
    PRIMARY KEY (reader, peer)
) WITHOUT ROWID;
CREATE INDEX read_marks_peer ON read_marks (peer);
