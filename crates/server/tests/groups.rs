//! Group chat, end to end, on both stores: membership rules over the HTTP API, fan-out to every
//! member's devices, one order for all, offline sync, history visibility, limits.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, config_for, groups::*, start};
use natter_protocol::{content_type, msg_type};
use serde_json::json;

on_both_stores!(
    membership_rules_are_enforced,
    group_message_reaches_every_member_device_and_only_members_may_send,
    every_member_sees_one_order,
    offline_members_sync_and_late_joiners_see_no_earlier_history,
    removed_member_hears_of_it_and_receives_nothing_more,
    limits_are_enforced,
    two_thousand_member_group_delivers_to_every_online_member,
);

async fn membership_rules_are_enforced(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let g = create_group(&server, "owner", &["m1", "m2"]).await;
    let path = format!("/api/v1/groups/{g}");

    let (status, body) = api(&server, "GET", &path, "m1", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["members"].as_array().unwrap().len(), 3);
    assert_eq!(api(&server, "GET", &path, "stranger", None).await.0, 403);
    assert_eq!(
        api(&server, "GET", "/api/v1/groups/g_nope", "m1", None)
            .await
            .0,
        404
    );

    // A plain member may not add, remove, rename or dissolve.
    let members = format!("{path}/members");
    let add = Some(json!({"members": ["m3"]}));
    let (status, body) = api(&server, "POST", &members, "m1", add.clone()).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    assert_eq!(
        api(&server, "DELETE", &format!("{members}/m2"), "m1", None)
            .await
            .0,
        403
    );
    assert_eq!(
        api(&server, "PATCH", &path, "m1", Some(json!({"name": "x"})))
            .await
            .0,
        403
    );
    assert_eq!(api(&server, "DELETE", &path, "m1", None).await.0, 403);

    // The owner makes m1 an admin; now m1 may add and rename.
    let (status, _) = api(
        &server,
        "PUT",
        &format!("{members}/m1/role"),
        "owner",
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = api(&server, "POST", &members, "m1", add).await;
    assert_eq!((status, body["added"].clone()), (200, json!(["m3"])));
    assert_eq!(
        api(
            &server,
            "PATCH",
            &path,
            "m1",
            Some(json!({"name": "renamed"}))
        )
        .await
        .0,
        200
    );
    // Leaving is allowed; the owner cannot leave.
    assert_eq!(
        api(&server, "DELETE", &format!("{members}/m2"), "m2", None)
            .await
            .0,
        204
    );
    // The call returns once its notice is stored: the group's history already ends with it.
    let history = format!("{path}/messages?after_seq=0");
    let (_, body) = api(&server, "GET", &history, "m1", None).await;
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["msg_type"].as_i64(), last["send_id"].as_str()),
        (Some(4), Some("m2"))
    );
    assert_eq!(
        api(
            &server,
            "DELETE",
            &format!("{members}/owner"),
            "owner",
            None
        )
        .await
        .0,
        400
    );

    let (_, list) = api(&server, "GET", "/api/v1/groups", "m1", None).await;
    let mine = &list["groups"][0];
    assert_eq!(
        (mine["name"].as_str(), mine["role"].as_str()),
        (Some("renamed"), Some("admin"))
    );
    assert_eq!(
        api(&server, "GET", "/api/v1/groups", "m2", None).await.1["groups"],
        json!([])
    );

    // Bad input is a JSON error.
    let (status, body) = api(
        &server,
        "POST",
        "/api/v1/groups",
        "owner",
        Some(json!({"nom": 1})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );

    let mut m1 = server.connect("m1", "p").await;
    assert_eq!(api(&server, "DELETE", &path, "owner", None).await.0, 204);
    assert_eq!(api(&server, "GET", &path, "owner", None).await.0, 404);
    // The former members hear of it.
    let notice = m1.recv().await;
    assert_eq!(
        (notice.msg_type, notice.receiver_id.as_str()),
        (5, g.as_str())
    );
}

async fn group_message_reaches_every_member_device_and_only_members_may_send(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let g = create_group(&server, "a", &["b", "c"]).await;
    let mut a_phone = server.connect("a", "phone").await;
    let mut a_desk = server.connect("a", "desk").await;
    let mut b = server.connect("b", "p").await;
    let mut c = server.connect("c", "p").await;
    let mut d = server.connect("d", "p").await;

    a_phone.send_text(&group_msg(&g, "g1", "hello team")).await;
    for dev in [&mut a_desk, &mut b, &mut c] {
        let m = next_group_msg(dev).await;
        assert_eq!(
            (
                m.content.as_str(),
                m.send_id.as_str(),
                m.receiver_id.as_str()
            ),
            ("hello team", "a", g.as_str())
        );
        // The group's stream: seq 1 is the "created" notice, 2 this message.
        assert_eq!(m.seq, 2);
    }
    let ack = next_ack(&mut a_phone, "g1").await;
    assert_eq!((ack.msg_type, ack.seq), (msg_type::REC_RESP, 2));

    d.send_text(&group_msg(&g, "x", "let me in")).await;
    let reply = d.recv().await;
    assert_eq!(reply.content_type, content_type::ERROR);
    assert!(
        reply.content.starts_with("not_a_member"),
        "{}",
        reply.content
    );
    b.assert_silent(Duration::from_millis(200)).await;
    // msg_type 1 to a user, and msg_type 0 to a group, are refused.
    a_phone
        .send_text(&json!({"msg_type": 1, "receiver_id": "b", "local_id": "y"}).to_string())
        .await;
    assert!(
        a_phone
            .recv()
            .await
            .content
            .starts_with("unsupported_msg_type")
    );
    a_phone
        .send_text(&json!({"msg_type": 0, "receiver_id": g, "local_id": "z"}).to_string())
        .await;
    assert!(
        a_phone
            .recv()
            .await
            .content
            .starts_with("unsupported_msg_type")
    );
}

async fn every_member_sees_one_order(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let g = create_group(&server, "s0", &["s1", "s2", "r1", "r2"]).await;
    let mut r1 = server.connect("r1", "p").await;
    let mut r2 = server.connect("r2", "p").await;
    let mut tasks = Vec::new();
    for s in 0..3 {
        let mut c = server.connect(&format!("s{s}"), "p").await;
        let g = g.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                c.send_text(&group_msg(&g, &format!("{s}-{i}"), "x")).await;
            }
            let mut acks = 0;
            while acks < 30 {
                if c.recv().await.msg_type == msg_type::REC_RESP {
                    acks += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut orders = Vec::new();
    for r in [&mut r1, &mut r2] {
        let mut seen = Vec::new();
        while seen.len() < 90 {
            let m = next_group_msg(r).await;
            seen.push((m.seq, m.server_id));
        }
        let seqs: Vec<i64> = seen.iter().map(|(s, _)| *s).collect();
        // After the "created" notice (seq 1): consecutive, no gap, no repeat.
        assert_eq!(seqs, (2..=91).collect::<Vec<_>>());
        orders.push(seen);
    }
    assert_eq!(
        orders[0], orders[1],
        "both members saw the same messages in the same order"
    );
}

async fn offline_members_sync_and_late_joiners_see_no_earlier_history(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let g = create_group(&server, "a", &["offline"]).await;
    let mut a = server.connect("a", "p").await;
    for i in 0..5 {
        a.send_text(&group_msg(&g, &format!("{i}"), &format!("early {i}")))
            .await;
        next_ack(&mut a, &format!("{i}")).await;
    }
    assert_eq!(
        api(
            &server,
            "POST",
            &format!("/api/v1/groups/{g}/members"),
            "a",
            Some(json!({"members": ["late"]}))
        )
        .await
        .0,
        200
    );
    for i in 5..8 {
        a.send_text(&group_msg(&g, &format!("{i}"), &format!("later {i}")))
            .await;
        next_ack(&mut a, &format!("{i}")).await;
    }
    let path = format!("/api/v1/groups/{g}/messages?after_seq=0");
    let (status, body) = api(&server, "GET", &path, "offline", None).await;
    assert_eq!(status, 200, "{body}");
    let chat: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["msg_type"] == 1)
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        chat,
        vec![
            "early 0", "early 1", "early 2", "early 3", "early 4", "later 5", "later 6", "later 7"
        ]
    );
    // The group list gives the cursor to sync to.
    let (_, list) = api(&server, "GET", "/api/v1/groups", "offline", None).await;
    let last = body["messages"].as_array().unwrap().last().unwrap()["seq"]
        .as_i64()
        .unwrap();
    assert_eq!(list["groups"][0]["seq"].as_i64(), Some(last));

    let (_, body) = api(&server, "GET", &path, "late", None).await;
    let chat: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["msg_type"] == 1)
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(chat, vec!["later 5", "later 6", "later 7"]);
    assert_eq!(api(&server, "GET", &path, "stranger", None).await.0, 403);
}

async fn removed_member_hears_of_it_and_receives_nothing_more(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let g = create_group(&server, "a", &["b", "c"]).await;
    let mut a = server.connect("a", "p").await;
    let mut b = server.connect("b", "p").await;
    let mut c = server.connect("c", "p").await;
    a.send_text(&group_msg(&g, "1", "before")).await;
    assert_eq!(next_group_msg(&mut b).await.content, "before");
    assert_eq!(next_group_msg(&mut c).await.content, "before");

    assert_eq!(
        api(
            &server,
            "DELETE",
            &format!("/api/v1/groups/{g}/members/b"),
            "a",
            None
        )
        .await
        .0,
        204
    );
    let notice = b.recv().await;
    assert_eq!(notice.msg_type, 9, "member removed");
    assert_eq!(json_of(&notice.content)["users"], json!(["b"]));
    assert_eq!(c.recv().await.msg_type, 9);

    a.send_text(&group_msg(&g, "2", "after")).await;
    assert_eq!(next_group_msg(&mut c).await.content, "after");
    b.assert_silent(Duration::from_millis(300)).await;
    b.send_text(&group_msg(&g, "3", "still here?")).await;
    assert!(b.recv().await.content.starts_with("not_a_member"));
}

async fn limits_are_enforced(backend: Backend) {
    let mut config = config_for(backend).await;
    config.groups.max_members = 3;
    config.groups.max_groups_per_user = 2;
    let server = start(config).await;
    let (status, body) = api(
        &server,
        "POST",
        "/api/v1/groups",
        "o",
        Some(json!({"name": "big", "members": ["1", "2", "3"]})),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("group_full")));
    let g = create_group(&server, "o", &["1", "2"]).await;
    let (status, body) = api(
        &server,
        "POST",
        &format!("/api/v1/groups/{g}/members"),
        "o",
        Some(json!({"members": ["3"]})),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("group_full")));
    create_group(&server, "o", &[]).await;
    let (status, body) = api(
        &server,
        "POST",
        "/api/v1/groups",
        "o",
        Some(json!({"name": "third"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("too_many_groups"))
    );
}

async fn two_thousand_member_group_delivers_to_every_online_member(backend: Backend) {
    const N: usize = 2000;
    let server = start(config_for(backend).await).await;
    let users: Vec<String> = (0..N).map(|i| format!("u{i}")).collect();
    let g = create_group(
        &server,
        "boss",
        &users.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let mut clients = Vec::with_capacity(N);
    for u in &users {
        clients.push(server.connect(u, "p").await);
    }
    let mut boss = server.connect("boss", "p").await;
    boss.send_text(&group_msg(&g, "all", "hello everyone"))
        .await;
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| tokio::spawn(async move { next_group_msg(&mut c).await.content }))
        .collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), "hello everyone");
    }
    assert_eq!(boss.recv().await.msg_type, msg_type::REC_RESP);
}
