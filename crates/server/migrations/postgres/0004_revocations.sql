-- Revoked tokens (the server API's revoke routes): every token of a user issued before a time,
-- and single tokens by their jti, kept until they expire. Each node holds them in memory.
CREATE TABLE revoked_users (
    user_id TEXT   NOT NULL PRIMARY KEY,
    before  BIGINT NOT NULL
);
CREATE TABLE revoked_tokens (
    jti        TEXT   NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
