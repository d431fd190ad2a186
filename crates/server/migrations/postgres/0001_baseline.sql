-- The PostgreSQL schema (store/postgres.rs). A change to it is a new numbered file beside this
-- one, with a test that opens a database of the previous version.

-- Every accepted message, once. `seq` is its place in the receiver's inbox (for a group: the
-- group's), `send_seq` its place in the sender's sent stream. `id` orders rows by commit
-- (retention deletes from the front). `server_id` needs no index: receipts find messages
-- through the reader's inbox.
CREATE TABLE messages (
    id           BIGINT   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server_id    TEXT     NOT NULL,
    send_id      TEXT     NOT NULL,
    receiver_id  TEXT     NOT NULL,
    local_id     TEXT     NOT NULL,
    seq          BIGINT   NOT NULL,
    send_seq     BIGINT   NOT NULL,
    msg_type     INTEGER  NOT NULL,
    content_type INTEGER  NOT NULL,
    content      TEXT     NOT NULL,
    create_time  BIGINT   NOT NULL,
    send_time    BIGINT   NOT NULL,
    is_read      BOOLEAN  NOT NULL DEFAULT FALSE
);
CREATE UNIQUE INDEX messages_inbox ON messages (receiver_id, seq);
CREATE UNIQUE INDEX messages_sent ON messages (send_id, send_seq);
-- The resend key (store/mod.rs, `Key`).
CREATE UNIQUE INDEX messages_dedup ON messages (send_id, create_time, local_id)
    WHERE local_id <> '';

-- The last seq / send_seq handed out per user or group; survives retention. Updated on every
-- message: room on each page keeps the updates HOT, and eager vacuuming keeps dead row versions
-- from piling up.
CREATE TABLE user_seq (
    user_id  TEXT   NOT NULL PRIMARY KEY,
    seq      BIGINT NOT NULL DEFAULT 0,
    send_seq BIGINT NOT NULL DEFAULT 0
) WITH (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

-- Groups: a group's messages are in `messages` with receiver_id = group_id.
CREATE TABLE chat_groups (
    group_id   TEXT   NOT NULL PRIMARY KEY,
    name       TEXT   NOT NULL,
    owner      TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

-- joined_seq: the group's seq when the member joined; the member sees the messages after it.
CREATE TABLE group_members (
    group_id   TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    joined_seq BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);
