//! Prometheus metrics. Every server instance owns its recorder (no global state, so tests can run
//! many servers in one process); handles are registered once here and then cost an atomic
//! operation each on the hot path.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use natter_protocol::{CloseCode, ErrorReason};

/// Buckets of the delivery latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Why a message did not reach a device.
#[derive(Debug, Clone, Copy)]
pub enum DropReason {
    /// The device's outbound queue was full.
    SlowConsumer,
    /// Nobody to deliver to (receiver not connected, nothing stores it).
    Offline,
}

pub struct Metrics {
    handle: PrometheusHandle,
    pub connections: Gauge,
    pub connections_opened: Counter,
    pub connections_refused: Counter,
    pub messages_received: Counter,
    pub messages_delivered: Counter,
    dropped_slow: Counter,
    dropped_offline: Counter,
    frames_rejected: Vec<Counter>,
    frames_too_big: Counter,
    disconnects: Vec<Counter>,
    pub slow_consumer_disconnects: Counter,
    pub delivery_latency: Histogram,
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
        let recorder: PrometheusRecorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("natter_delivery_latency_seconds".into()),
                LATENCY_BUCKETS,
            )
            .expect("latency buckets are a non-empty constant")
            .build_recorder();
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
            connections_opened: counter("natter_connections_opened_total", vec![]),
            connections_refused: counter("natter_connections_refused_total", vec![]),
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
            delivery_latency: recorder.register_histogram(
                &Key::from_static_name("natter_delivery_latency_seconds"),
                &METADATA,
            ),
            handle,
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
        self.handle.render()
    }

    /// Folds recorded histogram samples into buckets; called periodically so memory stays flat.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

const HELP: &[(&str, &str)] = &[
    (
        "natter_connections_opened_total",
        "WebSocket connections accepted",
    ),
    (
        "natter_connections_refused_total",
        "WebSocket upgrades refused by the node connection limit",
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
];
