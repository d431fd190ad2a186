-- Consent to groups (groups.invite). `chosen`: whether the member chose the group (its owner,
-- or an invitee who accepted); only chosen groups count toward groups.max_groups_per_user, so
-- nobody can fill another user's limit by adding them. Memberships from before count.
ALTER TABLE group_members ADD COLUMN chosen INTEGER NOT NULL DEFAULT 1;

-- Pending invitations (groups.invite: accept): the invitee becomes a member by accepting.
CREATE TABLE group_invites (
    group_id   TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    inviter    TEXT    NOT NULL,
    invited_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_invites_user ON group_invites (user_id, invited_at);
