//! Consent to groups (`groups.invite`), on both stores: with `direct`, groups others add a user
//! to do not count toward that user's limit (nobody can fill it for them); with `accept`, the
//! others are invited and become members only by accepting, and a user's pending invitations
//! are bounded.

#[macro_use]
mod common;

use common::{Backend, config_for, groups::*, start};
use natter::config::InviteRule;
use natter_protocol::msg_type;
use serde_json::json;

on_both_stores!(
    nobody_fills_another_users_group_limit,
    invited_users_join_only_by_accepting,
    pending_invitations_are_bounded_and_do_not_count
);

async fn nobody_fills_another_users_group_limit(backend: Backend) {
    let mut config = config_for(backend).await;
    config.groups.max_groups_per_user = 2;
    let server = start(config).await;
    // Mallory puts the victim in as many groups as his own limit allows...
    for _ in 0..2 {
        create_group(&server, "mallory", &["victim"]).await;
    }
    let (status, body) = api(&server, "GET", "/api/v1/groups", "victim", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["groups"].as_array().unwrap().len(), 2);
    // ... which leaves the victim's own limit whole: two groups of their own, then the limit.
    create_group(&server, "victim", &[]).await;
    create_group(&server, "victim", &["mallory"]).await;
    let (status, body) = api(
        &server,
        "POST",
        "/api/v1/groups",
        "victim",
        Some(json!({"name": "third"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("too_many_groups"))
    );
}

async fn invited_users_join_only_by_accepting(backend: Backend) {
    let mut config = config_for(backend).await;
    config.groups.invite = InviteRule::Accept;
    let server = start(config).await;
    let mut bob = server.connect("bob", "p").await;
    let (status, body) = api(
        &server,
        "POST",
        "/api/v1/groups",
        "owner",
        Some(json!({"name": "club", "members": ["bob", "carol"]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let g = body["group"]["group_id"].as_str().unwrap().to_owned();
    assert_eq!(body["members"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["invited"], json!(["bob", "carol"]));
    // Bob hears of the invitation at once, and it is listed for him.
    let notice = loop {
        let m = bob.recv().await;
        if m.msg_type == msg_type::GROUP_INVITED {
            break m;
        }
    };
    assert_eq!(notice.receiver_id, g);
    let (_, listed) = api(&server, "GET", "/api/v1/invites", "bob", None).await;
    assert_eq!(listed["invites"][0]["group_id"], g.as_str());
    assert_eq!(listed["invites"][0]["name"], "club");
    assert_eq!(listed["invites"][0]["inviter"], "owner");
    // Not a member until he accepts.
    let path = format!("/api/v1/groups/{g}");
    assert_eq!(api(&server, "GET", &path, "bob", None).await.0, 403);
    let accept = format!("/api/v1/invites/{g}/accept");
    let (status, body) = api(&server, "POST", &accept, "bob", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api(&server, "GET", &path, "bob", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["members"].as_array().unwrap().len(), 2);
    // An invitation is taken once; carol declines hers; a stranger has none.
    let (status, body) = api(&server, "POST", &accept, "bob", None).await;
    assert_eq!(status, 400, "{body}");
    let decline = format!("/api/v1/invites/{g}");
    assert_eq!(api(&server, "DELETE", &decline, "carol", None).await.0, 204);
    let (status, body) = api(&server, "POST", &accept, "carol", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_invited")));
    let (status, body) = api(&server, "POST", &accept, "stranger", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_invited")));
    // Adding members invites them too.
    let (status, body) = api(
        &server,
        "POST",
        &format!("{path}/members"),
        "owner",
        Some(json!({"members": ["dave"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"added": [], "invited": ["dave"]}));
}

async fn pending_invitations_are_bounded_and_do_not_count(backend: Backend) {
    let mut config = config_for(backend).await;
    config.groups.invite = InviteRule::Accept;
    config.groups.max_invites_per_user = 2;
    config.groups.max_groups_per_user = 2;
    let server = start(config).await;
    let mut groups = Vec::new();
    for _ in 0..2 {
        groups.push(create_group(&server, "mallory", &["victim"]).await);
    }
    for _ in 0..2 {
        groups.push(create_group(&server, "friend", &["victim"]).await);
    }
    // Four invitations, two kept: the newest (the friend's).
    let (_, listed) = api(&server, "GET", "/api/v1/invites", "victim", None).await;
    let kept: Vec<&str> = listed["invites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["group_id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, [groups[3].as_str(), groups[2].as_str()]);
    // Invitations count toward nothing: the victim creates a group, accepts one, and then is
    // at the limit of two.
    create_group(&server, "victim", &[]).await;
    let accept = |g: &str| format!("/api/v1/invites/{g}/accept");
    assert_eq!(
        api(&server, "POST", &accept(&groups[3]), "victim", None)
            .await
            .0,
        200
    );
    let (status, body) = api(&server, "POST", &accept(&groups[2]), "victim", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("too_many_groups"))
    );
    // The refused acceptance left the invitation pending.
    let (_, listed) = api(&server, "GET", "/api/v1/invites", "victim", None).await;
    assert_eq!(listed["invites"][0]["group_id"], groups[2].as_str());
}
