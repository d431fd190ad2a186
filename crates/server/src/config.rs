//! Configuration: built-in defaults, then an optional YAML file, then `NATTER__SECTION__KEY`
//! environment variables. `config.example.yaml` documents every key; keep the two in step.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Deserializer};

/// The whole configuration, passed down by value; nothing reads it from global state.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub heartbeat: HeartbeatConfig,
    pub limits: LimitsConfig,
    pub websocket: WebSocketConfig,
    pub shutdown: ShutdownConfig,
    pub storage: StorageConfig,
    pub groups: GroupsConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Run as one node of a cluster (needs storage.backend: postgres and Redis).
    pub enabled: bool,
    /// Redis for routing and presence, e.g. `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// This node's id; generated at start when empty.
    pub node_id: String,
    /// Prefix of every Redis key and channel (several clusters can share one Redis).
    pub key_prefix: String,
    /// How long a node's presence entries live without a refresh (a dead node vanishes after it).
    #[serde(deserialize_with = "duration")]
    pub presence_ttl: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            redis_url: "redis://127.0.0.1:6379".into(),
            node_id: String::new(),
            key_prefix: "natter".into(),
            presence_ttl: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    /// Most members of one group.
    pub max_members: usize,
    /// Most groups one user may be a member of.
    pub max_groups_per_user: usize,
    /// Whether a member added later can read the messages from before they joined.
    pub new_members_see_history: bool,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            max_members: 20_000,
            max_groups_per_user: 1_000,
            new_members_see_history: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Nothing is stored: live delivery only, `seq` stays 0.
    None,
    /// A file under `storage.path` (the embedded default).
    Sqlite,
    /// `storage.url`; required for a cluster.
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite`, `postgres` or `none`.
    pub backend: StorageBackend,
    /// Directory of the SQLite database (`natter.db` inside it); created if missing.
    pub path: String,
    /// PostgreSQL URL, e.g. `postgres://natter@db:5432/natter`.
    pub url: String,
    /// PostgreSQL connections.
    pub pool_size: u32,
    /// Messages older than this are deleted; 0 keeps them forever.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
    /// Most messages committed in one transaction; the queue in front of the store holds four
    /// times as many before senders wait. 2000 (the most allowed) by default: with many senders
    /// each waiting for a few acks, a smaller queue filled up and throughput halved
    /// (docs/benchmarks.md, 2026-11-27, fifth session).
    pub batch_max: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Sqlite,
            path: "data".into(),
            url: String::new(),
            pool_size: 8,
            retention: Duration::ZERO,
            batch_max: 2000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP/WebSocket listener binds.
    pub listen: SocketAddr,
}

/// Token algorithms the server verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TokenAlgorithm {
    HS256,
    RS256,
    ES256,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 shared secret. Empty (and no public key): development mode, loopback only.
    pub secret: String,
    /// `HS256` (with `secret`), or `RS256` / `ES256` (with `public_key_file`).
    pub algorithm: TokenAlgorithm,
    /// PEM public key verifying RS256 / ES256 tokens.
    pub public_key_file: String,
    /// When set, a token's `iss` must equal it.
    pub issuer: String,
    /// When set, a token's `aud` must contain it.
    pub audience: String,
    /// Clock skew tolerated on `exp` when a token is checked at connect time.
    #[serde(deserialize_with = "duration")]
    pub leeway: Duration,
    /// Browser origins allowed to open WebSockets besides the server's own; `"*"` allows any.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// How often the server pings each connection.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// A connection that sends nothing (no pong, no frame) for this long is closed (4004).
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest WebSocket message (and frame) a client may send, in bytes; larger closes with 1009.
    pub max_message_size: usize,
    /// Messages waiting to be written to one connection; when full, the connection is closed (4003).
    pub outbound_queue: usize,
    /// WebSocket connections this node accepts at once; past it the upgrade gets HTTP 503.
    pub max_connections: usize,
    /// Connections (devices) one user may hold on this node; past it the upgrade gets HTTP 429.
    pub max_connections_per_user: usize,
    /// Time a client has to send its complete HTTP request head (slow-loris guard).
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// Per-connection message rate limit (token bucket).
    pub rate: RateLimitConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Messages per second a connection may send on average; 0 turns the limit off.
    pub per_second: f64,
    /// Messages a connection may send in a burst above the average.
    pub burst: u32,
    /// Refused messages in a row after which the connection is closed with 4005.
    pub close_after: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Bytes read from a socket per read call; also the per-connection read buffer kept while idle.
    pub read_buffer_size: usize,
    /// Outgoing bytes gathered before a write to the socket (flushes write the rest at once).
    pub write_buffer_size: usize,
    /// Outgoing bytes a connection may have buffered before it counts as failed.
    pub max_write_buffer_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long a graceful shutdown waits for connections to close before exiting anyway.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`. The level comes from `RUST_LOG` (default `info`).
    pub format: LogFormat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50000)),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secret: String::new(),
            algorithm: TokenAlgorithm::HS256,
            public_key_file: String::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway: Duration::from_secs(30),
            allowed_origins: Vec::new(),
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_second: 0.0,
            burst: 100,
            close_after: 100,
        }
    }
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(90),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_size: 64 * 1024,
            outbound_queue: 1024,
            max_connections: 1_000_000,
            max_connections_per_user: 32,
            handshake_timeout: Duration::from_secs(10),
            rate: RateLimitConfig::default(),
        }
    }
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            read_buffer_size: 1024,
            write_buffer_size: 8 * 1024,
            max_write_buffer_size: 1024 * 1024,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            timeout: Duration::from_secs(10),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
        }
    }
}

/// A configuration that could not be loaded; the message names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

impl Config {
    /// Defaults, overlaid by `file` (YAML) if given, overlaid by `NATTER__*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Yaml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("NATTER")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let config: Config = builder.build()?.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that parse but make no sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        if self.heartbeat.interval.is_zero() {
            return invalid("heartbeat.interval", "must be greater than zero");
        }
        if self.heartbeat.timeout <= self.heartbeat.interval {
            return invalid(
                "heartbeat.timeout",
                "must be longer than heartbeat.interval, or every idle client is dropped",
            );
        }
        if self.limits.max_message_size < 256 {
            return invalid("limits.max_message_size", "must be at least 256 bytes");
        }
        if self.limits.outbound_queue == 0 {
            return invalid("limits.outbound_queue", "must be at least 1");
        }
        if self.limits.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1");
        }
        if self.limits.max_connections_per_user == 0 {
            return invalid("limits.max_connections_per_user", "must be at least 1");
        }
        if self.limits.handshake_timeout.is_zero() {
            return invalid("limits.handshake_timeout", "must be greater than zero");
        }
        let rate = &self.limits.rate;
        if !(rate.per_second >= 0.0 && rate.per_second.is_finite()) {
            return invalid(
                "limits.rate.per_second",
                "must be 0 (off) or a positive number",
            );
        }
        if rate.per_second > 0.0 && rate.burst == 0 {
            return invalid(
                "limits.rate.burst",
                "must be at least 1 when the rate limit is on",
            );
        }
        if rate.close_after == 0 {
            return invalid("limits.rate.close_after", "must be at least 1");
        }
        match (self.auth.algorithm, self.auth.public_key_file.is_empty()) {
            (TokenAlgorithm::HS256, false) => {
                return invalid(
                    "auth.public_key_file",
                    "is for RS256 / ES256; set auth.algorithm, or use auth.secret for HS256",
                );
            }
            (TokenAlgorithm::RS256 | TokenAlgorithm::ES256, true) => {
                return invalid("auth.public_key_file", "is required for RS256 / ES256");
            }
            _ => {}
        }
        if !self.server.listen.ip().is_loopback() && !self.auth.token_required() {
            return invalid(
                "auth.secret",
                "is required when server.listen is not a loopback address: without it anybody \
                 could connect as any user. Set auth.secret (or NATTER__AUTH__SECRET), or listen on \
                 127.0.0.1 for development",
            );
        }
        match self.storage.backend {
            StorageBackend::Sqlite if self.storage.path.is_empty() => {
                return invalid(
                    "storage.path",
                    "must name a directory for the SQLite database",
                );
            }
            StorageBackend::Postgres if self.storage.url.is_empty() => {
                return invalid("storage.url", "is required with storage.backend: postgres");
            }
            _ => {}
        }
        if !(1..=2000).contains(&self.storage.batch_max) {
            return invalid("storage.batch_max", "must be between 1 and 2000");
        }
        if self.groups.max_members < 2 {
            return invalid("groups.max_members", "must be at least 2");
        }
        if self.groups.max_groups_per_user == 0 {
            return invalid("groups.max_groups_per_user", "must be at least 1");
        }
        if self.cluster.enabled {
            if self.storage.backend != StorageBackend::Postgres {
                return invalid(
                    "cluster.enabled",
                    "needs storage.backend: postgres (every node must share one store; SQLite \
                     is a single node's file)",
                );
            }
            if self.cluster.redis_url.is_empty() {
                return invalid("cluster.redis_url", "is required in cluster mode");
            }
            if self.cluster.presence_ttl < Duration::from_millis(300) {
                return invalid("cluster.presence_ttl", "must be at least 300ms");
            }
        }
        if self.storage.pool_size == 0 {
            return invalid("storage.pool_size", "must be at least 1");
        }
        if self.websocket.read_buffer_size < 128 {
            return invalid("websocket.read_buffer_size", "must be at least 128 bytes");
        }
        if self.websocket.max_write_buffer_size <= self.websocket.write_buffer_size {
            return invalid(
                "websocket.max_write_buffer_size",
                "must be larger than websocket.write_buffer_size",
            );
        }
        Ok(())
    }
}

impl AuthConfig {
    /// Whether connections must present a valid token (otherwise: development mode).
    pub fn token_required(&self) -> bool {
        !self.secret.is_empty() || !self.public_key_file.is_empty()
    }
}

/// Parses `"30s"`, `"500ms"`, `"5m"`, `"2h"`, `"7d"` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 30s, 500ms, 5m, 2h or 7d"))?;
    let seconds = |k: u64| Duration::from_secs(n.saturating_mul(k));
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(seconds(1)),
        "m" => Ok(seconds(60)),
        "h" => Ok(seconds(3600)),
        "d" => Ok(seconds(86400)),
        other => Err(format!(
            "unknown duration unit `{other}` (use ms, s, m, h or d)"
        )),
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5w").is_err());
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }
}
