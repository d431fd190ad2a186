-- Every accepted message, once. `seq` is its place in the receiver's inbox (for a group: the
-- group's), `send_seq` its place in the sender's sent stream.
-- A rowid table: rows are appended in commit order (cheap inserts, and retention deletes
-- from the front). `server_id` needs no index of its own: receipts find messages through the
-- reader's inbox, and ids are unique by construction (UUIDv7, counter per node).
CREATE TABLE messages (
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

CREATE UNIQUE INDEX messages_inbox ON messages (receiver_id, seq);
CREATE UNIQUE INDEX messages_sent ON messages (send_id, send_seq);
CREATE UNIQUE INDEX messages_dedup ON messages (send_id, local_id) WHERE local_id <> '';

-- The last seq / send_seq handed out per user; survives retention deleting old messages.
CREATE TABLE user_seq (
    user_id  TEXT    NOT NULL PRIMARY KEY,
    seq      INTEGER NOT NULL DEFAULT 0,
    send_seq INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
