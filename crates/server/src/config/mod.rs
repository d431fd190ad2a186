//! Configuration: built-in defaults, then an optional YAML file, then `NATTER__SECTION__KEY`
//! environment variables. `config.example.yaml` documents every key; keep the two in step.

mod load;

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;

use self::load::duration;
pub use self::load::{ConfigError, parse_duration};

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
    pub messages: MessagesConfig,
    pub service: ServiceConfig,
    pub webhooks: WebhooksConfig,
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
    /// Most groups one user may choose to be in: groups they created, and (with `invite:
    /// accept`) groups whose invitation they accepted. Groups others added them to (with
    /// `invite: direct`) do not count, so nobody can fill another user's limit.
    pub max_groups_per_user: usize,
    /// Whether a member added later can read the messages from before they joined.
    pub new_members_see_history: bool,
    /// How others become members: `direct` (an owner or admin adds them) or `accept` (they are
    /// invited, and become members by accepting).
    pub invite: InviteRule,
    /// Pending invitations one user keeps (`invite: accept`); the oldest beyond it go.
    pub max_invites_per_user: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagesConfig {
    /// How long after sending a sender may recall (for everyone) or edit a message; 0: never.
    #[serde(deserialize_with = "duration")]
    pub edit_window: Duration,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            edit_window: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// The server API's key, for the app's backend (sent as `X-Api-Key`; at least 32 bytes);
    /// empty: the server API is off.
    pub key: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    pub push: PushConfig,
    pub before_send: BeforeSendConfig,
}

/// The before-send hook (src/hook.rs): asked about each message before it is stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BeforeSendConfig {
    /// Where each message is POSTed for a decision (`http://host:port/path`); empty: off.
    pub url: String,
    /// The HMAC-SHA256 key of the signature (at least 32 bytes when `url` is set).
    pub secret: String,
    /// How long the answer may take.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// What happens to a message when the hook fails or is late: `allow` or `refuse`.
    pub on_failure: HookFailure,
}

/// `webhooks.before_send.on_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookFailure {
    Allow,
    Refuse,
}

impl Default for BeforeSendConfig {
    fn default() -> Self {
        BeforeSendConfig {
            url: String::new(),
            secret: String::new(),
            timeout: Duration::from_millis(500),
            on_failure: HookFailure::Allow,
        }
    }
}

/// The offline push webhook (src/push.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Where notifications are POSTed (`http://host:port/path`, your backend); empty: off.
    pub url: String,
    /// The HMAC-SHA256 key of the signature (at least 32 bytes when `url` is set).
    pub secret: String,
    /// Bytes of a message's content in its notification (0: none; at most 256).
    pub preview_bytes: usize,
    /// Notifications waiting to be sent; beyond it they are dropped (and counted).
    pub queue: usize,
    /// Most notifications in one POST.
    pub batch_max: usize,
    /// Tries of one POST before its notifications are dropped (and counted).
    pub attempts: u32,
    /// How long one POST may take.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            url: String::new(),
            secret: String::new(),
            preview_bytes: 100,
            queue: 10_000,
            batch_max: 100,
            attempts: 5,
            timeout: Duration::from_secs(5),
        }
    }
}

/// The consent rule of `groups.invite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InviteRule {
    /// An owner or admin adds users directly (an app whose backend vets who may add whom).
    Direct,
    /// Users are invited and join by accepting (`POST /api/v1/invites/{group_id}/accept`).
    Accept,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            max_members: 20_000,
            max_groups_per_user: 1_000,
            new_members_see_history: false,
            invite: InviteRule::Direct,
            max_invites_per_user: 100,
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
    /// times as many before senders wait. The most allowed by default, so that many senders
    /// each waiting for a few acks never find the queue full.
    pub batch_max: usize,
    /// Most bytes of messages committed in one transaction (at least one message).
    pub batch_bytes: usize,
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
            batch_bytes: 1024 * 1024,
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

/// The shortest HS256 secret accepted: 32 bytes (256 bits, the size of the HMAC's output;
/// RFC 7518 section 3.2 requires at least that).
pub const MIN_SECRET_LEN: usize = 32;

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
    /// Browser origins allowed to open WebSockets and to call the HTTP API (CORS) besides the
    /// server's own; `"*"` allows any.
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
    /// Bytes of messages waiting to be written to one connection, likewise.
    pub outbound_bytes: usize,
    /// Messages one connection may have in flight (sent, not yet acked); past it the server
    /// stops reading that connection until acks come back.
    pub inflight_messages: usize,
    /// Bytes of messages one connection may have in flight, likewise.
    pub inflight_bytes: usize,
    /// WebSocket connections this node accepts at once; past it the upgrade gets HTTP 503.
    pub max_connections: usize,
    /// Connections (devices) one user may hold on this node; past it the upgrade gets HTTP 429.
    pub max_connections_per_user: usize,
    /// Time a client has to send its complete HTTP request head (slow-loris guard).
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// Per-connection rate limits (token buckets of messages and of bytes).
    pub rate: RateLimitConfig,
    /// Limits of the HTTP API and of HTTP connections.
    pub http: HttpLimitsConfig,
    /// History reads one user may have running at once on this node (HTTP history pages and
    /// replays): more pages get HTTP 429, more replays wait for their turn.
    pub reads_per_user: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimitsConfig {
    /// API requests per second one user may make on this node on average; 0 turns it off.
    pub per_second: f64,
    /// API requests one user may make in a burst above the average.
    pub burst: u32,
    /// HTTP connections this node serves at once before their upgrade to WebSocket (or for
    /// plain API calls); past it, new connections wait in the listen backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's whole body.
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
    /// Time one write of a response may wait for a client that does not read.
    #[serde(deserialize_with = "duration")]
    pub write_timeout: Duration,
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
    /// Bytes per second a connection may send on average; past it the server reads nothing
    /// more from it until the average is back (it is slowed, not refused). 0 turns it off.
    pub bytes_per_second: usize,
    /// Bytes a connection may send in a burst above the average.
    pub burst_bytes: usize,
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
            per_second: 200.0,
            burst: 500,
            close_after: 100,
            bytes_per_second: 1024 * 1024,
            burst_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Default for HttpLimitsConfig {
    fn default() -> Self {
        HttpLimitsConfig {
            per_second: 20.0,
            burst: 100,
            max_connections: 10_000,
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
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
            outbound_bytes: 4 * 1024 * 1024,
            inflight_messages: 256,
            inflight_bytes: 1024 * 1024,
            max_connections: 1_000_000,
            max_connections_per_user: 32,
            handshake_timeout: Duration::from_secs(10),
            rate: RateLimitConfig::default(),
            http: HttpLimitsConfig::default(),
            reads_per_user: 4,
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
