//! The `natter` binary: `natter serve` (the default) runs the server.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};
use natter::{Config, Server, config::LogFormat};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "natter", version, about = "Natter instant-messaging server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
    /// Print a token for a user, signed with the configured auth.secret (HS256).
    Token(TokenArgs),
    /// Chat from the terminal: lines from stdin are sent, incoming messages are printed.
    Chat(ChatArgs),
}

#[derive(clap::Args)]
struct ChatArgs {
    /// Server address.
    #[arg(long, default_value = "ws://127.0.0.1:50000")]
    server: String,
    /// Who you are.
    #[arg(long)]
    user: String,
    /// This device's platform id.
    #[arg(long, default_value = "cli")]
    platform: String,
    /// Whom lines are sent to: a user id or a group id (g_...).
    #[arg(long)]
    to: String,
    /// Token (or set NATTER_TOKEN); not needed against a development-mode server.
    #[arg(long, env = "NATTER_TOKEN")]
    token: Option<String>,
    /// Send stdin's lines, wait for their acks, and exit (for scripts).
    #[arg(long)]
    once: bool,
    /// How many of the conversation's last messages to show first (`/more` shows earlier ones).
    #[arg(long, default_value_t = 20)]
    history: u32,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The user id (the token's `sub`).
    user: String,
    /// Bind the token to this platform id.
    #[arg(long)]
    platform: Option<String>,
    /// How long the token is valid: 30m, 1h, 7d...
    #[arg(long, default_value = "1h", value_parser = natter::config::parse_duration)]
    ttl: std::time::Duration,
    /// YAML configuration file holding auth.secret (or set NATTER__AUTH__SECRET).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// YAML configuration file (see config.example.yaml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on, overriding `server.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(args),
        Command::Token(args) => token(args),
        Command::Chat(args) => chat(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Before the runtime's threads exist.
    natter::memory::configure();
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
        config.validate()?;
    }
    init_logging(config.log.format);
    if !config.auth.token_required() {
        tracing::warn!(
            "DEVELOPMENT MODE: no auth.secret is set, so anybody can connect as any user id. \
             This is only allowed on a loopback address; set auth.secret for real use"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal().context("installing signal handlers")?;
        let server = Server::bind(config).await?;
        tracing::info!(addr = %server.local_addr()?, "natter listening");
        server.run(shutdown).await?;
        tracing::info!("natter stopped");
        Ok(())
    })
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let auth = natter::auth::Auth::new(&config.auth)?;
    let token = auth.mint(&args.user, args.platform.as_deref(), args.ttl)?;
    println!("{token}");
    Ok(())
}

/// `natter chat`: shows the last messages of the conversation with `--to`, then its new ones
/// as they come (`#<conv_seq> <sender>: <content>`; receipts, notices, recalls and edits in
/// words), and `sent <server_id> seq <n>` for every ack. Lines from stdin are sent; `/more`
/// shows earlier messages, `/recall N` and `/edit N text` change one's own message #N. Exits
/// non-zero when a message is refused.
fn chat(args: ChatArgs) -> anyhow::Result<()> {
    use natter_client::{Client, Config, Page};
    use natter_protocol::{conversation, is_group_id};
    use tokio::io::AsyncBufReadExt;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut config = Config::new(&args.server, &args.user, &args.platform);
        if let Some(token) = args.token {
            config = config.token(token);
        }
        // Only what arrives from now on comes over the connection; the conversation's past
        // comes from its history (a server that stores nothing has neither).
        if let Ok((seq, send_seq)) = Client::cursors(&config).await {
            config = config.since(seq, send_seq);
        }
        let conv = if is_group_id(&args.to) {
            args.to.clone()
        } else {
            conversation::direct_id(&args.user, &args.to)
        };
        let mut client = Client::connect(config).await?;
        let mut oldest = i64::MAX;
        if !args.once {
            oldest = show_history(&client, &conv, Page::Latest, args.history).await;
        }
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut stdin_open = true;
        loop {
            tokio::select! {
                line = lines.next_line(), if stdin_open => match line? {
                    Some(line) if line.trim().is_empty() => {}
                    Some(line) if line.trim() == "/more" => {
                        let earlier = Page::Before(oldest);
                        oldest = oldest.min(show_history(&client, &conv, earlier, args.history).await);
                    }
                    Some(line) if line.starts_with("/recall ") || line.starts_with("/edit ") => {
                        let mut words = line.splitn(3, ' ');
                        let command = words.next().unwrap_or_default();
                        let Some(n) = words.next().and_then(|n| n.trim_start_matches('#').parse().ok()) else {
                            eprintln!("{command} takes a message number: {command} 12");
                            continue;
                        };
                        let ack = match command {
                            "/recall" => client.recall(&args.to, n).await,
                            _ => client.edit(&args.to, n, words.next().unwrap_or_default()).await,
                        };
                        match ack {
                            Ok(ack) => println!("sent {} seq {}", ack.server_id, ack.seq),
                            Err(e) => eprintln!("{e}"),
                        }
                    }
                    Some(line) => {
                        let ack = client.send(&args.to, &line).await?;
                        println!("sent {} seq {}", ack.server_id, ack.seq);
                    }
                    None if args.once => return Ok(()),
                    None => stdin_open = false,
                },
                msg = client.next(), if !args.once => match msg {
                    Some(m) if m.conv_id == conv => println!("{}", line_of(&m)),
                    Some(m) => println!("({} wrote in {})", m.send_id, m.conv_id),
                    None => anyhow::bail!("the connection was closed"),
                },
            }
        }
    })
}

/// A page of the conversation's history, printed; returns the first entry's number.
async fn show_history(
    client: &natter_client::Client,
    conv: &str,
    page: natter_client::Page,
    limit: u32,
) -> i64 {
    match client.history(conv, page, limit).await {
        Ok(history) => {
            if history.has_more {
                println!("(earlier messages: /more)");
            }
            for m in &history.messages {
                println!("{}", line_of(m));
            }
            history.messages.first().map_or(i64::MAX, |m| m.conv_seq)
        }
        Err(e) => {
            eprintln!("(no history: {e})");
            i64::MAX
        }
    }
}

/// A conversation's entry as `natter chat` prints it: its number, then the frame in words.
fn line_of(m: &natter_client::Msg) -> String {
    if m.conv_seq > 0 && m.msg_type != natter_protocol::msg_type::READ {
        format!("#{} {}", m.conv_seq, natter_client::describe(m))
    } else {
        natter_client::describe(m)
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Registers for SIGINT and SIGTERM now (so a signal that comes while the server starts is not
/// lost to the default action), and returns a future that resolves on either.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
