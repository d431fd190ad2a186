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

/// `natter chat`: prints `<sender>: <content>` for every message and `sent <server_id> seq <n>`
/// for every ack; exits non-zero when a message is refused.
fn chat(args: ChatArgs) -> anyhow::Result<()> {
    use natter_client::{Client, Config};
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
        // Replay only what arrives from now on: a terminal shows the live conversation.
        let mut client = Client::connect(config).await?;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut stdin_open = true;
        loop {
            tokio::select! {
                line = lines.next_line(), if stdin_open => match line? {
                    Some(line) if line.trim().is_empty() => {}
                    Some(line) => {
                        let ack = client.send(&args.to, &line).await?;
                        println!("sent {} seq {}", ack.server_id, ack.seq);
                    }
                    None if args.once => return Ok(()),
                    None => stdin_open = false,
                },
                msg = client.next(), if !args.once => match msg {
                    Some(m) => println!("{}", natter_client::describe(&m)),
                    None => anyhow::bail!("the connection was closed"),
                },
            }
        }
    })
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
