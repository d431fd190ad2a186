-- Resends are looked up through the sent chunks' create_time ranges, which now cover only a
-- sender's messages created after everything it had stored before ("in order"): such
-- create_times only grow, so a sender's ranges never overlap and a lookup reads at most one
-- chunk. The other messages with a local_id (a device clock that went back, or a client that
-- leaves create_time at 0, as the tutorial's example does) are indexed here instead, by their
-- key; `chunk` is the sent chunk that holds the message (retention deletes keys with it).
-- Chunks written before this migration may have overlapping ranges: lookups still find their
-- messages, reading every chunk whose range holds the create_time.
CREATE TABLE sent_keys (
    user_id     TEXT    NOT NULL,
    create_time INTEGER NOT NULL,
    local_id    TEXT    NOT NULL,
    chunk       INTEGER NOT NULL,
    PRIMARY KEY (user_id, create_time, local_id)
) WITHOUT ROWID;
CREATE INDEX sent_keys_chunk ON sent_keys (chunk);
