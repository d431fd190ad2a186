//! Loading the configuration (defaults, YAML, environment) and checking it: every error
//! names its key.

use std::{path::Path, time::Duration};

use super::*;
use serde::{Deserialize, Deserializer};

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
        if self.limits.inflight_messages == 0 {
            return invalid("limits.inflight_messages", "must be at least 1");
        }
        if self.limits.inflight_bytes < self.limits.max_message_size {
            return invalid(
                "limits.inflight_bytes",
                "must be at least limits.max_message_size, or a largest message never fits",
            );
        }
        if self.storage.batch_bytes < self.limits.max_message_size {
            return invalid(
                "storage.batch_bytes",
                "must be at least limits.max_message_size",
            );
        }
        if self.limits.outbound_queue == 0 {
            return invalid("limits.outbound_queue", "must be at least 1");
        }
        if self.limits.outbound_bytes < self.limits.max_message_size {
            return invalid(
                "limits.outbound_bytes",
                "must be at least limits.max_message_size",
            );
        }
        if self.limits.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1");
        }
        if self.limits.max_connections_per_user == 0 {
            return invalid("limits.max_connections_per_user", "must be at least 1");
        }
        for (key, value) in [
            ("limits.handshake_timeout", self.limits.handshake_timeout),
            ("limits.http.body_timeout", self.limits.http.body_timeout),
            ("limits.http.write_timeout", self.limits.http.write_timeout),
        ] {
            if value.is_zero() {
                return invalid(key, "must be greater than zero");
            }
        }
        let rate = &self.limits.rate;
        let http = &self.limits.http;
        // A token bucket: a rate of 0 (off) or more, and a burst of at least 1 when it is on.
        for (rate_key, per_second, burst_key, burst) in [
            (
                "limits.rate.per_second",
                rate.per_second,
                "limits.rate.burst",
                rate.burst,
            ),
            (
                "limits.http.per_second",
                http.per_second,
                "limits.http.burst",
                http.burst,
            ),
        ] {
            if !(per_second >= 0.0 && per_second.is_finite()) {
                return invalid(rate_key, "must be 0 (off) or a positive number");
            }
            if per_second > 0.0 && burst == 0 {
                return invalid(burst_key, "must be at least 1 when the limit is on");
            }
        }
        if rate.close_after == 0 {
            return invalid("limits.rate.close_after", "must be at least 1");
        }
        if rate.bytes_per_second > 0 && rate.burst_bytes < self.limits.max_message_size {
            return invalid(
                "limits.rate.burst_bytes",
                "must be at least limits.max_message_size when limits.rate.bytes_per_second is on",
            );
        }
        if self.limits.reads_per_user == 0 {
            return invalid("limits.reads_per_user", "must be at least 1");
        }
        if http.max_connections == 0 {
            return invalid("limits.http.max_connections", "must be at least 1");
        }
        for (key, value) in [
            ("limits.http.body_timeout", http.body_timeout),
            ("limits.http.write_timeout", http.write_timeout),
            ("limits.handshake_timeout", self.limits.handshake_timeout),
            ("shutdown.timeout", self.shutdown.timeout),
            ("auth.leeway", self.auth.leeway),
            ("heartbeat.timeout", self.heartbeat.timeout),
            ("webhooks.push.timeout", self.webhooks.push.timeout),
            (
                "webhooks.before_send.timeout",
                self.webhooks.before_send.timeout,
            ),
        ] {
            if value > Duration::from_secs(24 * 3600) {
                return invalid(key, "must be at most 24h");
            }
        }
        for (key, value) in [
            ("limits.max_message_size", self.limits.max_message_size),
            ("limits.inflight_bytes", self.limits.inflight_bytes),
            ("limits.outbound_bytes", self.limits.outbound_bytes),
            ("storage.batch_bytes", self.storage.batch_bytes),
            (
                "websocket.max_write_buffer_size",
                self.websocket.max_write_buffer_size,
            ),
        ] {
            if value > 1 << 30 {
                return invalid(key, "must be at most 1 GiB");
            }
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
        let push = &self.webhooks.push;
        if !push.url.is_empty() {
            if !push.url.starts_with("http://") {
                return invalid(
                    "webhooks.push.url",
                    "is http://host:port/path (your backend, on the private network)",
                );
            }
            if push.secret.len() < MIN_SECRET_LEN {
                return invalid(
                    "webhooks.push.secret",
                    "must be at least 32 bytes: the receiver checks the signature with it",
                );
            }
            if push.queue == 0 || push.batch_max == 0 || push.attempts == 0 {
                return invalid(
                    "webhooks.push",
                    "queue, batch_max and attempts must be at least 1",
                );
            }
        }
        let hook = &self.webhooks.before_send;
        if !hook.url.is_empty() {
            if !hook.url.starts_with("http://") {
                return invalid(
                    "webhooks.before_send.url",
                    "is http://host:port/path (your backend, on the private network)",
                );
            }
            if hook.secret.len() < MIN_SECRET_LEN {
                return invalid(
                    "webhooks.before_send.secret",
                    "must be at least 32 bytes: the receiver checks the signature with it",
                );
            }
        }
        let key = self.service.key.len();
        if key > 0 && key < MIN_SECRET_LEN {
            return invalid(
                "service.key",
                "must be at least 32 bytes (e.g. `openssl rand -hex 32`): it lets its holder \
                 send as anybody",
            );
        }
        let secret = self.auth.secret.len();
        if secret > 0 && secret < MIN_SECRET_LEN {
            return invalid(
                "auth.secret",
                "must be at least 32 bytes (e.g. `openssl rand -hex 32`): a shorter HS256 secret \
                 can be guessed",
            );
        }
        if self.storage.retention > Duration::from_secs(100 * 365 * 24 * 3600) {
            return invalid(
                "storage.retention",
                "must be 0 (keep everything) or at most 100 years",
            );
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
        if self.groups.max_invites_per_user == 0 {
            return invalid("groups.max_invites_per_user", "must be at least 1");
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

pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
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
