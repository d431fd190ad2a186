//! `natter-bench`: the Natter load generator. Runs against a server started separately (release
//! build, loopback). Scenarios:
//!
//! - `idle`: open N connections that do nothing; report the server's RSS per connection.
//! - `connect`: handshakes per second, with or without token verification.
//! - `pairs`: senders → receivers, unpaced with a window of unacknowledged messages, or paced at
//!   a fixed total rate; `--devices` gives every receiver several connections (multi-device
//!   fan-out); `--slow K` adds K receivers that never read while flooders write to them.
//! - `hogs`: readers of a large history that never read it; the server's RSS while they hold
//!   and after they close.
//! - `convs`: a user with many conversations and a long past: the chat list's first page and a
//!   conversation's last 50 messages, their latency.
//! - `push-sink`: a push webhook receiver answering 200, counting notifications a second.
//! - `disk`: no server; how long a small write plus fsync takes in a directory, which is what
//!   every durable commit waits for. Read beside the storage figures: while the disk stalls for
//!   200 ms, no store on it acknowledges anything.
//!
//! Latency is measured from just before the sender writes the frame to when the receiver has
//! read it: the send instant travels in the message's `create_time` field (µs since bench start).

mod connect;
mod convs;
mod disk;
mod group;
mod hogs;
mod idle;
mod message;
mod net;
mod pairs;
mod sink;

use std::{net::SocketAddr, time::Duration};

use clap::{Parser, Subcommand};

use crate::{
    connect::connect_rate,
    convs::{ConvsConfig, convs},
    disk::disk,
    group::group_fanout,
    hogs::{HogsConfig, Kind, hogs},
    idle::idle,
    net::Net,
    pairs::{PairsConfig, run_pairs},
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
        /// Connections (platforms) per receiving user; each gets every message. 0: receivers
        /// never connect (every message waits offline; the window counts acks).
        #[arg(long, default_value_t = 1)]
        devices: usize,
        /// Receivers that never read, each flooded by its own sender.
        #[arg(long, default_value_t = 0)]
        slow: usize,
        /// Content bytes per message.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Content bytes of a flooder's messages (`--slow`); default: `size`, at least 1000.
        #[arg(long)]
        flood_size: Option<usize>,
        /// Unacknowledged messages each flooder keeps in flight; default: `window`. A large one
        /// writes as fast as the server reads (the noisy neighbour).
        #[arg(long)]
        flood_window: Option<usize>,
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
    /// Readers of one user's large history that never read it: the server's RSS.
    Hogs {
        /// `replay` (WebSocket from since_seq=0) or `history` (HTTP pages).
        #[arg(long, value_enum, default_value = "replay")]
        kind: Kind,
        #[arg(long, default_value_t = 30)]
        readers: usize,
        /// Messages in the user's inbox.
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        /// Content bytes per message.
        #[arg(long, default_value_t = 60_000)]
        size: usize,
        /// Seconds the readers hold their connections.
        #[arg(long, default_value_t = 10)]
        hold: u64,
        /// PID of the server, to read its RSS from /proc.
        #[arg(long)]
        server_pid: u32,
    },
    /// Conversations: a user with many conversations and a long past; the chat list's first
    /// page and a conversation's last page, their latency (needs server storage, and
    /// `limits.http.per_second: 0`).
    Convs {
        #[arg(long, default_value_t = 1000)]
        conversations: usize,
        /// Messages in the user's history, spread evenly over the conversations.
        #[arg(long, default_value_t = 10_000)]
        history: usize,
        /// Requests of each kind measured.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Peers seeding at once.
        #[arg(long, default_value_t = 100)]
        seeders: usize,
        /// Unacknowledged messages per seeding peer.
        #[arg(long, default_value_t = 32)]
        window: usize,
    },
    /// A push webhook receiver: answers 200, prints notifications a second over `duration`
    /// seconds from the first one (the server's `webhooks.push.url` points here).
    PushSink {
        #[arg(long, default_value = "127.0.0.1:50190")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 10)]
        duration: u64,
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
            flood_size,
            flood_window,
            duration,
            random_ids,
            zero_create_time,
        } => {
            let cfg = PairsConfig {
                pairs,
                window: window.max(1),
                rate,
                devices,
                slow,
                size,
                flood_size: flood_size.unwrap_or(size.max(1000)),
                flood_window: flood_window.unwrap_or(window).max(1),
                duration: Duration::from_secs(duration),
                random_ids,
                zero_create_time,
            };
            run_pairs(&net, cfg).await
        }
        Scenario::Hogs {
            kind,
            readers,
            messages,
            size,
            hold,
            server_pid,
        } => {
            let cfg = HogsConfig {
                kind,
                readers,
                messages,
                size,
                hold: Duration::from_secs(hold),
                pid: server_pid,
            };
            hogs(&net, cfg).await
        }
        Scenario::Convs {
            conversations,
            history,
            requests,
            seeders,
            window,
        } => {
            let cfg = ConvsConfig {
                conversations,
                history,
                requests,
                seeders,
                window,
            };
            convs(&net, cfg).await
        }
        Scenario::PushSink { listen, duration } => {
            sink::push_sink(listen, Duration::from_secs(duration)).await
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
