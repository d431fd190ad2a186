//! History is read in pages bounded in bytes as well as in count, on both stores: an HTTP page
//! holds about 1 MiB whatever `limit` asks, and a replay fetches its history a bounded page at
//! a time; either way every message arrives, in order, once.

#[macro_use]
mod common;

use common::{Backend, Client, config_for, start};
use natter_protocol::msg_type;

on_both_stores!(large_histories_come_in_bounded_pages);

async fn large_histories_come_in_bounded_pages(backend: Backend) {
    let server = start(config_for(backend).await).await;
    let mut alice = server.connect("alice", "p").await;
    let big = "h".repeat(60 * 1024);
    for i in 0..40 {
        alice
            .send_msg("bob", &format!("l{i}"), &format!("{i:02}{big}"))
            .await;
        while alice.recv().await.msg_type != msg_type::REC_RESP {}
    }

    // Over HTTP: pages of about 1 MiB, has_more until the end, no gap.
    let mut after = 0;
    let mut pages = 0;
    loop {
        let (status, body) = server
            .get(&format!(
                "/api/v1/messages?user_id=bob&after_seq={after}&limit=1000"
            ))
            .await;
        assert_eq!(status, 200);
        assert!(body.len() < 1200 * 1024, "a page of {} bytes", body.len());
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        let messages = page["messages"].as_array().unwrap();
        for m in messages {
            assert_eq!(m["seq"].as_i64().unwrap(), after + 1);
            after += 1;
        }
        pages += 1;
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        assert!(pages < 20, "no end");
    }
    assert_eq!(after, 40);
    assert!(pages >= 3, "{pages} pages for 2.4 MB");

    // By replay: everything, in order, once.
    let url = format!("{}?since_seq=0", server.url("bob", "p"));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut bob = Client { ws };
    for i in 0..40 {
        let m = bob.recv().await;
        assert_eq!(
            (m.seq, &m.content[..2]),
            (i + 1, format!("{i:02}").as_str())
        );
    }
    bob.assert_silent(std::time::Duration::from_millis(200))
        .await;
}
