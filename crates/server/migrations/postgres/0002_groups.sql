-- Groups. A group's messages live in `messages` with receiver_id = group_id and seq = the
-- group's own sequence (counted in user_seq under the group id: group ids start with "g_",
-- which user ids may not).
CREATE TABLE chat_groups (
    group_id   TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    created_at BIGINT NOT NULL
);

-- joined_seq: the group's seq when the member joined; the member sees messages after it.
CREATE TABLE group_members (
    group_id   TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    joined_seq BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);
