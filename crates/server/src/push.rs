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
//! Signed and sent by [`crate::webhook`] (`webhooks.push.secret`), over kept-open connections.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use natter_protocol::{Msg, conversation, msg_type};
use tokio::sync::mpsc;

use crate::{
    clock::now_millis,
    cluster::Cluster,
    config::PushConfig,
    metrics::Metrics,
    store::{
        Store,
        conv::{PREVIEW_BYTES, prefix},
    },
    webhook::Webhook,
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
    /// The content's first `webhooks.push.preview_bytes`, at most [`PREVIEW_BYTES`] (absent
    /// when 0). Every field is short (ids of at most 128 bytes): the queue, bounded in
    /// notifications, is bounded in bytes too (10,000 take about 10 MB at most).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    pub send_time: i64,
}

/// How long what a user muted is trusted before it is read again. A mute made on this node is
/// seen at once ([`Push::muted_changed`]); one made on another node of a cluster within this.
pub const MUTED_TTL: Duration = Duration::from_secs(5);
/// Users whose muted conversations are held; beyond it the old ones are forgotten.
const MUTED_USERS: usize = 100_000;

/// What the receivers muted, read from the store at most every [`MUTED_TTL`] per user.
#[derive(Debug, Default)]
struct MutedCache(HashMap<String, (Instant, HashSet<String>)>);

/// The webhook's queue; cheap to share.
#[derive(Debug)]
pub struct Push {
    queue: mpsc::Sender<Notification>,
    preview_bytes: usize,
    metrics: Arc<Metrics>,
    muted: Arc<Mutex<MutedCache>>,
    /// Offers dropped at the full queue since the last warning, and when that was (ms).
    dropped: AtomicU64,
    warned_at: AtomicI64,
}

/// Least time between two warnings of a full queue.
const WARN_EVERY_MS: i64 = 10_000;

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
        let muted = Arc::new(Mutex::new(MutedCache::default()));
        let push = Arc::new(Push {
            queue,
            preview_bytes: config.preview_bytes,
            metrics: metrics.clone(),
            muted: muted.clone(),
            dropped: AtomicU64::new(0),
            warned_at: AtomicI64::new(0),
        });
        let sender = Sender {
            config: config.clone(),
            webhook: Webhook::new(&config.url, &config.secret),
            muted,
            waiting,
            store,
            metrics,
        };
        Some((push, sender))
    }

    /// Counts an offer dropped at the full queue, and says so in the log at most every 10 s.
    fn dropped_full(&self) {
        self.metrics.push_dropped_full.increment(1);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let now = now_millis();
        let last = self.warned_at.load(Ordering::Relaxed);
        if now - last >= WARN_EVERY_MS
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let n = self.dropped.swap(0, Ordering::Relaxed);
            tracing::warn!(
                dropped = n,
                "push queue full (webhooks.push.queue): notifications dropped"
            );
        }
    }

    /// `user` muted or unmuted a conversation: read it again before the next notification.
    pub fn muted_changed(&self, user: &str) {
        self.muted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .remove(user);
    }

    /// Offers `msg` for `receivers`, who had no device connected here. Never waits: a full
    /// queue drops the notification (`natter_push_dropped_total{reason="queue_full"}`).
    pub fn offer<'a>(&self, msg: &Msg, receivers: impl IntoIterator<Item = &'a str>) {
        if msg.seq <= 0 || !wanted(msg) {
            return;
        }
        // Made once for every receiver, and only if one of them gets a place in the queue.
        let mut preview = None;
        for receiver in receivers {
            if receiver == msg.send_id {
                continue;
            }
            if self.queue.capacity() == 0 {
                // Full: dropped before anything is built for it.
                self.dropped_full();
                continue;
            }
            let preview = preview
                .get_or_insert_with(|| {
                    (self.preview_bytes > 0)
                        .then(|| prefix(&msg.content, self.preview_bytes.min(PREVIEW_BYTES)))
                })
                .map(str::to_owned);
            let notification = Notification {
                receiver: receiver.to_owned(),
                sender: msg.send_id.clone(),
                conv_id: msg.conv_id.clone(),
                server_id: msg.server_id.clone(),
                seq: msg.seq,
                conv_seq: msg.conv_seq,
                msg_type: msg.msg_type,
                preview,
                send_time: msg.send_time,
            };
            if self.queue.try_send(notification).is_err() {
                self.dropped_full();
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
    webhook: Webhook,
    muted: Arc<Mutex<MutedCache>>,
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
            let users: Vec<&str> = batch
                .iter()
                .map(|n| n.receiver.as_str())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            match cluster.online_of(&users).await {
                Ok(flags) => online.extend(
                    users
                        .iter()
                        .zip(flags)
                        .filter(|(_, on)| *on)
                        .map(|(u, _)| u.to_string()),
                ),
                // Unknown: better a notification too many than a message missed.
                Err(e) => tracing::warn!(error = %e, "presence lookup for a push failed"),
            }
        }
        let mut due: Vec<Notification> = batch
            .into_iter()
            .filter(|n| !online.contains(&n.receiver))
            .collect();
        if let Some(store) = &self.store {
            self.read_muted(store.as_ref(), &due).await;
            let cache = self.muted.lock().unwrap_or_else(|e| e.into_inner());
            due.retain(|n| {
                !cache
                    .0
                    .get(&n.receiver)
                    .is_some_and(|(_, convs)| convs.contains(&n.conv_id))
            });
        }
        due
    }

    /// Reads what the receivers of `due` muted, for those not read within [`MUTED_TTL`]: one
    /// query for them all, none when every one is fresh.
    async fn read_muted(&self, store: &dyn Store, due: &[Notification]) {
        let now = Instant::now();
        let stale: Vec<String> = {
            let cache = self.muted.lock().unwrap_or_else(|e| e.into_inner());
            let users: HashSet<&str> = due.iter().map(|n| n.receiver.as_str()).collect();
            users
                .into_iter()
                .filter(|u| {
                    cache
                        .0
                        .get(*u)
                        .is_none_or(|(at, _)| now.duration_since(*at) > MUTED_TTL)
                })
                .map(str::to_owned)
                .collect()
        };
        if stale.is_empty() {
            return;
        }
        match store.muted_of(&stale).await {
            Ok(rows) => {
                let mut cache = self.muted.lock().unwrap_or_else(|e| e.into_inner());
                if cache.0.len() > MUTED_USERS {
                    cache
                        .0
                        .retain(|_, (at, _)| now.duration_since(*at) <= MUTED_TTL);
                }
                for user in stale {
                    cache.0.insert(user, (now, HashSet::new()));
                }
                for (user, conv) in rows {
                    if let Some((_, convs)) = cache.0.get_mut(&user) {
                        convs.insert(conv);
                    }
                }
            }
            // Unknown: better a notification too many than one missed.
            Err(e) => tracing::warn!(error = %e, "reading muted conversations for a push failed"),
        }
    }

    /// POSTs a batch, retrying with backoff; a batch that keeps failing is dropped (counted).
    async fn send(&self, batch: &[Notification]) {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            notifications: &'a [Notification],
        }
        let body = match serde_json::to_string(&Body {
            notifications: batch,
        }) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "a push batch did not serialise");
                return;
            }
        };
        let mut backoff = Duration::from_millis(200);
        for attempt in 1..=self.config.attempts.max(1) {
            let post = self.webhook.post(&body);
            match tokio::time::timeout(self.config.timeout, post).await {
                Ok(Ok((status, _))) if (200..300).contains(&status) => {
                    self.metrics.push_sent.increment(batch.len() as u64);
                    return;
                }
                Ok(Ok((status, _))) => {
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
