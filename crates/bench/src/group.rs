//! `group`: fan-out of group messages to many members.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt, stream};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    message::run_tag,
    net::{Net, Ws, http},
};

/// The number after `"local_id":"gb` in a frame, for group bench messages.
pub(crate) fn group_index(frame: &str) -> Option<usize> {
    let rest = frame.split("\"local_id\":\"gb").nth(1)?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

pub(crate) async fn group_fanout(
    net: &Net,
    members: usize,
    messages: usize,
    window: usize,
) -> anyhow::Result<()> {
    let tag = run_tag();
    let names: Vec<String> = (0..members).map(|i| format!("gm{i}-{tag}")).collect();
    let sender = format!("gs-{tag}");
    let body = serde_json::json!({"name": "bench", "members": names}).to_string();
    let started = Instant::now();
    let (status, reply) = http(
        net.server,
        "POST",
        &format!("/api/v1/groups?user_id={sender}"),
        &body,
    )
    .await?;
    if status != 201 {
        bail!("creating the group failed: {status} {reply}");
    }
    let reply: serde_json::Value = serde_json::from_str(&reply)?;
    let group = reply["group"]["group_id"]
        .as_str()
        .context("no group_id")?
        .to_string();
    eprintln!(
        "group of {members} created in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let clock = Instant::now();
    let micros = move || clock.elapsed().as_micros() as u64;
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..messages).map(|_| AtomicU64::new(0)).collect());
    let last_at: Arc<Vec<AtomicU64>> = Arc::new((0..messages).map(|_| AtomicU64::new(0)).collect());
    let conns: Vec<anyhow::Result<Ws>> = stream::iter(0..members)
        .map(|i| {
            let name = &names[i];
            async move { net.connect(i, name, "b").await }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let mut readers = Vec::with_capacity(members);
    for ws in conns {
        let mut ws = ws?;
        let (counts, last_at) = (counts.clone(), last_at.clone());
        readers.push(tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                if let Message::Text(t) = frame
                    && let Some(i) = group_index(&t).filter(|&i| i < counts.len())
                {
                    last_at[i].fetch_max(micros(), Ordering::Relaxed);
                    counts[i].fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let ws = net.connect(members, &sender, "b").await?;
    let (mut sink, mut acks) = ws.split();
    let ack_reader = tokio::spawn(async move { while let Some(Ok(_)) = acks.next().await {} });
    let mut sent_at = vec![0u64; messages];
    let all = members as u64;
    let wait_for = |i: usize| {
        let counts = counts.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while counts[i].load(Ordering::Relaxed) < all {
                if Instant::now() > deadline {
                    bail!(
                        "message {i} reached {} of {all} members",
                        counts[i].load(Ordering::Relaxed)
                    );
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            Ok(())
        }
    };
    for (i, sent) in sent_at.iter_mut().enumerate() {
        if i >= window {
            wait_for(i - window).await?;
        }
        let frame = format!(
            r#"{{"msg_type":1,"receiver_id":"{group}","local_id":"gb{i}","content":"fan-out {i}"}}"#
        );
        *sent = micros();
        sink.send(Message::text(frame)).await?;
    }
    for i in messages.saturating_sub(window)..messages {
        wait_for(i).await?;
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for i in 0..messages {
        h.record(
            last_at[i]
                .load(Ordering::Relaxed)
                .saturating_sub(sent_at[i])
                .max(1),
        )?;
    }
    let span = last_at
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0)
        - sent_at[0];
    let deliveries = (members * messages) as f64;
    println!("scenario: group members={members} messages={messages} window={window}");
    println!(
        "deliveries: {:.0}/s ({} in {:.2} s)",
        deliveries / (span as f64 / 1e6),
        members * messages,
        span as f64 / 1e6
    );
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "send to last member ms: p50 {:.2} p99 {:.2} max {:.2}",
        ms(0.5),
        ms(0.99),
        h.max() as f64 / 1000.0
    );
    for r in readers {
        r.abort();
    }
    ack_reader.abort();
    Ok(())
}
