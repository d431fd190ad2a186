//! What every handler shares: [`AppState`], and the counters of tasks in flight that limits and
//! shutdown read ([`Tracker`], [`Sessions`]).

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use tokio::sync::Notify;

use crate::{
    auth::Auth, cluster::Cluster, config::Config, groups::Groups, hub::Hub, limits::UserLimits,
    messaging::Messaging, metrics::Metrics, store::Store,
};

/// Everything a request handler needs; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub auth: Arc<Auth>,
    pub hub: Arc<Hub>,
    pub messaging: Arc<Messaging>,
    pub metrics: Arc<Metrics>,
    pub sessions: Arc<Sessions>,
    /// The HTTP API's per-user limits.
    pub limits: Arc<UserLimits>,
    /// `None` when `storage.backend` is `none`.
    pub store: Option<Arc<dyn Store>>,
    /// `None` without storage.
    pub groups: Option<Arc<Groups>>,
    /// Set in cluster mode.
    pub cluster: Option<Arc<Cluster>>,
}

/// Counts tasks in flight (sessions, HTTP connections), can cap them, and lets shutdown wait
/// until none is left.
#[derive(Debug, Default, Clone)]
pub struct Tracker(Arc<TrackerInner>);

#[derive(Debug, Default)]
struct TrackerInner {
    live: AtomicUsize,
    idle: Notify,
}

/// Held by a tracked task for its whole life; dropping it counts the task out.
#[derive(Debug)]
pub struct TrackerGuard(Arc<TrackerInner>);

impl Tracker {
    pub fn enter(&self) -> TrackerGuard {
        self.0.live.fetch_add(1, Ordering::AcqRel);
        TrackerGuard(self.0.clone())
    }

    /// Counts a task in unless `max` are live already.
    pub fn try_enter(&self, max: usize) -> Option<TrackerGuard> {
        self.0
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| TrackerGuard(self.0.clone()))
    }

    pub fn live(&self) -> usize {
        self.0.live.load(Ordering::Acquire)
    }

    /// Resolves once no tracked task is left.
    pub async fn wait(&self) {
        loop {
            let idle = self.0.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.live() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Drop for TrackerGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The node's WebSocket sessions: the count the node limit applies to, and the shutdown flag.
#[derive(Debug, Default)]
pub struct Sessions {
    tracker: Tracker,
    shutting_down: AtomicBool,
}

/// Held by a session for its whole life.
pub type SessionGuard = TrackerGuard;

impl Sessions {
    /// Counts a new session in, unless the node is full or shutting down.
    pub fn try_enter(&self, max: usize) -> Option<SessionGuard> {
        if self.is_shutting_down() {
            return None;
        }
        self.tracker.try_enter(max)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub fn live(&self) -> usize {
        self.tracker.live()
    }

    /// Refuses new sessions from now on.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Resolves once no session is left.
    pub async fn wait(&self) {
        self.tracker.wait().await
    }
}
