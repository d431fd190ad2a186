-- The SQLite store's hot file, natter-log.db (see store/sqlite.rs). Accepted messages are
-- committed here first, to a table with no secondary index, so a commit writes little more than
-- the new rows; the compactor moves them into natter.db's indexed `messages` table in large
-- batches. Same columns as `messages`; `id` continues natter.db's ids.
CREATE TABLE message_log (
    id           INTEGER PRIMARY KEY,
    server_id    TEXT    NOT NULL,
    send_id      TEXT    NOT NULL,
    receiver_id  TEXT    NOT NULL,
    local_id     TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    send_seq     INTEGER NOT NULL,
    msg_type     INTEGER NOT NULL,
    content_type INTEGER NOT NULL,
    content      TEXT    NOT NULL,
    create_time  INTEGER NOT NULL,
    send_time    INTEGER NOT NULL,
    is_read      INTEGER NOT NULL DEFAULT 0
);

-- Read receipts as read marks: `reader` has read every message from `peer` up to the message
-- whose server_id is `upto` (server ids are time-ordered UUIDv7, so text order is send order).
-- Reads derive `is_read` from the marks, so a receipt writes one small row, not one per message.
CREATE TABLE read_marks (
    reader TEXT NOT NULL,
    peer   TEXT NOT NULL,
    upto   TEXT NOT NULL,
    PRIMARY KEY (reader, peer)
) WITHOUT ROWID;
CREATE INDEX read_marks_peer ON read_marks (peer);
