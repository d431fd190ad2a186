//! Token revocation end to end: the server API records a [`Revocation`] in the store, every
//! node adds it to its list ([`Auth::revoked`]) and closes the connections it covers with 4002;
//! at start a node loads the list, and in a cluster it reloads it every [`RELOAD`] (a node that
//! missed a message catches up, and closes what it kept open meanwhile).

use std::{sync::Arc, time::Duration};

use crate::{
    auth::{Auth, Revocation},
    clock::now_secs,
    cluster::Cluster,
    hub::Hub,
    store::{Store, StoreError},
};

/// How often a cluster node reloads the revocations from the store.
pub const RELOAD: Duration = Duration::from_secs(30);

/// Adds `r` to this node's list and closes the connections here it covers. Returns how many.
pub fn apply(auth: &Auth, hub: &Hub, r: &Revocation) -> usize {
    if !auth.revoked.add(r) {
        return 0;
    }
    let user = match r {
        Revocation::User { user, .. } => Some(user.as_str()),
        Revocation::Token { .. } => None,
    };
    let closed = hub.close_revoked(user, |user, tag| auth.revoked.covers(user, tag));
    if closed > 0 {
        tracing::info!(?r, closed, "revoked: connections closed with 4002");
    }
    closed
}

/// Revokes: stored first (so it outlives a restart), then applied here and sent to the other
/// nodes. Returns how many connections of this node were closed.
pub async fn revoke(
    auth: &Auth,
    hub: &Hub,
    store: Option<&Arc<dyn Store>>,
    cluster: Option<&Arc<Cluster>>,
    r: Revocation,
) -> Result<usize, StoreError> {
    if let Some(store) = store {
        store.revoke(&r).await?;
    }
    let closed = apply(auth, hub, &r);
    if let Some(cluster) = cluster {
        cluster.revoked(&r);
    }
    Ok(closed)
}

/// Loads the stored revocations into this node's list, closing what they cover.
pub async fn load(auth: &Auth, hub: &Hub, store: &dyn Store) -> Result<usize, StoreError> {
    // A token is accepted up to `auth.leeway` past its expiry: so is its revocation kept.
    let now = now_secs().saturating_sub(auth.leeway_secs());
    let list = store.revocations(now).await?;
    auth.revoked.forget_expired(now);
    Ok(list.iter().map(|r| apply(auth, hub, r)).sum())
}

/// A cluster node's reload loop.
pub async fn reload_loop(auth: Arc<Auth>, hub: Arc<Hub>, store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(RELOAD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = load(&auth, &hub, &*store).await {
            tracing::warn!(error = %e, "revocations: reload failed; keeping the list held");
        }
    }
}
