//! A database written by the previous schema opens with the current one, on both stores: the
//! migrations after the baseline run on start and keep what was there.

#[macro_use]
mod common;

use common::{Backend, config_for};
use natter::store::{self, conv::ListScope};

on_both_stores!(a_database_of_the_first_schema_is_upgraded);

async fn a_database_of_the_first_schema_is_upgraded(backend: Backend) {
    let config = config_for(backend).await;
    drop(store::open(&config.storage).await.unwrap());
    // Back to the first schema (0001_baseline), with a group as it stored one.
    let target = match backend {
        Backend::Sqlite => format!("{}/natter.db", config.storage.path),
        Backend::Postgres => config.storage.url.clone(),
    };
    let conversations: &[&str] = match backend {
        Backend::Sqlite => &["DROP TABLE conv_chunks"],
        Backend::Postgres => &[
            "DROP INDEX messages_conv",
            "ALTER TABLE messages DROP COLUMN conv_id",
            "ALTER TABLE messages DROP COLUMN conv_seq",
        ],
    };
    for statement in conversations.iter().copied().chain([
        "DROP TABLE revoked_users",
        "DROP TABLE revoked_tokens",
        "DROP TABLE conversations",
        "DROP TABLE conversation_settings",
        "DROP TABLE hidden_entries",
        "ALTER TABLE group_members DROP COLUMN read_seq",
        "DROP TABLE group_invites",
        "ALTER TABLE group_members DROP COLUMN chosen",
        "DELETE FROM _sqlx_migrations WHERE version > 1",
        "INSERT INTO chat_groups (group_id, name, owner, created_at) VALUES ('g_old', 'old', 'o', 1)",
        "INSERT INTO group_members (group_id, user_id, role, joined_seq) \
         VALUES ('g_old', 'o', 'owner', 0), ('g_old', 'm', 'member', 0)",
    ]) {
        common::sql(backend, &target, statement).await;
    }

    let store = store::open(&config.storage).await.unwrap().unwrap();
    // 0002_group_invites: memberships from before count toward their users' limits, as they
    // did; invitations work.
    let counts = store
        .group_counts(&["o".to_string(), "m".to_string()])
        .await
        .unwrap();
    assert_eq!((counts.get("o"), counts.get("m")), (Some(&1), Some(&1)));
    let invited = store
        .invite("g_old", &["x".to_string()], "o", 5, 10)
        .await
        .unwrap();
    assert_eq!(invited, ["x"]);
    assert_eq!(store.invites_of("x").await.unwrap()[0].name, "old");

    // 0003_conversations: the group is in its members' chat lists, read positions are kept,
    // and a new message is the conversation's first entry.
    let parts = store
        .chat_list(
            "m",
            ListScope::Page {
                after: None,
                limit: 50,
            },
        )
        .await
        .unwrap();
    assert_eq!(parts.groups.len(), 1);
    assert!(store.mark_read("m", "g_old", 1).await.unwrap());
    let msg = natter_protocol::Msg {
        send_id: "o".into(),
        receiver_id: "m".into(),
        server_id: "0190f000-0000-7000-8000-00000000002a".into(),
        content: "after".into(),
        ..Default::default()
    };
    let outcome = store.append(std::slice::from_ref(&msg)).await.unwrap();
    assert!(matches!(
        outcome[0],
        store::Appended::New { conv_seq: 1, .. }
    ));
    assert_eq!(
        store
            .chat_list(
                "m",
                ListScope::Page {
                    after: None,
                    limit: 50
                }
            )
            .await
            .unwrap()
            .rows
            .len(),
        1
    );

    // 0004_revocations: revocations are kept.
    let revoked = store::Revocation::User {
        user: "m".into(),
        before: 100,
    };
    store.revoke(&revoked).await.unwrap();
    assert_eq!(store.revocations(0).await.unwrap(), [revoked]);
}
