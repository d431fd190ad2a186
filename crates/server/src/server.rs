//! Server lifecycle: bind, serve, and shut down gracefully.
//!
//! Shutdown: when the shutdown future resolves, the listener stops accepting, every session is
//! asked to close with 1001, and [`Server::run`] returns once the last session has ended or
//! `shutdown.timeout` has passed, whichever is first.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, routing::get};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use natter_protocol::CloseCode;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};

use crate::{
    auth::{Auth, KeyError},
    clock::now_millis,
    cluster::Cluster,
    config::{Config, LimitsConfig},
    deadline::{DeadlineIo, Upgraded},
    delivery::Delivery,
    gateway,
    groups::Groups,
    http,
    hub::Hub,
    limits::UserLimits,
    messaging::Messaging,
    metrics::Metrics,
    sequencer::Sequencer,
    state::{AppState, Sessions, Tracker},
    store::{self, Store, StoreError},
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("cluster.redis_url: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    /// Binds `config.server.listen` and builds the node's state.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let auth = Arc::new(Auth::new(&config.auth)?);
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| StartError::Bind(config.server.listen, e))?;
        let store = store::open(&config.storage).await?;
        let hub = Arc::new(Hub::default());
        if let Some(store) = &store {
            crate::revoke::load(&auth, &hub, &**store).await?;
        }
        let metrics = Arc::new(Metrics::new());
        let groups = store
            .clone()
            .map(|store| Arc::new(Groups::new(store, config.groups.clone())));
        let delivery = Arc::new(Delivery::new(hub.clone(), metrics.clone(), groups.clone()));
        let sequencer = store.clone().map(|store| {
            Sequencer::start(
                store,
                delivery.clone(),
                metrics.clone(),
                config.storage.batch_max,
                config.storage.batch_bytes,
            )
        });
        let messaging = Arc::new(Messaging::new(
            delivery.clone(),
            sequencer,
            groups.clone(),
            store.clone(),
            config.messages.edit_window,
            &config.webhooks.before_send,
        ));
        let cluster = match (&groups, config.cluster.enabled) {
            (Some(groups), true) => {
                let mut cluster_config = config.cluster.clone();
                if cluster_config.node_id.is_empty() {
                    cluster_config.node_id =
                        crate::ids::message_id(now_millis()).simple().to_string();
                }
                let cluster = Cluster::start(
                    &cluster_config,
                    auth.clone(),
                    hub.clone(),
                    groups.clone(),
                    metrics.cluster_channels.clone(),
                )
                .await?;
                delivery.set_cluster(cluster.clone());
                if let Some(store) = &store {
                    tokio::spawn(crate::revoke::reload_loop(
                        auth.clone(),
                        hub.clone(),
                        store.clone(),
                    ));
                }
                Some(cluster)
            }
            _ => None,
        };
        if let Some((push, sender)) =
            crate::push::Push::start(&config.webhooks.push, store.clone(), metrics.clone())
        {
            delivery.set_push(push);
            tokio::spawn(sender.run(cluster.clone()));
        }
        let state = AppState {
            limits: Arc::new(UserLimits::new(
                config.limits.http.clone(),
                config.limits.reads_per_user,
            )),
            config: Arc::new(config),
            auth,
            hub,
            messaging,
            metrics,
            sessions: Arc::new(Sessions::default()),
            store,
            groups,
            cluster,
        };
        Ok(Server { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Server { listener, state } = self;
        let app = Router::new()
            .route("/ws/{user_id}/conn/{platform_id}", get(gateway::upgrade))
            // CORS is the HTTP routes' (the upgrade checks its Origin itself).
            .merge(http::routes().layer(axum::middleware::from_fn_with_state(
                state.clone(),
                http::cors::cors,
            )))
            .with_state(state.clone());

        let retention = state.store.clone().and_then(|store| {
            let keep = state.config.storage.retention;
            (!keep.is_zero()).then(|| tokio::spawn(retention_loop(store, keep)))
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let serve = tokio::spawn(accept_loop(
            listener,
            app,
            state.config.limits.clone(),
            stop_rx,
        ));

        shutdown.await;
        let deadline = tokio::time::Instant::now() + state.config.shutdown.timeout;
        tracing::info!(
            connections = state.sessions.live(),
            "shutting down: closing connections with 1001"
        );
        state.sessions.shut_down();
        let _ = stop_tx.send(true);
        state.hub.close_all(CloseCode::GoingAway);
        // The listener closes and plain HTTP requests finish; WebSocket sessions are ours to
        // wait for. Both within the one deadline.
        let result = match tokio::time::timeout_at(deadline, serve).await {
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Ok(Ok(())) | Err(_) => Ok(()),
        };
        if tokio::time::timeout_at(deadline, state.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = state.sessions.live(),
                "shutdown timeout reached with connections still open"
            );
        }
        if let Some(task) = retention {
            task.abort();
        }
        result
    }
}

/// Deletes messages older than `keep`, every [`store::prune_interval`].
async fn retention_loop(store: Arc<dyn Store>, keep: Duration) {
    let mut tick = tokio::time::interval(store::prune_interval(keep));
    loop {
        tick.tick().await;
        let cutoff = now_millis() - keep.as_millis() as i64;
        match store.prune(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "retention: old messages deleted"),
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    }
}

/// Accepts TCP connections and serves HTTP/1.1 on each until `stop` turns true; then lets the
/// HTTP connections in progress finish (upgraded WebSockets are no longer HTTP connections).
///
/// Our own loop rather than `axum::serve`, for the limits of HTTP connections: a client must
/// send its whole request head within `handshake_timeout` (slow-loris), idle keep-alive
/// connections are closed after it too, a response write that waits `http.write_timeout` fails,
/// and at most `http.max_connections` connections are served before their upgrade (past it, new
/// ones wait in the listen backlog).
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: LimitsConfig,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Tracker::default();
    let open = Arc::new(Semaphore::new(limits.http.max_connections));
    loop {
        let (tcp, permit) = tokio::select! {
            accepted = accept(&listener, &open) => accepted,
            _ = stop.changed() => break,
        };
        // Chat frames are small and latency-bound: no Nagle delay.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY failed");
        }
        let upgraded = Upgraded::default();
        let io = DeadlineIo::new(tcp, limits.http.write_timeout, upgraded.clone());
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop.clone();
        let guard = connections.enter();
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(handshake_timeout)
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            // Upgraded (the session has its socket) or ended: no longer an HTTP connection.
            upgraded.set();
            drop((permit, guard));
        });
    }
    drop(listener);
    connections.wait().await;
}

/// The next TCP connection, once fewer than `http.max_connections` are being served.
async fn accept(
    listener: &TcpListener,
    open: &Arc<Semaphore>,
) -> (TcpStream, OwnedSemaphorePermit) {
    let permit = open.clone().acquire_owned().await.expect("never closed");
    loop {
        match listener.accept().await {
            Ok((tcp, _peer)) => return (tcp, permit),
            Err(e) => {
                // Out of descriptors or a transient error: back off, do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
