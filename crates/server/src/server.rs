//! Server lifecycle: bind, serve, and shut down gracefully.
//!
//! Shutdown: when the shutdown future resolves, the listener stops accepting, every session is
//! asked to close with 1001, and [`Server::run`] returns once the last session has ended or
//! `shutdown.timeout` has passed, whichever is first.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use axum::{Router, routing::get, serve::ListenerExt};
use natter_protocol::CloseCode;
use std::future::IntoFuture;

use tokio::{net::TcpListener, sync::Notify};

use crate::{config::Config, gateway, http, hub::Hub, messaging::Messaging, metrics::Metrics};

/// Everything a request handler needs; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub messaging: Arc<Messaging>,
    pub metrics: Arc<Metrics>,
    pub sessions: Arc<Sessions>,
}

/// Counts live WebSocket sessions, enforces the node limit, and lets shutdown wait for zero.
#[derive(Debug, Default)]
pub struct Sessions {
    live: AtomicUsize,
    shutting_down: AtomicBool,
    all_gone: Notify,
}

/// Held by a session for its whole life; dropping it counts the session out.
#[derive(Debug)]
pub struct SessionGuard(Arc<Sessions>);

impl Sessions {
    /// Counts a new session in, unless the node is full or shutting down.
    pub fn try_enter(self: &Arc<Self>, max: usize) -> Option<SessionGuard> {
        if self.is_shutting_down() {
            return None;
        }
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SessionGuard(self.clone()))
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    async fn wait_all_gone(&self) {
        loop {
            let notified = self.all_gone.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_gone.notify_waiters();
        }
    }
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    state: AppState,
}

impl Server {
    /// Binds `config.server.listen` and builds the node's state.
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.server.listen).await?;
        let metrics = Arc::new(Metrics::new());
        let hub = Arc::new(Hub::default());
        let messaging = Arc::new(Messaging::new(hub.clone(), metrics.clone()));
        let state = AppState {
            config: Arc::new(config),
            hub,
            messaging,
            metrics,
            sessions: Arc::new(Sessions::default()),
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
            .merge(http::routes())
            .with_state(state.clone());

        let stop_accepting = Arc::new(Notify::new());
        let serve = tokio::spawn({
            let stop_accepting = stop_accepting.clone();
            // Chat frames are small and latency-bound: no Nagle delay.
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY failed");
                }
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop_accepting.notified().await })
                .into_future()
        });

        shutdown.await;
        let deadline = tokio::time::Instant::now() + state.config.shutdown.timeout;
        tracing::info!(
            connections = state.sessions.live(),
            "shutting down: closing connections with 1001"
        );
        state.sessions.shutting_down.store(true, Ordering::Release);
        stop_accepting.notify_one();
        state.hub.close_all(CloseCode::GoingAway);
        // The listener closes and plain HTTP requests finish; WebSocket sessions are ours to
        // wait for. Both within the one deadline.
        let result = match tokio::time::timeout_at(deadline, serve).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => Ok(()),
        };
        if tokio::time::timeout_at(deadline, state.sessions.wait_all_gone())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = state.sessions.live(),
                "shutdown timeout reached with connections still open"
            );
        }
        result
    }
}
