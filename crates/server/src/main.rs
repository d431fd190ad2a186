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
