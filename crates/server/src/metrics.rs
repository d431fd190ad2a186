//! Prometheus metrics. Every server instance owns its recorder (no global state, so tests can run
//! many servers in one process); handles are registered once here and then cost an atomic
//! operation each on the hot path.
//!
//! The delivery latency histogram is our own fixed-bucket [`LatencyHistogram`] rather than the
//! exporter's: the exporter keeps every raw sample until an upkeep pass folds them into buckets,
//! and at 100,000+ deliveries a second that pass stalls a worker thread for milliseconds. Ours
//! is a handful of relaxed atomic adds per written batch.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use metrics::{Counter, Gauge, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use natter_protocol::{CloseCode, ErrorReason, HttpError};

/// Upper bounds of the delivery latency buckets, in microseconds.
const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// A Prometheus histogram with fixed buckets, recorded with relaxed atomics.
#[derive(Debug)]
pub struct LatencyHistogram {
    name: &'static str,
    help: &'static str,
    /// Non-cumulative counts; the last slot is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// Samples gathered locally (e.g. over one written batch) before one [`LatencyHistogram::add`].
#[derive(Debug, Default)]
pub struct LatencySamples {
    buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: u64,
}

impl LatencySamples {
    pub fn record(&mut self, latency: Duration) {
        let us = latency.as_micros().min(u64::MAX as u128) as u64;
        let i = LATENCY_BUCKETS_US.partition_point(|&bound| bound < us);
        self.buckets[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }
}

impl LatencyHistogram {
    pub fn new(name: &'static str, help: &'static str) -> LatencyHistogram {
        LatencyHistogram {
            name,
            help,
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn add(&self, samples: &LatencySamples) {
        for (bucket, &n) in self.buckets.iter().zip(&samples.buckets) {
            if n > 0 {
                bucket.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.sum_us.fetch_add(samples.sum_us, Ordering::Relaxed);
    }

    /// Records one sample.
    pub fn record(&self, latency: Duration) {
        let mut samples = LatencySamples::default();
        samples.record(latency);
        self.add(&samples);
    }

    pub fn render(&self, out: &mut String) {
        let (name, help) = (self.name, self.help);
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match LATENCY_BUCKETS_US.get(i) {
                Some(us) => {
                    let le = *us as f64 / 1e6;
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Why a message did not reach a device.
#[derive(Debug, Clone, Copy)]
pub enum DropReason {
    /// The device's outbound queue was full.
    SlowConsumer,
    /// Nobody to deliver to (receiver not connected, nothing stores it).
    Offline,
}

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub connections: Gauge,
    /// Redis channels the node's pub/sub connection listens to (cluster mode), counted once
    /// Redis confirmed each (un)subscription; 0 while that connection is down.
    pub cluster_channels: Gauge,
    /// Bytes of messages read from clients and not yet acknowledged (each connection's share
    /// is bounded by `limits.inflight_bytes`).
    pub inflight_bytes: Gauge,
    pub connections_opened: Counter,
    pub connections_refused: Counter,
    /// Times a connection went over `limits.rate.bytes_per_second` and was not read for a while.
    pub paced: Counter,
    /// HTTP API requests refused, by reason (rate limit, body too large or too slow...).
    pub http_refused: Counter,
    pub messages_received: Counter,
    pub messages_delivered: Counter,
    dropped_slow: Counter,
    dropped_offline: Counter,
    frames_rejected: Vec<Counter>,
    frames_too_big: Counter,
    disconnects: Vec<Counter>,
    pub slow_consumer_disconnects: Counter,
    pub delivery_latency: LatencyHistogram,
    /// Batches committed to the store, the messages in them, and commits that failed.
    pub store_commits: Counter,
    pub store_messages: Counter,
    pub store_failures: Counter,
    pub store_commit_latency: LatencyHistogram,
    /// Push notifications the webhook took, and those dropped (queue full; every try failed).
    pub push_sent: Counter,
    pub push_dropped_full: Counter,
    pub push_dropped_failed: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl Metrics {
    pub fn new() -> Metrics {
        let recorder: PrometheusRecorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &METADATA)
        };
        for (name, help) in HELP {
            recorder.describe_counter((*name).into(), None, (*help).into());
        }
        let frames_rejected = ErrorReason::ALL
            .iter()
            .map(|r| {
                counter(
                    "natter_frames_rejected_total",
                    vec![Label::new("reason", r.as_str())],
                )
            })
            .collect();
        let disconnects = CloseCode::ALL
            .iter()
            .map(|c| {
                counter(
                    "natter_disconnects_total",
                    vec![Label::new("reason", c.reason())],
                )
            })
            .collect();
        let dropped = |reason| {
            counter(
                "natter_messages_dropped_total",
                vec![Label::new("reason", reason)],
            )
        };
        Metrics {
            connections: recorder
                .register_gauge(&Key::from_static_name("natter_connections"), &METADATA),
            cluster_channels: recorder
                .register_gauge(&Key::from_static_name("natter_cluster_channels"), &METADATA),
            inflight_bytes: recorder
                .register_gauge(&Key::from_static_name("natter_inflight_bytes"), &METADATA),
            connections_opened: counter("natter_connections_opened_total", vec![]),
            connections_refused: counter("natter_connections_refused_total", vec![]),
            paced: counter("natter_rate_paced_total", vec![]),
            http_refused: counter("natter_http_refused_total", vec![]),
            messages_received: counter("natter_messages_received_total", vec![]),
            messages_delivered: counter("natter_messages_delivered_total", vec![]),
            dropped_slow: dropped("slow_consumer"),
            dropped_offline: dropped("offline"),
            frames_rejected,
            frames_too_big: counter(
                "natter_frames_rejected_total",
                vec![Label::new("reason", "too_big")],
            ),
            disconnects,
            slow_consumer_disconnects: counter("natter_slow_consumer_disconnects_total", vec![]),
            delivery_latency: LatencyHistogram::new(
                "natter_delivery_latency_seconds",
                "Time from queueing a frame for a device to writing it to the socket",
            ),
            store_commits: counter("natter_store_commits_total", vec![]),
            store_messages: counter("natter_store_messages_committed_total", vec![]),
            store_failures: counter("natter_store_commit_failures_total", vec![]),
            store_commit_latency: LatencyHistogram::new(
                "natter_store_commit_seconds",
                "Time to commit a batch of messages to the store (their acks wait for it)",
            ),
            push_sent: counter("natter_push_sent_total", vec![]),
            push_dropped_full: counter(
                "natter_push_dropped_total",
                vec![Label::new("reason", "queue_full")],
            ),
            push_dropped_failed: counter(
                "natter_push_dropped_total",
                vec![Label::new("reason", "failed")],
            ),
            handle,
            recorder,
        }
    }

    pub fn dropped(&self, reason: DropReason, n: u64) {
        if n > 0 {
            match reason {
                DropReason::SlowConsumer => self.dropped_slow.increment(n),
                DropReason::Offline => self.dropped_offline.increment(n),
            }
        }
    }

    pub fn frame_rejected(&self, reason: ErrorReason) {
        if let Some(i) = ErrorReason::ALL.iter().position(|r| *r == reason) {
            self.frames_rejected[i].increment(1);
        }
    }

    /// Counts a WebSocket upgrade refused before it happened (bad token, limits, origin...).
    pub fn upgrade_refused(&self, reason: HttpError) {
        self.connections_refused.increment(1);
        let key = Key::from_parts(
            "natter_upgrades_refused_total",
            vec![Label::new("reason", reason.as_str())],
        );
        self.recorder.register_counter(&key, &METADATA).increment(1);
    }

    pub fn frame_too_big(&self) {
        self.frames_too_big.increment(1);
    }

    pub fn disconnected(&self, code: CloseCode) {
        if let Some(i) = CloseCode::ALL.iter().position(|c| *c == code) {
            self.disconnects[i].increment(1);
        }
        if code == CloseCode::SlowConsumer {
            self.slow_consumer_disconnects.increment(1);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = self.handle.render();
        self.delivery_latency.render(&mut out);
        self.store_commit_latency.render(&mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

const HELP: &[(&str, &str)] = &[
    (
        "natter_push_sent_total",
        "Push notifications the webhook accepted (2xx)",
    ),
    (
        "natter_push_dropped_total",
        "Push notifications dropped: queue_full (webhooks.push.queue) or failed (every try)",
    ),
    (
        "natter_connections_opened_total",
        "WebSocket connections accepted",
    ),
    (
        "natter_connections_refused_total",
        "WebSocket upgrades refused by the node connection limit",
    ),
    (
        "natter_rate_paced_total",
        "Times a connection went over its byte rate and was not read until back under it",
    ),
    (
        "natter_http_refused_total",
        "HTTP API requests refused by a limit (rate, concurrent reads, body size or time)",
    ),
    (
        "natter_messages_received_total",
        "Valid messages received from clients",
    ),
    (
        "natter_messages_delivered_total",
        "Frames written to client sockets (deliveries, acks and errors)",
    ),
    (
        "natter_messages_dropped_total",
        "Deliveries that did not happen, by reason",
    ),
    (
        "natter_frames_rejected_total",
        "Client frames refused, by reason",
    ),
    (
        "natter_disconnects_total",
        "Connections closed, by close reason",
    ),
    (
        "natter_slow_consumer_disconnects_total",
        "Connections closed because their outbound queue was full",
    ),
    (
        "natter_store_commits_total",
        "Batches of messages committed to the store",
    ),
    (
        "natter_store_messages_committed_total",
        "Messages in the batches committed to the store (resends included)",
    ),
    (
        "natter_store_commit_failures_total",
        "Batches the store could not commit (their senders got store_unavailable)",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histogram_renders_cumulative_buckets() {
        let h = LatencyHistogram::new("natter_delivery_latency_seconds", "test");
        let mut samples = LatencySamples::default();
        samples.record(Duration::from_micros(50));
        samples.record(Duration::from_micros(300));
        samples.record(Duration::from_secs(10));
        h.add(&samples);
        let mut out = String::new();
        h.render(&mut out);
        assert!(
            out.contains("natter_delivery_latency_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("natter_delivery_latency_seconds_bucket{le=\"0.0005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("natter_delivery_latency_seconds_bucket{le=\"2.5\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("natter_delivery_latency_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("natter_delivery_latency_seconds_count 3\n"),
            "{out}"
        );
    }
}
