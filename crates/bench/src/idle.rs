//! `idle`: N connections that do nothing; the server's RSS per connection.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};

use crate::{
    message::run_tag,
    net::{Net, Ws, rss_kib},
};

pub(crate) async fn idle(net: &Net, conns: usize, pid: u32, hold: u64) -> anyhow::Result<()> {
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let results: Vec<anyhow::Result<Ws>> = stream::iter(0..conns)
        .map(|i| async move {
            net.connect(i, &format!("idle{i}-{}", run_tag()), "bench")
                .await
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let mut held = Vec::with_capacity(conns);
    let mut failed = 0;
    for r in results {
        match r {
            Ok(ws) => held.push(ws),
            Err(e) => {
                if failed == 0 {
                    eprintln!("connect failed: {e:#}");
                }
                failed += 1;
            }
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let after = rss_kib(pid)?;
    let n = held.len().max(1) as f64;
    println!("scenario: idle");
    println!(
        "connections: {} ({failed} failed) in {connect_secs:.1} s",
        held.len()
    );
    println!("server RSS: {before} KiB before, {after} KiB after");
    println!(
        "server RSS per connection: {:.2} KiB",
        (after.saturating_sub(before)) as f64 / n
    );
    drop(held);
    Ok(())
}
