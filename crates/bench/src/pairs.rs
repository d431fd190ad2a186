//! `pairs`: senders → receivers, unpaced with a window of unacknowledged messages, or paced
//! at a fixed total rate; several devices per receiver; slow receivers beside flooders.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    message::{is_ack, message, sent_at},
    net::{Net, Ws, close_code, metric},
};

pub(crate) struct PairsConfig {
    pub(crate) pairs: usize,
    pub(crate) window: usize,
    pub(crate) rate: u64,
    pub(crate) devices: usize,
    pub(crate) slow: usize,
    pub(crate) size: usize,
    pub(crate) flood_size: usize,
    pub(crate) flood_window: usize,
    pub(crate) duration: Duration,
    pub(crate) random_ids: bool,
    pub(crate) zero_create_time: bool,
}

pub(crate) const WARMUP: Duration = Duration::from_secs(1);
pub(crate) const DRAIN: Duration = Duration::from_secs(5);

/// One sender's bookkeeping, shared with its receiver devices.
#[derive(Default)]
pub(crate) struct Pair {
    pub(crate) sent: AtomicU64,
    /// Messages read, summed over the receiver's devices.
    pub(crate) received: AtomicU64,
    /// Woken on every receipt, so a sender with a full window can go on.
    pub(crate) progress: tokio::sync::Notify,
}

impl Pair {
    /// Messages sent but not yet read by every device; with `devices` 0, sent but not acked.
    pub(crate) fn in_flight(&self, devices: u64, acked: u64) -> u64 {
        if devices == 0 {
            return self.sent.load(Ordering::Relaxed).saturating_sub(acked);
        }
        let received = self.received.load(Ordering::Relaxed) / devices;
        self.sent.load(Ordering::Relaxed).saturating_sub(received)
    }
}

/// Shared by all tasks of a pairs run.
pub(crate) struct Run {
    pub(crate) start: Instant,
    /// Senders stop sending once this is set.
    pub(crate) stop: AtomicBool,
    /// Set once every sender has finished: receivers then drain up to the final count.
    pub(crate) senders_done: AtomicBool,
    /// Messages read by receivers (all devices), after warm-up.
    pub(crate) delivered: AtomicU64,
    pub(crate) latency: Mutex<Histogram<u64>>,
    /// Acks read by senders, after warm-up, and their latency (send → ack).
    pub(crate) acked: AtomicU64,
    pub(crate) ack_latency: Mutex<Histogram<u64>>,
    /// `local_id`s that look like random UUIDs (`pairs --random-ids`).
    pub(crate) random_ids: bool,
    /// `create_time` 0 (`pairs --zero-create-time`).
    pub(crate) zero_create_time: bool,
}

impl Run {
    pub(crate) fn micros(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

pub(crate) async fn run_pairs(net: &Net, cfg: PairsConfig) -> anyhow::Result<()> {
    let run = Arc::new(Run {
        start: Instant::now(),
        stop: AtomicBool::new(false),
        senders_done: AtomicBool::new(false),
        delivered: AtomicU64::new(0),
        latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        acked: AtomicU64::new(0),
        ack_latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        random_ids: cfg.random_ids,
        zero_create_time: cfg.zero_create_time,
    });
    let content = "x".repeat(cfg.size);
    let mut n = 0;
    // Connect every receiver device first, then the senders.
    let mut receivers = Vec::new();
    let pairs: Vec<Arc<Pair>> = (0..cfg.pairs).map(|_| Arc::default()).collect();
    for (p, pair) in pairs.iter().enumerate() {
        for d in 0..cfg.devices {
            let ws = net
                .connect_receiver(n, &format!("r{p}"), &format!("d{d}"))
                .await?;
            n += 1;
            receivers.push(tokio::spawn(receive(ws, run.clone(), pair.clone())));
        }
    }
    let mut slow_receivers = Vec::new();
    for s in 0..cfg.slow {
        slow_receivers.push(net.connect(n, &format!("slow{s}"), "d0").await?);
        n += 1;
    }
    let mut senders = Vec::new();
    let per_sender_rate = if cfg.rate > 0 {
        Some(cfg.rate as f64 / cfg.pairs as f64)
    } else {
        None
    };
    for (p, pair) in pairs.iter().enumerate() {
        let ws = net.connect(n, &format!("s{p}"), "d0").await?;
        n += 1;
        senders.push(tokio::spawn(send(
            ws,
            run.clone(),
            format!("r{p}"),
            pair.clone(),
            cfg.devices as u64,
            cfg.window as u64,
            per_sender_rate,
            content.clone(),
        )));
    }
    let mut flooders = Vec::new();
    let flood_content = "z".repeat(cfg.flood_size);
    for s in 0..cfg.slow {
        let ws = net.connect(n, &format!("flood{s}"), "d0").await?;
        n += 1;
        flooders.push(tokio::spawn(send(
            ws,
            run.clone(),
            format!("slow{s}"),
            // Nobody reads what a flooder sends: its window is counted in acks instead.
            Arc::default(),
            0,
            cfg.flood_window as u64,
            None,
            flood_content.clone(),
        )));
    }

    tokio::time::sleep(WARMUP).await;
    let d0 = run.delivered.load(Ordering::Relaxed);
    let a0 = run.acked.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(cfg.duration).await;
    let d1 = run.delivered.load(Ordering::Relaxed);
    let a1 = run.acked.load(Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    run.stop.store(true, Ordering::Relaxed);

    let mut sent_total = 0;
    for s in senders {
        sent_total += s.await??;
    }
    for f in flooders {
        let _ = f.await?;
    }
    run.senders_done.store(true, Ordering::Relaxed);
    let mut received_total = 0;
    for r in receivers {
        received_total += r.await??;
    }
    let mut slow_codes = Vec::new();
    for mut ws in slow_receivers {
        slow_codes.push(close_code(&mut ws).await);
    }

    let h = run
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "scenario: pairs={} window={} rate={} devices={} slow={} size={}",
        cfg.pairs,
        cfg.window,
        if cfg.rate == 0 {
            "unpaced".to_string()
        } else {
            cfg.rate.to_string()
        },
        cfg.devices,
        cfg.slow,
        cfg.size
    );
    println!(
        "delivered: {:.0} msg/s over {elapsed:.1} s",
        (d1 - d0) as f64 / elapsed
    );
    println!(
        "latency ms: p50 {:.3} p99 {:.3} p999 {:.3} max {:.3} (n={})",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0,
        h.len()
    );
    let ah = run
        .ack_latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let ams = |q: f64| ah.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "acked: {:.0} msg/s; ack latency ms: p50 {:.3} p99 {:.3} p999 {:.3}",
        (a1 - a0) as f64 / elapsed,
        ams(0.5),
        ams(0.99),
        ams(0.999)
    );
    let expected = sent_total * cfg.devices as u64;
    println!(
        "healthy pairs: sent {sent_total}, expected deliveries {expected}, received {received_total} ({})",
        if received_total == expected {
            "all delivered"
        } else {
            "MISSING"
        }
    );
    if cfg.slow > 0 {
        // A receiver that never reads usually cannot take the close frame either (its socket
        // buffers are full): the connection just ends. The server's counter says why.
        let disconnects = metric(net.server, "natter_slow_consumer_disconnects_total").await?;
        println!(
            "slow receivers: close codes seen {slow_codes:?}; server slow-consumer disconnects so far: {disconnects}"
        );
    }
    if received_total != expected {
        bail!(
            "{} deliveries missing",
            expected as i64 - received_total as i64
        );
    }
    Ok(())
}

/// Sends until the run stops, keeping at most `window` messages in flight (sent but not yet
/// read by every receiving device; acknowledged when `devices` is 0), or at a fixed rate. Reads its acks all along. Returns how
/// many messages it sent.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn send(
    mut ws: Ws,
    run: Arc<Run>,
    to: String,
    pair: Arc<Pair>,
    devices: u64,
    window: u64,
    rate: Option<f64>,
    content: String,
) -> anyhow::Result<u64> {
    let mut seq = 0u64;
    let mut acked = 0u64;
    let mut ack_latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut tick = rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    loop {
        let stopping = run.stop.load(Ordering::Relaxed);
        if stopping && acked == seq {
            break;
        }
        if !stopping && tick.is_none() && pair.in_flight(devices, acked) < window {
            while pair.in_flight(devices, acked) < window {
                seq += 1;
                pair.sent.fetch_add(1, Ordering::Relaxed);
                ws.feed(message(&run, &to, seq, &content)).await?;
            }
            ws.flush().await?;
        }
        let frame = tokio::select! {
            _ = async { tick.as_mut().unwrap().tick().await }, if tick.is_some() && !stopping => {
                seq += 1;
                pair.sent.fetch_add(1, Ordering::Relaxed);
                ws.send(message(&run, &to, seq, &content)).await?;
                continue;
            }
            () = pair.progress.notified(), if tick.is_none() && !stopping => continue,
            () = tokio::time::sleep(Duration::from_millis(50)) => continue,
            f = tokio::time::timeout(DRAIN, ws.next()) => match f {
                Ok(f) => f,
                Err(_) => break,
            },
        };
        match frame {
            Some(Ok(Message::Text(t))) if is_ack(&t) => {
                acked += 1;
                if let Some(at) = sent_at(&t).filter(|&at| at >= WARMUP.as_micros() as u64) {
                    let _ = ack_latency.record(run.micros().saturating_sub(at).max(1));
                    run.acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Ok(Message::Close(c))) => {
                bail!("sender to {to} closed by the server: {c:?}")
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("sender to {to}: connection ended"),
        }
    }
    run.ack_latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .add(&ack_latency)?;
    let _ = ws.close(None).await;
    Ok(seq)
}

/// Reads until the run stops and every message sent to this receiver has arrived (or the drain
/// time runs out). Returns how many messages arrived.
pub(crate) async fn receive(mut ws: Ws, run: Arc<Run>, pair: Arc<Pair>) -> anyhow::Result<u64> {
    let mut got = 0u64;
    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let warm = WARMUP.as_micros() as u64;
    loop {
        let frame = if run.senders_done.load(Ordering::Relaxed) {
            if got >= pair.sent.load(Ordering::Relaxed) {
                break;
            }
            match tokio::time::timeout(DRAIN, ws.next()).await {
                Ok(f) => f,
                Err(_) => break,
            }
        } else {
            match tokio::time::timeout(Duration::from_millis(100), ws.next()).await {
                Ok(f) => f,
                Err(_) => continue,
            }
        };
        match frame {
            Some(Ok(Message::Text(t))) => {
                let now = run.micros();
                got += 1;
                pair.received.fetch_add(1, Ordering::Relaxed);
                pair.progress.notify_one();
                if let Some(at) = sent_at(&t).filter(|&at| at >= warm) {
                    let _ = local.record(now.saturating_sub(at).max(1));
                    run.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Ok(Message::Close(c))) => bail!("receiver closed by the server: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("receiver: connection ended"),
        }
    }
    run.latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .add(&local)?;
    let _ = ws.close(None).await;
    Ok(got)
}
