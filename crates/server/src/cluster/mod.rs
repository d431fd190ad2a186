//! Cluster mode: several nodes behind a load balancer, on one PostgreSQL (the source of truth)
//! and one Redis (routing and presence).
//!
//! - **Routing**: per-user channels. A node subscribes to `{prefix}:user:{id}` while that user
//!   has a device connected to it, on one pub/sub connection for the whole node. Delivering to a
//!   user means queueing locally and publishing the one frame once on the user's channel; Redis
//!   hands it only to the nodes holding that user's devices. A group message is published once
//!   on `{prefix}:groups`; every node fans it out to its own members' devices (one message per
//!   node, not per member).
//! - **Presence**: a sorted set `{prefix}:presence:{user}` of `node|platform`, scored by expiry
//!   time; each node refreshes its entries every `presence_ttl / 3`. A dead node's entries
//!   expire by themselves.
//! - **Relogin**: a new connection publishes a kick on its user's channel; the node holding the
//!   same user and platform closes that connection with 4001.
//! - **Revocation**: a revoked token is published on `{prefix}:groups` (every node listens);
//!   each node adds it to its list and closes what it covers (4002). The store has the list,
//!   reloaded every 30 s, so a node that missed the message catches up.
//! - **Guarantee**: live push across nodes is at most once (a publish while Redis is away is
//!   dropped). Nothing acknowledged is lost: every message is committed to PostgreSQL before its
//!   ack, and a device gets whatever it missed by syncing from its last `seq`.

mod tasks;

use std::{sync::Arc, time::Duration};

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use self::tasks::{presence_loop, publish_loop, subscribe_loop};
use crate::{
    auth::{Auth, Revocation},
    config::ClusterConfig,
    groups::Groups,
    hub::Hub,
    outbox::{Cursor, Frame},
};

/// What travels between nodes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Envelope {
    /// Queue `frame` to `user`'s devices.
    Deliver {
        node: String,
        user: String,
        frame: String,
        #[serde(default)]
        inbox: i64,
        #[serde(default)]
        sent: i64,
    },
    /// Queue `frame` to the local devices of `group`'s members.
    Group {
        node: String,
        group: String,
        frame: String,
    },
    /// `user` connected on `platform` elsewhere at `at` (µs since the Unix epoch; 0 from an
    /// older node): close it here (4001) if it is older. With no platform: the server API
    /// disconnected the user at `at`: close all of them (4006).
    Kick {
        node: String,
        user: String,
        platform: String,
        #[serde(default)]
        at: i64,
    },
    /// `group`'s membership changed: drop it from the cache.
    Members { node: String, group: String },
    /// Tokens were revoked: add it to the list, close the connections it covers (4002).
    Revoked {
        node: String,
        revocation: Revocation,
    },
}

impl Envelope {
    fn node(&self) -> &str {
        match self {
            Envelope::Deliver { node, .. }
            | Envelope::Group { node, .. }
            | Envelope::Kick { node, .. }
            | Envelope::Members { node, .. }
            | Envelope::Revoked { node, .. } => node,
        }
    }
}

enum Subscription {
    Subscribe(String),
    Unsubscribe(String),
}

/// This node's link to the cluster.
pub struct Cluster {
    node: String,
    prefix: String,
    ttl: Duration,
    conn: ConnectionManager,
    publish: mpsc::Sender<(String, String)>,
    /// Bytes of the payloads in `publish`.
    queued: Arc<QueuedBytes>,
    subscriptions: mpsc::Sender<Subscription>,
}

/// Bytes waiting in a queue, within a bound: what one queue may hold whatever the size of its
/// items.
#[derive(Debug, Default)]
pub(crate) struct QueuedBytes(std::sync::atomic::AtomicUsize);

impl QueuedBytes {
    /// Counts `n` more bytes in, unless that would pass `max`.
    pub(crate) fn try_add(&self, n: usize, max: usize) -> bool {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + n <= max).then_some(q + n)
            })
            .is_ok()
    }

    /// Counts `n` bytes out.
    pub(crate) fn sub(&self, n: usize) {
        self.0.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).finish()
    }
}

/// Longest a session waits for a presence update on Redis.
const REDIS_WAIT: Duration = Duration::from_secs(1);

/// Publishes waiting to be sent, and their bytes; beyond either, live pushes are dropped
/// (storage has them).
const PUBLISH_QUEUE: usize = 65_536;
const PUBLISH_BYTES: usize = 64 * 1024 * 1024;

impl Cluster {
    /// Connects to Redis and starts the publisher, the subscriber and the presence refresher.
    pub async fn start(
        config: &ClusterConfig,
        auth: Arc<Auth>,
        hub: Arc<Hub>,
        groups: Arc<Groups>,
        channels: metrics::Gauge,
    ) -> Result<Arc<Cluster>, redis::RedisError> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        let conn = client.get_connection_manager().await?;
        let (publish, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let (subscriptions, subscriptions_rx) = mpsc::channel(PUBLISH_QUEUE);
        let queued = Arc::new(QueuedBytes::default());
        let cluster = Arc::new(Cluster {
            node: config.node_id.clone(),
            prefix: config.key_prefix.clone(),
            ttl: config.presence_ttl,
            conn: conn.clone(),
            publish,
            queued: queued.clone(),
            subscriptions,
        });
        tokio::spawn(publish_loop(conn, publish_rx, queued));
        tokio::spawn(subscribe_loop(
            client,
            cluster.clone(),
            auth,
            hub.clone(),
            groups,
            subscriptions_rx,
            channels,
        ));
        tokio::spawn(presence_loop(cluster.clone(), hub));
        tracing::info!(node = %cluster.node, "cluster mode: routing through Redis");
        Ok(cluster)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn user_channel(&self, user: &str) -> String {
        format!("{}:user:{user}", self.prefix)
    }

    fn groups_channel(&self) -> String {
        format!("{}:groups", self.prefix)
    }

    fn presence_key(&self, user: &str) -> String {
        format!("{}:presence:{user}", self.prefix)
    }

    fn send(&self, channel: String, envelope: &Envelope) {
        let payload = serde_json::to_string(envelope).unwrap_or_default();
        let n = payload.len();
        if !self.queued.try_add(n, PUBLISH_BYTES) {
            tracing::warn!("cluster publish queue full: a live push was dropped (storage has it)");
            return;
        }
        if self.publish.try_send((channel, payload)).is_err() {
            self.queued.sub(n);
            tracing::warn!("cluster publish queue full: a live push was dropped (storage has it)");
        }
    }

    /// Publishes a frame for `user`'s devices on other nodes.
    pub fn deliver(&self, user: &str, frame: &Frame, cursor: Cursor) {
        let (inbox, sent) = match cursor {
            Cursor::Inbox(s) => (s, 0),
            Cursor::Sent(s) => (0, s),
            Cursor::None => (0, 0),
        };
        let envelope = Envelope::Deliver {
            node: self.node.clone(),
            user: user.to_owned(),
            frame: frame.as_str().to_owned(),
            inbox,
            sent,
        };
        self.send(self.user_channel(user), &envelope);
    }

    /// Publishes a group frame once for every other node.
    pub fn deliver_group(&self, group: &str, frame: &Frame) {
        let envelope = Envelope::Group {
            node: self.node.clone(),
            group: group.to_owned(),
            frame: frame.as_str().to_owned(),
        };
        self.send(self.groups_channel(), &envelope);
    }

    /// Tells the other nodes of a revocation.
    pub fn revoked(&self, revocation: &Revocation) {
        let envelope = Envelope::Revoked {
            node: self.node.clone(),
            revocation: revocation.clone(),
        };
        self.send(self.groups_channel(), &envelope);
    }

    /// Tells the other nodes that `group`'s members changed.
    pub fn members_changed(&self, group: &str) {
        let envelope = Envelope::Members {
            node: self.node.clone(),
            group: group.to_owned(),
        };
        self.send(self.groups_channel(), &envelope);
    }

    /// Queues a (un)subscription for the subscriber task without waiting. If the queue is full
    /// (Redis has been away for long), the subscriber rebuilds every subscription from the hub
    /// when it reconnects anyway.
    fn subscription(&self, s: Subscription) {
        if self.subscriptions.try_send(s).is_err() {
            tracing::warn!("cluster subscription queue full; resubscribing from the hub later");
        }
    }

    /// The server API disconnected `user` at `at` (µs): its connections on the other nodes
    /// close too.
    pub fn disconnect(&self, user: &str, at: i64) {
        let kick = Envelope::Kick {
            node: self.node.clone(),
            user: user.to_owned(),
            platform: String::new(),
            at,
        };
        self.send(self.user_channel(user), &kick);
    }

    /// A device connected here at `at` (µs): take the user's channel, kick the same platform
    /// elsewhere (connections older than it), and appear in presence.
    pub async fn joined(&self, user: &str, platform: &str, at: i64) {
        self.subscription(Subscription::Subscribe(self.user_channel(user)));
        let kick = Envelope::Kick {
            node: self.node.clone(),
            user: user.to_owned(),
            platform: platform.to_owned(),
            at,
        };
        self.send(self.user_channel(user), &kick);
        let mut conn = self.conn.clone();
        let member = format!("{}|{platform}", self.node);
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(self.presence_key(user))
            .arg(expiry(self.ttl))
            .arg(&member)
            .ignore()
            .cmd("PEXPIRE")
            .arg(self.presence_key(user))
            .arg(self.ttl.as_millis() as u64 * 2)
            .ignore();
        // A session never waits long on Redis: the presence refresher catches up later.
        match tokio::time::timeout(REDIS_WAIT, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "presence update failed"),
            Err(_) => tracing::warn!("presence update timed out"),
        }
    }

    /// A device left: drop it from presence; give up the channel if the user has no device here.
    pub async fn left(&self, user: &str, platform: &str, none_left: bool) {
        if none_left {
            self.subscription(Subscription::Unsubscribe(self.user_channel(user)));
        }
        let mut conn = self.conn.clone();
        let member = format!("{}|{platform}", self.node);
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(self.presence_key(user)).arg(member);
        if !matches!(
            tokio::time::timeout(REDIS_WAIT, zrem.query_async::<()>(&mut conn)).await,
            Ok(Ok(()))
        ) {
            // The entry expires by itself within presence_ttl.
            tracing::debug!("presence removal failed");
        }
    }

    /// Which of `users` have a device connected on any node: one round trip for them all.
    pub async fn online_of(&self, users: &[&str]) -> redis::RedisResult<Vec<bool>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let now = now_ms();
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("ZCOUNT")
                .arg(self.presence_key(user))
                .arg(now)
                .arg("+inf");
        }
        let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(counts.into_iter().map(|n| n > 0).collect())
    }

    /// The platforms on which `user` is online anywhere in the cluster.
    pub async fn online(&self, user: &str) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.conn.clone();
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.presence_key(user))
            .arg(now_ms())
            .arg("+inf")
            .query_async(&mut conn)
            .await?;
        let mut platforms: Vec<String> = members
            .into_iter()
            .filter_map(|m| m.split_once('|').map(|(_, p)| p.to_owned()))
            .collect();
        platforms.sort();
        platforms.dedup();
        Ok(platforms)
    }
}

fn now_ms() -> u64 {
    crate::clock::now_millis() as u64
}

fn expiry(ttl: Duration) -> u64 {
    now_ms() + ttl.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::QueuedBytes;

    #[test]
    fn queued_bytes_stay_within_their_bound() {
        let q = QueuedBytes::default();
        assert!(q.try_add(60, 100));
        assert!(!q.try_add(50, 100), "past the bound");
        assert!(q.try_add(40, 100));
        q.sub(60);
        assert!(q.try_add(60, 100));
    }
}
