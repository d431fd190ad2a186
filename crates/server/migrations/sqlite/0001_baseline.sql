-- natter.db, the SQLite store's message file (store/sqlite/). A change to it is a new numbered
-- file beside this one, with a test that opens a database of the previous version.

-- Messages are stored in chunks: a run of consecutive messages of one stream packed into one
-- blob (store/sqlite/pack.rs), a row and an index entry however many messages it holds.

-- The inbox (by `seq`) of a user, or of a group (`user_id` is then the group id).
CREATE TABLE inbox_chunks (
    id        INTEGER PRIMARY KEY,
    user_id   TEXT    NOT NULL,
    first     INTEGER NOT NULL, -- seq of the first message
    last      INTEGER NOT NULL, -- seq of the last message
    last_time INTEGER NOT NULL, -- greatest send_time (retention)
    body      BLOB    NOT NULL
);
CREATE UNIQUE INDEX inbox_chunks_user ON inbox_chunks (user_id, first);

-- The sent stream (by `send_seq`) of a user: references into the inbox chunks. created_from..
-- created_upto is the create_time range of its messages created in order (0..-1: none), by
-- which resends are looked up (store/sqlite/resend.rs).
CREATE TABLE sent_chunks (
    id           INTEGER PRIMARY KEY,
    user_id      TEXT    NOT NULL,
    first        INTEGER NOT NULL,
    last         INTEGER NOT NULL,
    last_time    INTEGER NOT NULL,
    created_from INTEGER NOT NULL,
    created_upto INTEGER NOT NULL,
    body         BLOB    NOT NULL
);
CREATE UNIQUE INDEX sent_chunks_user ON sent_chunks (user_id, first);
CREATE INDEX sent_chunks_created ON sent_chunks (user_id, created_upto, created_from);

-- The resend keys of a sent chunk's messages created out of order; `chunk` holds the message.
CREATE TABLE sent_keys (
    user_id     TEXT    NOT NULL,
    create_time INTEGER NOT NULL,
    local_id    TEXT    NOT NULL,
    chunk       INTEGER NOT NULL,
    PRIMARY KEY (user_id, create_time, local_id)
) WITHOUT ROWID;
CREATE INDEX sent_keys_chunk ON sent_keys (chunk);

-- The last seq / send_seq handed out per user or group, and the greatest create_time of the
-- user's stored messages with a local_id (-1: none).
CREATE TABLE user_seq (
    user_id      TEXT    NOT NULL PRIMARY KEY,
    seq          INTEGER NOT NULL DEFAULT 0,
    send_seq     INTEGER NOT NULL DEFAULT 0,
    created_upto INTEGER NOT NULL DEFAULT -1
) WITHOUT ROWID;

-- The id of the last log message moved here.
CREATE TABLE moved (upto INTEGER NOT NULL);
INSERT INTO moved (upto) VALUES (0);

-- Groups: a group's messages are in its inbox chunks.
CREATE TABLE chat_groups (
    group_id   TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- joined_seq: the group's seq when the member joined; the member sees the messages after it.
CREATE TABLE group_members (
    group_id   TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    joined_seq INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);
