//! One client cannot hurt the others: senders of large messages, as fast as TCP allows, to
//! receivers that never read, beside pairs that chat. Each connection has a budget of messages
//! and bytes in flight, so the flooders are slowed (by TCP, alone) and not refused, what the
//! node holds for them stays within their budgets, and every chatting message is acked. (The
//! chatting pairs' latency beside a flood is measured by natter-bench, in a process of its own:
//! here the flooding clients share the server's two runtime threads.)

mod common;

use std::time::{Duration, Instant};

use common::{Client, TestServer, start, test_config};
use natter_protocol::{content_type, msg_type};

/// `n` round trips (send to a peer, until its ack, which must not be an error) of `c`; the
/// median.
async fn median_round_trip(c: &mut Client, to: &str, tag: &str, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        c.send_msg(to, &format!("{tag}{i}"), "hi").await;
        loop {
            let m = c.recv().await;
            if m.msg_type == msg_type::REC_RESP {
                assert_eq!(m.content_type, content_type::DEFAULT, "{}", m.content);
                break;
            }
        }
        times.push(t.elapsed());
    }
    times.sort();
    times[n / 2]
}

async fn pairs(server: &TestServer, n: usize) -> Vec<Client> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(server.connect(&format!("chat{i}"), "p").await);
        // The peers read what they get (they are never slow).
        let mut peer = server.connect(&format!("peer{i}"), "p").await;
        tokio::spawn(async move { while let Ok(Some(_)) = peer_next(&mut peer).await {} });
    }
    out
}

async fn peer_next(c: &mut Client) -> Result<Option<()>, ()> {
    use futures_util::StreamExt;
    match c.ws.next().await {
        Some(Ok(_)) => Ok(Some(())),
        _ => Err(()),
    }
}

/// `n` messages of 60 KB from `flooder` to `sink`, written as fast as the connection takes
/// them while its replies are read, as a real client does; returns (acks, refusals).
async fn flood(flooder: Client, sink: &str, n: usize) -> (usize, usize) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut tx, mut rx) = flooder.ws.split();
    let big = "f".repeat(60 * 1024);
    let sending = async move {
        for i in 0..n {
            let frame =
                format!(r#"{{"receiver_id":"{sink}","local_id":"f{i}","content":"{big}"}}"#);
            tx.send(Message::text(frame)).await.unwrap();
        }
        tx
    };
    let reading = async move {
        let (mut acks, mut refused) = (0, 0);
        while acks + refused < n {
            let Some(Ok(Message::Text(t))) = rx.next().await else {
                continue;
            };
            let m: natter_protocol::Msg = serde_json::from_str(&t).unwrap();
            if m.msg_type == msg_type::REC_RESP {
                if m.content_type == content_type::ERROR {
                    refused += 1;
                } else {
                    acks += 1;
                }
            }
        }
        (acks, refused)
    };
    let (_tx, counts) = tokio::join!(sending, reading);
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooders_are_slowed_alone_and_the_node_holds_no_more_than_their_budgets() {
    // The in-flight budgets alone: the byte rate, which would pace these flooders first, is
    // the next test's.
    let mut config = test_config();
    config.limits.rate.bytes_per_second = 0;
    let server = start(config).await;
    let mut chatting = pairs(&server, 5).await;
    // Two flooders: 60 KB messages, as fast as they can write, to receivers that never read.
    let mut flooders = Vec::new();
    for f in 0..2 {
        let _sink = common::raw_silent_client(server.addr, &format!("sink{f}"), "p").await;
        let flooder = server.connect(&format!("flood{f}"), "p").await;
        flooders.push(tokio::spawn(async move {
            let _sink = _sink;
            flood(flooder, &format!("sink{f}"), 300).await
        }));
    }
    // What the node holds of the messages read and not yet acked, sampled all along: the
    // flooders' shares (1 MiB each by default) and the chatting pairs', never their backlog.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let (addr, stop) = (server.addr, stop.clone());
        tokio::spawn(async move {
            let mut most = 0.0f64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let (_, body) = common::http_get(addr, "/metrics").await;
                let now = body
                    .lines()
                    .find_map(|l| l.strip_prefix("natter_inflight_bytes "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0.0);
                most = most.max(now);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            most
        })
    };
    for (i, c) in chatting.iter_mut().enumerate() {
        median_round_trip(c, &format!("peer{i}"), "d", 20).await;
    }
    for f in flooders {
        let (acks, refused) = tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("the flood completes")
            .unwrap();
        assert_eq!(
            (acks, refused),
            (300, 0),
            "flooders are slowed, not refused"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let most = watch.await.unwrap();
    assert!(
        most > 0.0 && most <= 3.0 * 1024.0 * 1024.0,
        "{most} bytes in flight at the most: two flooders' budgets of 1 MiB and the chat"
    );
    assert_eq!(
        server.metric("natter_inflight_bytes").await,
        0.0,
        "every share came back once the acks were queued"
    );
}

/// Over `limits.rate.bytes_per_second` a connection is paced, not refused: its socket is not read
/// until its average is back under the rate, so its messages are all accepted, at the rate;
/// meanwhile a chatting pair keeps its round trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_over_its_byte_rate_is_paced_not_refused() {
    const RATE: usize = 512 * 1024;
    const N: usize = 40;
    let mut config = test_config();
    config.limits.rate.bytes_per_second = RATE;
    config.limits.rate.burst_bytes = 128 * 1024;
    let server = start(config).await;
    let mut chatting = pairs(&server, 1).await;
    let before = median_round_trip(&mut chatting[0], "peer0", "b", 20).await;

    let _sink = common::raw_silent_client(server.addr, "sink", "p").await;
    let flooder = server.connect("flood", "p").await;
    let started = Instant::now();
    let flood = tokio::spawn(flood(flooder, "sink", N));
    let during = median_round_trip(&mut chatting[0], "peer0", "d", 20).await;
    let (acks, refused) = tokio::time::timeout(Duration::from_secs(60), flood)
        .await
        .expect("the flood completes")
        .unwrap();
    let took = started.elapsed();
    assert_eq!((acks, refused), (N, 0), "paced, not refused");
    // 40 messages of 60 KiB past a burst of 128 KiB, at 512 KiB/s: at least 4.4 s.
    let least = Duration::from_secs_f64((N * 60 * 1024 - 128 * 1024) as f64 / RATE as f64);
    assert!(
        took >= least.mul_f64(0.95),
        "{took:?} for the flood, less than {least:?}"
    );
    assert!(server.metric("natter_rate_paced_total").await > 0.0);
    assert!(
        during <= before * 10 + Duration::from_millis(5),
        "median round trip {during:?} beside the paced sender, {before:?} before"
    );
}
