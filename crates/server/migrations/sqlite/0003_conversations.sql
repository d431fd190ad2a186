-- Conversations (natter_protocol::conversation): a one-to-one pair or a group. Every entry of a
-- conversation carries its place in it (`conv_seq`, in the packed messages; for a group, the
-- group's seq). Messages stored before this change have conv_seq 0 and are not in any
-- conversation's history; sync by seq and send_seq returns them as before.

-- A one-to-one conversation's entries: references into the inbox chunks (store/sqlite/pack.rs),
-- a chunk per conversation per move, by conv_seq. A group's entries are its inbox chunks.
CREATE TABLE conv_chunks (
    id        INTEGER PRIMARY KEY,
    conv_id   TEXT    NOT NULL,
    first     INTEGER NOT NULL, -- conv_seq of the first entry
    last      INTEGER NOT NULL, -- conv_seq of the last entry
    last_time INTEGER NOT NULL, -- greatest send_time (retention)
    body      BLOB    NOT NULL
);
CREATE UNIQUE INDEX conv_chunks_conv ON conv_chunks (conv_id, first);

-- One row per conversation with an entry: the chat list, moved here with its entries.
-- One-to-one: user_a < user_b (byte order), last_seq is the conversation's counter, read_a and
-- read_b each user's read position. Groups: user_a = user_b = '', last_seq the group's seq at
-- its last entry; the members' read positions are group_members.read_seq, so a group message
-- writes this one row whatever the group's size. last_*: the last entry, for the list's preview.
CREATE TABLE conversations (
    conv_id           TEXT    NOT NULL PRIMARY KEY,
    user_a            TEXT    NOT NULL DEFAULT '',
    user_b            TEXT    NOT NULL DEFAULT '',
    last_seq          INTEGER NOT NULL DEFAULT 0,
    read_a            INTEGER NOT NULL DEFAULT 0,
    read_b            INTEGER NOT NULL DEFAULT 0,
    last_server_id    TEXT    NOT NULL DEFAULT '',
    last_send_id      TEXT    NOT NULL DEFAULT '',
    last_msg_type     INTEGER NOT NULL DEFAULT 0,
    last_content_type INTEGER NOT NULL DEFAULT 0,
    last_preview      TEXT    NOT NULL DEFAULT '',
    last_time         INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
-- A user's one-to-one conversations, newest activity first: the chat list reads a page of them.
CREATE INDEX conversations_a ON conversations (user_a, last_time DESC, conv_id) WHERE user_a <> '';
CREATE INDEX conversations_b ON conversations (user_b, last_time DESC, conv_id) WHERE user_b <> '';

-- A member's read position in the group (a conv_seq); the member's own entries move it.
ALTER TABLE group_members ADD COLUMN read_seq INTEGER NOT NULL DEFAULT 0;

-- A user's own settings of a conversation, synced to the user's devices.
CREATE TABLE conversation_settings (
    user_id TEXT    NOT NULL,
    conv_id TEXT    NOT NULL,
    pinned  INTEGER NOT NULL DEFAULT 0,
    muted   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, conv_id)
) WITHOUT ROWID;

-- Entries a user deleted for themself: left out of that user's history on every device.
CREATE TABLE hidden_entries (
    user_id  TEXT    NOT NULL,
    conv_id  TEXT    NOT NULL,
    conv_seq INTEGER NOT NULL,
    PRIMARY KEY (user_id, conv_id, conv_seq)
) WITHOUT ROWID;
