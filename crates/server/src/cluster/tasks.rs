//! The cluster's background tasks: publishing, the one pub/sub subscription, dispatching what
//! arrives, and presence refresh.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures_util::StreamExt;
use natter_protocol::CloseCode;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::*;
use crate::{
    groups::Groups,
    hub::Hub,
    outbox::{Cursor, Frame},
};

/// Sends queued publishes, all that are waiting in one pipeline. A failed batch is dropped:
/// live push is at most once; storage and sync cover the rest.
pub(super) async fn publish_loop(
    mut conn: ConnectionManager,
    mut queue: mpsc::Receiver<(String, String)>,
    queued: Arc<QueuedBytes>,
) {
    let mut batch = Vec::with_capacity(256);
    while queue.recv_many(&mut batch, 256).await > 0 {
        let mut pipe = redis::pipe();
        let mut bytes = 0;
        for (channel, payload) in batch.drain(..) {
            bytes += payload.len();
            pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
        }
        // Out of the queue: the pipeline holds them until Redis has them.
        queued.sub(bytes);
        let result: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "cluster publish failed; live pushes dropped");
        }
    }
}

/// Owns the node's one pub/sub connection: applies (un)subscriptions, dispatches what arrives,
/// and reconnects and resubscribes by itself when Redis goes away.
pub(super) async fn subscribe_loop(
    client: redis::Client,
    cluster: Arc<Cluster>,
    auth: Arc<Auth>,
    hub: Arc<Hub>,
    groups: Arc<Groups>,
    mut commands: mpsc::Receiver<Subscription>,
    gauge: metrics::Gauge,
) {
    let mut channels: HashSet<String> = HashSet::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        // What to listen to is whatever this node holds now: rebuilt on every (re)connection.
        channels.clear();
        channels.insert(cluster.groups_channel());
        hub.for_each_device(|user, _| {
            channels.insert(cluster.user_channel(user));
        });
        let pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: Redis pub/sub unavailable, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut ok = true;
        for channel in &channels {
            if sink.subscribe(channel).await.is_err() {
                ok = false;
                break;
            }
        }
        if !ok {
            continue;
        }
        gauge.set(channels.len() as f64);
        backoff = Duration::from_millis(100);
        tracing::info!(channels = channels.len(), "cluster: subscribed");
        loop {
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    let result = match command {
                        Subscription::Subscribe(c) => {
                            let r = sink.subscribe(&c).await;
                            channels.insert(c);
                            r
                        }
                        Subscription::Unsubscribe(c) => {
                            let r = sink.unsubscribe(&c).await;
                            channels.remove(&c);
                            r
                        }
                    };
                    if result.is_err() {
                        break;
                    }
                    gauge.set(channels.len() as f64);
                }
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    match serde_json::from_str::<Envelope>(&payload) {
                        Ok(envelope) => dispatch(&cluster, &auth, &hub, &groups, envelope).await,
                        Err(e) => tracing::warn!(error = %e, "cluster: unreadable message"),
                    }
                }
            }
        }
        gauge.set(0.0);
        tracing::warn!("cluster: Redis pub/sub connection lost, reconnecting");
    }
}

async fn dispatch(cluster: &Cluster, auth: &Auth, hub: &Hub, groups: &Groups, envelope: Envelope) {
    if envelope.node() == cluster.node {
        return;
    }
    match envelope {
        Envelope::Deliver {
            user,
            frame,
            inbox,
            sent,
            ..
        } => {
            let cursor = if inbox > 0 {
                Cursor::Inbox(inbox)
            } else if sent > 0 {
                Cursor::Sent(sent)
            } else {
                Cursor::None
            };
            hub.send_to_user(&user, &Frame::from(frame), cursor, None);
        }
        Envelope::Group { group, frame, .. } => {
            let members = match groups.members(&group).await {
                Ok(Some(m)) => m,
                _ => return,
            };
            let frame = Frame::from(frame);
            for user in members.roles.keys() {
                hub.send_to_user(user, &frame, Cursor::None, None);
            }
        }
        Envelope::Kick {
            user, platform, at, ..
        } if platform.is_empty() => hub.close_user(&user, CloseCode::Disconnected, at),
        Envelope::Kick {
            user, platform, at, ..
        } => hub.close_platform(&user, &platform, CloseCode::Replaced, at),
        Envelope::Members { group, .. } => groups.forget(&group),
        Envelope::Revoked { revocation, .. } => {
            crate::revoke::apply(auth, hub, &revocation);
        }
    }
}

/// Keeps this node's presence entries alive.
pub(super) async fn presence_loop(cluster: Arc<Cluster>, hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(cluster.ttl / 3);
    let mut conn = cluster.conn.clone();
    loop {
        tick.tick().await;
        let until = expiry(cluster.ttl);
        let mut pipe = redis::pipe();
        let mut n = 0;
        hub.for_each_device(|user, platform| {
            let key = cluster.presence_key(user);
            pipe.cmd("ZADD")
                .arg(&key)
                .arg(until)
                .arg(format!("{}|{platform}", cluster.node))
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(cluster.ttl.as_millis() as u64 * 2)
                .ignore();
            n += 1;
        });
        if n > 0 {
            let result: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "presence refresh failed");
            }
        }
    }
}
