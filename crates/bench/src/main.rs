//! `natter-bench`: the Natter load generator. Runs against a server started separately (release
//! build, loopback). Scenarios:
//!
//! - `idle`: open N connections that do nothing; report the server's RSS per connection.
//! - `connect`: handshakes per second, with or without token verification.
//! - `pairs`: senders → receivers, unpaced with a window of unacknowledged messages, or paced at
//!   a fixed total rate; `--devices` gives every receiver several connections (multi-device
//!   fan-out); `--slow K` adds K receivers that never read while flooders write to them.
//! - `disk`: no server; how long a small write plus fsync takes in a directory, which is what
//!   every durable commit waits for. Read beside the storage figures: while the disk stalls for
//!   200 ms, no store on it acknowledges anything.
//!
//! Latency is measured from just before the sender writes the frame to when the receiver has
//! read it: the send instant travels in the message's `create_time` field (µs since bench start).

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt, stream};
use hdrhistogram::Histogram;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};

#[derive(Parser)]
#[command(name = "natter-bench", about = "Load generator for the Natter server")]
struct Cli {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:50000", global = true)]
    server: SocketAddr,
    /// Where receivers connect, when not to `--server` (cluster runs: another node).
    #[arg(long, global = true)]
    receivers_server: Option<SocketAddr>,
    /// Number of loopback source addresses (127.0.0.2, .3, ...) to spread connections over.
    #[arg(long, default_value_t = 4, global = true)]
    sources: u8,
    /// Load-generator threads. One leaves the other core to the server on a 2-core machine.
    #[arg(long, default_value_t = 1, global = true)]
    threads: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Idle connections: server RSS per connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// PID of the server, to read its RSS from /proc.
        #[arg(long)]
        server_pid: u32,
        /// Seconds to hold the connections before measuring.
        #[arg(long, default_value_t = 3)]
        hold: u64,
    },
    /// Connection rate: N WebSocket handshakes, C at a time (with tokens when --secret is given).
    Connect {
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// HS256 secret the server was started with; tokens are minted before timing starts.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Group fan-out: one sender into a group of N online members (needs server storage).
    Group {
        #[arg(long, default_value_t = 1000)]
        members: usize,
        /// Messages sent (each to every member).
        #[arg(long, default_value_t = 200)]
        messages: usize,
        /// Messages in flight: message i is sent once message i - window reached every member.
        #[arg(long, default_value_t = 1)]
        window: usize,
    },
    /// Sender → receiver pairs.
    Pairs {
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Unacknowledged messages each sender keeps in flight (unpaced mode).
        #[arg(long, default_value_t = 8)]
        window: usize,
        /// Total messages per second over all senders (paced mode); 0 = unpaced.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Connections (platforms) per receiving user; each gets every message.
        #[arg(long, default_value_t = 1)]
        devices: usize,
        /// Receivers that never read, each flooded by its own sender.
        #[arg(long, default_value_t = 0)]
        slow: usize,
        /// Content bytes per message.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Measured seconds (after one second of warm-up).
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// `local_id`s that look like random UUIDs (as many apps make them) instead of
        /// `<run>-<counter>`.
        #[arg(long)]
        random_ids: bool,
        /// `create_time` 0, as the tutorial's example JSON has it (every message is then looked
        /// up as a possible resend); the send instant travels at the end of the `local_id`.
        #[arg(long)]
        zero_create_time: bool,
    },
    /// Disk: write + fsync latency in a directory (no server).
    Disk {
        /// Directory to probe (the server's `storage.path`); a scratch file is made there.
        #[arg(long, default_value = ".")]
        path: std::path::PathBuf,
        /// Seconds to probe.
        #[arg(long, default_value_t = 5)]
        duration: u64,
        /// Bytes written before each fsync (about one commit of the message log).
        #[arg(long, default_value_t = 8192)]
        size: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cli.threads);
        b
    };
    runtime.enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let net = Net {
        server: cli.server,
        sources: cli.sources.max(1),
        receivers: cli.receivers_server.unwrap_or(cli.server),
    };
    match cli.scenario {
        Scenario::Idle {
            conns,
            server_pid,
            hold,
        } => idle(&net, conns, server_pid, hold).await,
        Scenario::Connect {
            conns,
            concurrency,
            secret,
        } => connect_rate(&net, conns, concurrency.max(1), secret.as_deref()).await,
        Scenario::Group {
            members,
            messages,
            window,
        } => group_fanout(&net, members, messages, window.max(1)).await,
        Scenario::Pairs {
            pairs,
            window,
            rate,
            devices,
            slow,
            size,
            duration,
            random_ids,
            zero_create_time,
        } => {
            let cfg = PairsConfig {
                pairs,
                window: window.max(1),
                rate,
                devices: devices.max(1),
                slow,
                size,
                duration: Duration::from_secs(duration),
                random_ids,
                zero_create_time,
            };
            run_pairs(&net, cfg).await
        }
        Scenario::Disk {
            path,
            duration,
            size,
        } => {
            let duration = Duration::from_secs(duration);
            tokio::task::spawn_blocking(move || disk(&path, duration, size.max(1))).await?
        }
    }
}

/// Prints what [`probe_disk`] measured.
fn disk(dir: &std::path::Path, duration: Duration, size: usize) -> anyhow::Result<()> {
    let syncs = probe_disk(dir, duration, size)?;
    let ms = |q: f64| syncs.value_at_quantile(q) as f64 / 1000.0;
    let over = |limit_ms: u64| {
        syncs
            .iter_recorded()
            .filter(|v| v.value_iterated_to() > limit_ms * 1000)
            .map(|v| v.count_at_value())
            .sum::<u64>()
    };
    println!("scenario: disk path={} size={size}", dir.display());
    println!(
        "fsync ms: p50 {:.3} p99 {:.3} p999 {:.3} max {:.1} (n={}); over 10 ms: {}, over 50 ms: {}",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        syncs.max() as f64 / 1000.0,
        syncs.len(),
        over(10),
        over(50),
    );
    Ok(())
}

/// Writes `size` bytes and fsyncs, back to back, for `duration`, over a 2 MiB file written
/// beforehand (overwrites, as SQLite's WAL after it starts over); returns the fsync latencies
/// in µs. The scratch file is removed.
fn probe_disk(
    dir: &std::path::Path,
    duration: Duration,
    size: usize,
) -> anyhow::Result<Histogram<u64>> {
    use std::os::unix::fs::FileExt;
    const SLOTS: u64 = 256;
    let path = dir.join("natter-bench-disk.tmp");
    let file = std::fs::File::create(&path).with_context(|| format!("creating {path:?}"))?;
    let probe = || -> anyhow::Result<Histogram<u64>> {
        let block = vec![0x5a_u8; size];
        for slot in 0..SLOTS {
            file.write_all_at(&block, slot * size as u64)?;
        }
        file.sync_all()?;
        let mut syncs = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let started = Instant::now();
        let mut slot = 0;
        while started.elapsed() < duration {
            file.write_all_at(&block, slot * size as u64)?;
            slot = (slot + 1) % SLOTS;
            let t = Instant::now();
            file.sync_all()?;
            let _ = syncs.record(t.elapsed().as_micros().max(1) as u64);
        }
        Ok(syncs)
    };
    let syncs = probe();
    let _ = std::fs::remove_file(&path);
    syncs
}

type Ws = WebSocketStream<TcpStream>;

struct Net {
    server: SocketAddr,
    sources: u8,
    /// Where receiving devices connect (the same server unless a cluster run says otherwise).
    receivers: SocketAddr,
}

impl Net {
    /// Connects as `user` on `platform`, from source address number `n`.
    async fn connect(&self, n: usize, user: &str, platform: &str) -> anyhow::Result<Ws> {
        self.connect_with_token(n, user, platform, None).await
    }

    /// A receiving device's connection (to `--receivers-server` when given).
    async fn connect_receiver(&self, n: usize, user: &str, platform: &str) -> anyhow::Result<Ws> {
        let to = Net {
            server: self.receivers,
            sources: self.sources,
            receivers: self.receivers,
        };
        to.connect(n, user, platform).await
    }

    async fn connect_with_token(
        &self,
        n: usize,
        user: &str,
        platform: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Ws> {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (n % self.sources as usize) as u8);
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let tcp = socket
            .connect(self.server)
            .await
            .with_context(|| format!("connecting from {source} to {}", self.server))?;
        tcp.set_nodelay(true)?;
        let mut url = format!("ws://{}/ws/{user}/conn/{platform}", self.server);
        if let Some(token) = token {
            url.push_str("?token=");
            url.push_str(token);
        }
        // Small client buffers: the bench holds tens of thousands of connections.
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (ws, _) = client_async_with_config(url, tcp, Some(config)).await?;
        Ok(ws)
    }
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

async fn idle(net: &Net, conns: usize, pid: u32, hold: u64) -> anyhow::Result<()> {
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

#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

async fn connect_rate(
    net: &Net,
    conns: usize,
    concurrency: usize,
    secret: Option<&str>,
) -> anyhow::Result<()> {
    let users: Vec<String> = (0..conns).map(|i| format!("c{i}")).collect();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let tokens: Vec<Option<String>> = match secret {
        Some(secret) => {
            let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
            let header = jsonwebtoken::Header::default();
            users
                .iter()
                .map(|sub| jsonwebtoken::encode(&header, &Claims { sub, exp }, &key).map(Some))
                .collect::<Result<_, _>>()?
        }
        None => vec![None; conns],
    };
    let started = Instant::now();
    let results: Vec<anyhow::Result<Ws>> = stream::iter(0..conns)
        .map(|i| {
            let (user, token) = (&users[i], tokens[i].as_deref());
            async move { net.connect_with_token(i, user, "bench", token).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let secs = started.elapsed().as_secs_f64();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("first failure: {e:#}");
    }
    println!(
        "scenario: connect conns={conns} concurrency={concurrency} auth={}",
        if secret.is_some() { "jwt" } else { "none" }
    );
    println!(
        "handshakes: {ok} ok of {conns} in {secs:.2} s = {:.0}/s",
        ok as f64 / secs
    );
    drop(results);
    if ok != conns {
        bail!("{} handshakes failed", conns - ok);
    }
    Ok(())
}

struct PairsConfig {
    pairs: usize,
    window: usize,
    rate: u64,
    devices: usize,
    slow: usize,
    size: usize,
    duration: Duration,
    random_ids: bool,
    zero_create_time: bool,
}

const WARMUP: Duration = Duration::from_secs(1);
const DRAIN: Duration = Duration::from_secs(5);

/// One sender's bookkeeping, shared with its receiver devices.
#[derive(Default)]
struct Pair {
    sent: AtomicU64,
    /// Messages read, summed over the receiver's devices.
    received: AtomicU64,
    /// Woken on every receipt, so a sender with a full window can go on.
    progress: tokio::sync::Notify,
}

impl Pair {
    /// Messages sent but not yet read by every device; with `devices` 0, sent but not acked.
    fn in_flight(&self, devices: u64, acked: u64) -> u64 {
        if devices == 0 {
            return self.sent.load(Ordering::Relaxed).saturating_sub(acked);
        }
        let received = self.received.load(Ordering::Relaxed) / devices;
        self.sent.load(Ordering::Relaxed).saturating_sub(received)
    }
}

/// Shared by all tasks of a pairs run.
struct Run {
    start: Instant,
    /// Senders stop sending once this is set.
    stop: AtomicBool,
    /// Set once every sender has finished: receivers then drain up to the final count.
    senders_done: AtomicBool,
    /// Messages read by receivers (all devices), after warm-up.
    delivered: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    /// Acks read by senders, after warm-up, and their latency (send → ack).
    acked: AtomicU64,
    ack_latency: Mutex<Histogram<u64>>,
    /// `local_id`s that look like random UUIDs (`pairs --random-ids`).
    random_ids: bool,
    /// `create_time` 0 (`pairs --zero-create-time`).
    zero_create_time: bool,
}

impl Run {
    fn micros(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// A tag unique to this bench process, so `local_id`s never repeat across runs (the server
/// would take a repeat for an idempotent resend).
fn run_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{:x}-{}", nanos, std::process::id())
    })
}

/// Message `seq` of a sender, created now.
fn message(run: &Run, to: &str, seq: u64, content: &str) -> Message {
    let at_micros = run.micros();
    let local_id = if run.random_ids {
        // Unique per sender (the first half is a bijection of the sequence number) and scattered.
        let mixed = |x: u64| {
            let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        format!("{:016x}{:016x}", mixed(seq), mixed(at_micros))
    } else {
        format!("{}-{seq}", run_tag())
    };
    let (local_id, create_time) = if run.zero_create_time {
        (format!("{local_id}{SENT_AT}{at_micros}"), 0)
    } else {
        (local_id, at_micros)
    };
    Message::text(format!(
        r#"{{"receiver_id":"{to}","local_id":"{local_id}","create_time":{create_time},"content":"{content}"}}"#
    ))
}

/// What precedes the send instant in a `local_id` (`pairs --zero-create-time`).
const SENT_AT: &str = "-at";

/// When a server frame's message was sent (µs since the bench started): its `create_time`, or
/// with `create_time` 0 the end of its `local_id`. Without a full JSON parse.
fn sent_at(frame: &str) -> Option<u64> {
    let number = |rest: &str| {
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse::<u64>().ok()
    };
    match number(frame.split("\"create_time\":").nth(1)?)? {
        0 => {
            let local_id = frame.split("\"local_id\":\"").nth(1)?;
            let local_id = &local_id[..local_id.find('"')?];
            number(local_id.rsplit(SENT_AT).next()?)
        }
        at => Some(at),
    }
}

fn is_ack(frame: &str) -> bool {
    frame.contains("\"msg_type\":24")
}

async fn run_pairs(net: &Net, cfg: PairsConfig) -> anyhow::Result<()> {
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
    let flood_content = "z".repeat(cfg.size.max(1000));
    for s in 0..cfg.slow {
        let ws = net.connect(n, &format!("flood{s}"), "d0").await?;
        n += 1;
        flooders.push(tokio::spawn(send(
            ws,
            run.clone(),
            format!("slow{s}"),
            // Nobody reads what a flooder sends: its window of 8, like every sender's, is
            // counted in acks instead.
            Arc::default(),
            0,
            cfg.window as u64,
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
async fn send(
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
async fn receive(mut ws: Ws, run: Arc<Run>, pair: Arc<Pair>) -> anyhow::Result<u64> {
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

/// Reads a never-reading receiver's backlog until its close frame; returns the close code.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(DRAIN, ws.next()).await {
            Ok(Some(Ok(Message::Close(c)))) => return c.map(|c| u16::from(c.code)),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// A plain HTTP request to the server; returns the status and body.
async fn http(
    server: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(server).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The number after `"local_id":"gb` in a frame, for group bench messages.
fn group_index(frame: &str) -> Option<usize> {
    let rest = frame.split("\"local_id\":\"gb").nth(1)?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

async fn group_fanout(
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

/// One value from the server's `/metrics`.
async fn metric(server: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let (_, body) = http(server, "GET", "/metrics", "").await?;
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_probe_times_its_fsyncs_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("natter-bench-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let syncs = probe_disk(&dir, Duration::from_millis(200), 4096).unwrap();
        assert!(!syncs.is_empty(), "no fsync was timed");
        assert!(syncs.min() >= 1);
        assert!(!dir.join("natter-bench-disk.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_send_instant_comes_from_create_time_or_else_the_local_id() {
        let frame = |local_id: &str, create_time: u64| {
            format!(
                r#"{{"send_id":"s","receiver_id":"r","local_id":"{local_id}","server_id":"x","create_time":{create_time},"send_time":5,"seq":1,"msg_type":24}}"#
            )
        };
        assert_eq!(sent_at(&frame("run-7", 1234)), Some(1234));
        assert_eq!(sent_at(&frame("run-7-at1234567", 0)), Some(1_234_567));
        assert_eq!(sent_at(&frame("00ff-at-at42", 0)), Some(42));
        assert_eq!(sent_at(&frame("run-7", 0)), None);
        assert_eq!(sent_at(r#"{"content":"no times"}"#), None);
    }
}
