//! A database written by the previous schema opens with the current one, on both stores: the
//! migrations after the baseline run on start and keep what was there.

#[macro_use]
mod common;

use common::{Backend, config_for};
use natter::store;

on_both_stores!(a_database_of_the_first_schema_is_upgraded);

async fn a_database_of_the_first_schema_is_upgraded(backend: Backend) {
    let config = config_for(backend).await;
    drop(store::open(&config.storage).await.unwrap());
    // Back to the first schema (0001_baseline), with a group as it stored one.
    let target = match backend {
        Backend::Sqlite => format!("{}/natter.db", config.storage.path),
        Backend::Postgres => config.storage.url.clone(),
    };
    for statement in [
        "DROP TABLE group_invites",
        "ALTER TABLE group_members DROP COLUMN chosen",
        "DELETE FROM _sqlx_migrations WHERE version > 1",
        "INSERT INTO chat_groups (group_id, name, owner, created_at) VALUES ('g_old', 'old', 'o', 1)",
        "INSERT INTO group_members (group_id, user_id, role, joined_seq) \
         VALUES ('g_old', 'o', 'owner', 0), ('g_old', 'm', 'member', 0)",
    ] {
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
}
