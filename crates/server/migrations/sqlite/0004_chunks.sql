-- Messages are stored in chunks: a run of consecutive messages of one stream, packed into one
-- blob (store/pack.rs), so a chunk costs a row and an index entry however many messages it
-- holds. The compactor writes one chunk per stream per move (store/sqlite.rs); a message is in
-- its receiver's inbox chunk and in its sender's sent chunk. `messages` stays for the rows an
-- older version stored: they are packed into chunks on start, and nothing writes to it any more.

-- Inbox (by `seq`) of a user, or of a group (`user_id` is then the group id).
CREATE TABLE inbox_chunks (
    id        INTEGER PRIMARY KEY,
    user_id   TEXT    NOT NULL,
    first     INTEGER NOT NULL, -- seq of the first message
    last      INTEGER NOT NULL, -- seq of the last message
    last_time INTEGER NOT NULL, -- greatest send_time (retention)
    body      BLOB    NOT NULL
);
CREATE UNIQUE INDEX inbox_chunks_user ON inbox_chunks (user_id, first);

-- Sent stream (by `send_seq`) of a user. created_from..created_upto: the range of create_time
-- of its messages with a local_id (an empty range, 0..-1, when none has): resends are looked up
-- by it.
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

-- The id of the last log message moved here: a move is never applied twice.
CREATE TABLE moved (upto INTEGER NOT NULL);
INSERT INTO moved (upto) SELECT COALESCE(MAX(id), 0) FROM messages;
