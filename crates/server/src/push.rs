//! The offline push webhook (`webhooks.push`): when a stored message reaches a user with no
//! device connected anywhere, and who has not muted its conversation, the app's backend is told,
//! so that it can send a push notification to the user's phone.
//!
//! Delivery offers each receiver it found no device of on this node ([`Push::offer`]); the offer
//! goes into a bounded queue without waiting (a full queue drops it, counted): messaging never
//! waits for the webhook. One task takes the queue in batches, leaves out the users connected on
//! another node (cluster presence) and those who muted the conversation, and POSTs the rest as
//! one JSON array, signed, retrying with backoff. In a cluster only the node that committed a
//! message offers it, so each notification is sent once.
//!
//! Signature: `X-Natter-Timestamp` (Unix seconds) and `X-Natter-Signature: v1=<hex>`, the
//! HMAC-SHA256 under `webhooks.push.secret` of `<timestamp>.<body>`; a receiver recomputes it
//! and refuses old timestamps (replays).

use std::{collections::HashSet, sync::Arc, time::Duration};

use hmac::{Hmac, Mac};
use natter_protocol::{Msg, conversation, msg_type};
use sha2::Sha256;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};

use crate::{
    clock::{now_millis, now_secs},
    cluster::Cluster,
    config::PushConfig,
    metrics::Metrics,
    store::{Store, conv::preview},
};

/// One notification: a message that waits for a user with no device connected.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Notification {
    pub receiver: String,
    pub sender: String,
    pub conv_id: String,
    pub server_id: String,
    pub seq: i64,
    pub conv_seq: i64,
    pub msg_type: i32,
    /// The content's first `webhooks.push.preview_bytes` (absent when 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    pub send_time: i64,
}

/// The webhook's queue; cheap to share.
#[derive(Debug)]
pub struct Push {
    queue: mpsc::Sender<Notification>,
    preview_bytes: usize,
    metrics: Arc<Metrics>,
}

impl Push {
    /// Starts the sending task; `None` when `webhooks.push.url` is empty.
    pub fn start(
        config: &PushConfig,
        store: Option<Arc<dyn Store>>,
        metrics: Arc<Metrics>,
    ) -> Option<(Arc<Push>, Sender)> {
        if config.url.is_empty() {
            return None;
        }
        let (queue, waiting) = mpsc::channel(config.queue.max(1));
        let push = Arc::new(Push {
            queue,
            preview_bytes: config.preview_bytes,
            metrics: metrics.clone(),
        });
        let sender = Sender {
            config: config.clone(),
            waiting,
            store,
            metrics,
        };
        Some((push, sender))
    }

    /// Offers `msg` for `receivers`, who had no device connected here. Never waits: a full
    /// queue drops the notification (`natter_push_dropped_total{reason="queue_full"}`).
    pub fn offer<'a>(&self, msg: &Msg, receivers: impl IntoIterator<Item = &'a str>) {
        if msg.seq <= 0 || !wanted(msg) {
            return;
        }
        for receiver in receivers {
            if receiver == msg.send_id {
                continue;
            }
            if self.queue.capacity() == 0 {
                // Full: dropped before anything is built for it.
                self.metrics.push_dropped_full.increment(1);
                continue;
            }
            let notification = Notification {
                receiver: receiver.to_owned(),
                sender: msg.send_id.clone(),
                conv_id: msg.conv_id.clone(),
                server_id: msg.server_id.clone(),
                seq: msg.seq,
                conv_seq: msg.conv_seq,
                msg_type: msg.msg_type,
                preview: (self.preview_bytes > 0).then(|| {
                    let p = preview(&msg.content);
                    let mut end = p.len().min(self.preview_bytes);
                    while !p.is_char_boundary(end) {
                        end -= 1;
                    }
                    p[..end].to_owned()
                }),
                send_time: msg.send_time,
            };
            if self.queue.try_send(notification).is_err() {
                self.metrics.push_dropped_full.increment(1);
            }
        }
    }
}

/// Whether a message is worth a notification: an entry, not a recall or an edit.
fn wanted(msg: &Msg) -> bool {
    conversation::is_entry(msg) && !matches!(msg.msg_type, msg_type::RECALL | msg_type::EDIT)
}

/// The task that sends the queue's notifications.
pub struct Sender {
    config: PushConfig,
    waiting: mpsc::Receiver<Notification>,
    store: Option<Arc<dyn Store>>,
    metrics: Arc<Metrics>,
}

impl Sender {
    /// Runs until the queue's senders are gone.
    pub async fn run(mut self, cluster: Option<Arc<Cluster>>) {
        let mut batch = Vec::with_capacity(self.config.batch_max);
        while self
            .waiting
            .recv_many(&mut batch, self.config.batch_max.max(1))
            .await
            > 0
        {
            let due = self
                .still_due(std::mem::take(&mut batch), cluster.as_deref())
                .await;
            if !due.is_empty() {
                self.send(&due).await;
            }
        }
    }

    /// The notifications whose receiver is connected nowhere (a cluster: on no other node) and
    /// has not muted the conversation.
    async fn still_due(
        &self,
        batch: Vec<Notification>,
        cluster: Option<&Cluster>,
    ) -> Vec<Notification> {
        let mut online: HashSet<String> = HashSet::new();
        if let Some(cluster) = cluster {
            let users: HashSet<&str> = batch.iter().map(|n| n.receiver.as_str()).collect();
            for user in users {
                match cluster.online(user).await {
                    Ok(platforms) if !platforms.is_empty() => {
                        online.insert(user.to_owned());
                    }
                    Ok(_) => {}
                    // Unknown: better a notification too many than a message missed.
                    Err(e) => tracing::warn!(error = %e, "presence lookup for a push failed"),
                }
            }
        }
        let mut due: Vec<Notification> = batch
            .into_iter()
            .filter(|n| !online.contains(&n.receiver))
            .collect();
        if let Some(store) = &self.store {
            let pairs: Vec<(String, String)> = due
                .iter()
                .map(|n| (n.receiver.clone(), n.conv_id.clone()))
                .collect();
            match store.muted(&pairs).await {
                Ok(muted) => {
                    due.retain(|n| !muted.contains(&(n.receiver.clone(), n.conv_id.clone())))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading muted conversations for a push failed")
                }
            }
        }
        due
    }

    /// POSTs a batch, retrying with backoff; a batch that keeps failing is dropped (counted).
    async fn send(&self, batch: &[Notification]) {
        let body = match serde_json::to_string(&serde_json::json!({ "notifications": batch })) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "a push batch did not serialise");
                return;
            }
        };
        let mut backoff = Duration::from_millis(200);
        for attempt in 1..=self.config.attempts.max(1) {
            match tokio::time::timeout(self.config.timeout, post(&self.config, &body)).await {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    self.metrics.push_sent.increment(batch.len() as u64);
                    return;
                }
                Ok(Ok(status)) => {
                    tracing::warn!(status, attempt, "the push webhook refused a batch")
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, attempt, "the push webhook is unreachable")
                }
                Err(_) => tracing::warn!(attempt, "the push webhook did not answer in time"),
            }
            if attempt < self.config.attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
        tracing::error!(
            notifications = batch.len(),
            "push notifications dropped after every attempt"
        );
        self.metrics
            .push_dropped_failed
            .increment(batch.len() as u64);
    }
}

/// The signature headers' values of `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

/// One POST of `body` to `webhooks.push.url` (`http://host[:port]/path`); its status.
async fn post(config: &PushConfig, body: &str) -> std::io::Result<u16> {
    signed_post(&config.url, &config.secret, body)
        .await
        .map(|(status, _)| status)
}

/// Most bytes of a webhook's answer that are read.
const ANSWER_BYTES: usize = 64 * 1024;

/// POSTs `body` to `url` (`http://host[:port]/path`), signed with `secret` (see the module's
/// note); the answer's status and body (at most [`ANSWER_BYTES`]).
pub(crate) async fn signed_post(
    url: &str,
    secret: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("a webhook's url is http://host:port/path"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let timestamp = now_secs();
    let mut stream = TcpStream::connect(address).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\
         X-Natter-Timestamp: {timestamp}\r\nX-Natter-Signature: {}\r\n\
         X-Natter-Sent-At: {}\r\n\r\n{body}",
        body.len(),
        signature(secret, timestamp, body),
        now_millis(),
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(ANSWER_BYTES as u64)
        .read_to_end(&mut answer)
        .await?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("not an HTTP response"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
