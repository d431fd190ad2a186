-- Conversations (natter_protocol::conversation): a one-to-one pair or a group. Every entry of a
-- conversation carries its conversation id and its place in it (`conv_seq`; for a group, the
-- group's seq). Messages stored before this change have conv_seq 0 and are not in any
-- conversation's history; sync by seq and send_seq returns them as before. A read receipt's
-- conv_seq is the position read up to: not an entry, so not in the index.
ALTER TABLE messages ADD COLUMN conv_id TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN conv_seq BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX messages_conv ON messages (conv_id, conv_seq)
    WHERE conv_seq > 0 AND msg_type <> 23;

-- One row per conversation with an entry, written in the commit of its entries: the chat list.
-- One-to-one: user_a < user_b (byte order), last_seq is the conversation's counter, read_a and
-- read_b each user's read position. Groups: user_a = user_b = '', last_seq the group's seq at
-- its last entry; the members' read positions are group_members.read_seq, so a group message
-- writes this one row whatever the group's size. last_*: the last entry, for the list's preview
-- (content cut to a preview's length).
CREATE TABLE conversations (
    conv_id           TEXT    NOT NULL PRIMARY KEY,
    user_a            TEXT    NOT NULL DEFAULT '',
    user_b            TEXT    NOT NULL DEFAULT '',
    last_seq          BIGINT  NOT NULL DEFAULT 0,
    read_a            BIGINT  NOT NULL DEFAULT 0,
    read_b            BIGINT  NOT NULL DEFAULT 0,
    last_server_id    TEXT    NOT NULL DEFAULT '',
    last_send_id      TEXT    NOT NULL DEFAULT '',
    last_msg_type     INTEGER NOT NULL DEFAULT 0,
    last_content_type INTEGER NOT NULL DEFAULT 0,
    last_preview      TEXT    NOT NULL DEFAULT '',
    last_time         BIGINT  NOT NULL DEFAULT 0
) WITH (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
-- A user's one-to-one conversations (the chat list sorts a user's rows by last_time). Not on
-- last_time itself: every entry changes it, and an indexed column changed makes the update
-- write new index entries instead of a heap-only (HOT) tuple.
CREATE INDEX conversations_a ON conversations (user_a) WHERE user_a <> '';
CREATE INDEX conversations_b ON conversations (user_b) WHERE user_b <> '';

-- A member's read position in the group (a conv_seq); the member's own entries move it.
ALTER TABLE group_members ADD COLUMN read_seq BIGINT NOT NULL DEFAULT 0;

-- A user's own settings of a conversation, synced to the user's devices.
CREATE TABLE conversation_settings (
    user_id TEXT   NOT NULL,
    conv_id TEXT   NOT NULL,
    pinned  BIGINT NOT NULL DEFAULT 0,
    muted   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, conv_id)
);

-- Entries a user deleted for themself: left out of that user's history on every device.
CREATE TABLE hidden_entries (
    user_id  TEXT   NOT NULL,
    conv_id  TEXT   NOT NULL,
    conv_seq BIGINT NOT NULL,
    PRIMARY KEY (user_id, conv_id, conv_seq)
);
