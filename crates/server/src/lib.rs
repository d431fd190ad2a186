//! # Natter
//!
//! An instant-messaging server: devices connect over WebSocket and every message reaches every
//! device of the people it is meant for.
//!
//! # Layout
//!
//! A message enters at the gateway, is accepted by messaging, and leaves through the hub into the
//! receiving connections' outboxes, which their own gateway sessions write out.
//!
//! - [`config`]: the [`Config`](config::Config) struct, loaded from defaults, YAML and `NATTER__*`.
//! - [`auth`]: token verification and minting (JWT), token transport, the origin check, the
//!   list of revoked tokens.
//! - [`revoke`]: token revocation: stored, applied on every node, connections closed.
//! - [`cluster`]: cluster mode: routing and presence through Redis.
//! - [`server`]: binds, wires the state together, serves, shuts down gracefully.
//! - [`deadline`]: HTTP connections' sockets, whose writes have a deadline.
//! - [`state`]: what every handler shares ([`AppState`](state::AppState)); task counters.
//! - [`clock`]: the one wall clock.
//! - [`query`]: URL query parameters.
//! - [`gateway`]: the WebSocket route and the session task that owns each socket.
//! - [`messaging`]: validates and stamps a message and picks its path (stored or not, direct or
//!   group).
//! - [`delivery`]: queues the one serialised frame to every device, then the ack.
//! - [`ids`]: server message ids (UUIDv7, increasing within a node).
//! - [`budget`]: what one connection may have in flight (messages, bytes) before it is slowed.
//! - [`limits`]: token buckets; the HTTP API's per-user limits (rate, reads at once).
//! - [`memory`]: the allocator's configuration, so memory comes back after a load.
//! - [`sequencer`]: group commit of stored messages, then delivery in commit order.
//! - [`store`]: the `Store` trait; SQLite and PostgreSQL over one schema.
//! - [`groups`]: group membership (cached), rules, notifications; read fan-out.
//! - [`hub`]: who is connected to this node; queues frames to a user's devices.
//! - [`outbox`]: the bounded per-connection queue between the hub and a session.
//! - [`push`]: the offline push webhook (batched, signed, retried, bounded).
//! - [`hook`]: the before-send webhook.
//! - [`webhook`]: the webhooks' HTTP client: signed POSTs over kept-open connections.
//! - [`http`]: `/healthz`, `/metrics`, and the HTTP API (`/api/v1/...`).
//! - [`metrics`]: the Prometheus recorder and the handles used on the hot path.
//!
//! Wire types (`Msg`, close codes, error reasons) live in the `natter-protocol` crate.

pub mod auth;
pub mod budget;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod deadline;
pub mod delivery;
pub mod gateway;
pub mod groups;
pub mod hook;
pub mod http;
pub mod hub;
pub mod ids;
pub mod limits;
pub mod memory;
pub mod messaging;
pub mod metrics;
pub mod outbox;
pub mod push;
pub mod query;
pub mod revoke;
pub mod sequencer;
pub mod server;
pub mod state;
pub mod store;
pub mod webhook;

pub use config::Config;
pub use server::Server;
