//! Groups: membership (cached), the rules of who may do what, and the notifications that
//! membership changes produce.
//!
//! Sequence model: **read fan-out**. A group is a receiver with its own stream: each group
//! message is stored once, with `receiver_id` = the group id and `seq` = the group's sequence.
//! Members fetch the group's stream after their cursor for it. Write fan-out (a copy in every
//! member's inbox) would cost one row per member per message: 10,000 rows for one message to a
//! 10,000-member group. Read fan-out costs one row whatever the size, and the live fan-out is
//! queueing one shared frame per online device.
//!
//! Group ids are made by the server and start with `g_`; user ids may not.

mod cache;
mod notice;
mod rules;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use self::cache::{CACHE_MEMBERS, Cache};
pub use self::{
    notice::Notice,
    rules::{Added, Created},
};
use crate::{
    config::GroupsConfig,
    store::{Group, Member, Role, Store, StoreError},
};

/// The members of one group, as cached.
#[derive(Debug, Default)]
pub struct Members {
    pub roles: HashMap<String, Role>,
    /// The group's seq when each member joined.
    pub joined: HashMap<String, i64>,
}

impl Members {
    fn from_rows(rows: Vec<Member>) -> Members {
        let mut m = Members::default();
        for r in rows {
            m.joined.insert(r.user_id.clone(), r.joined_seq);
            m.roles.insert(r.user_id, r.role);
        }
        m
    }

    pub fn role(&self, user: &str) -> Option<Role> {
        self.roles.get(user).copied()
    }

    pub fn len(&self) -> usize {
        self.roles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }
}

/// Who gets a group message: the members at delivery time, and anybody else who must hear of it
/// (a removed member hears of the removal).
#[derive(Debug, Clone)]
pub struct Audience {
    pub members: Arc<Members>,
    pub also: Vec<String>,
}

/// Why a group operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("no such group")]
    NotFound,
    #[error("only members may do this")]
    NotAMember,
    #[error("only the owner or an admin may do this")]
    Forbidden,
    #[error("the group would exceed groups.max_members ({0})")]
    Full(usize),
    #[error("{0} would exceed groups.max_groups_per_user ({1})")]
    TooManyGroups(String, usize),
    #[error("no pending invitation to this group")]
    NotInvited,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The groups service: cached membership in front of the store.
#[derive(Debug)]
pub struct Groups {
    store: Arc<dyn Store>,
    config: GroupsConfig,
    /// Group id → members. Refreshed (not just dropped) after every change this node makes, so
    /// delivery always finds the current set; a group dropped to stay within [`CACHE_MEMBERS`]
    /// is read from the store again. The lock is never held across an `.await`.
    cache: Mutex<Cache>,
}

impl Groups {
    pub fn new(store: Arc<dyn Store>, config: GroupsConfig) -> Groups {
        Groups {
            store,
            config,
            cache: Mutex::new(Cache::new(CACHE_MEMBERS)),
        }
    }

    pub fn config(&self) -> &GroupsConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached members of a group, if loaded.
    pub fn cached(&self, group_id: &str) -> Option<Arc<Members>> {
        self.lock().get(group_id)
    }

    /// The members of a group (from the cache, else the store); `None` if there is no group.
    pub async fn members(&self, group_id: &str) -> Result<Option<Arc<Members>>, StoreError> {
        if let Some(m) = self.cached(group_id) {
            return Ok(Some(m));
        }
        self.refresh(group_id).await
    }

    /// Reloads a group's members into the cache.
    async fn refresh(&self, group_id: &str) -> Result<Option<Arc<Members>>, StoreError> {
        if self.store.group(group_id).await?.is_none() {
            self.lock().remove(group_id);
            return Ok(None);
        }
        let members = Arc::new(Members::from_rows(self.store.members(group_id).await?));
        self.lock().insert(group_id, members.clone());
        Ok(Some(members))
    }

    /// Drops a group from the cache (another node changed its members).
    pub fn forget(&self, group_id: &str) {
        self.lock().remove(group_id);
    }

    /// The group and its freshly reloaded members, after a change.
    async fn reload(&self, group_id: &str) -> Result<(Group, Arc<Members>), GroupError> {
        let group = self
            .store
            .group(group_id)
            .await?
            .ok_or(GroupError::NotFound)?;
        let members = self.refresh(group_id).await?.ok_or(GroupError::NotFound)?;
        Ok((group, members))
    }

    /// The members, or `NotFound` / `NotAMember` for `user`.
    pub async fn membership(
        &self,
        group_id: &str,
        user: &str,
    ) -> Result<(Arc<Members>, Role), GroupError> {
        let members = self.members(group_id).await?.ok_or(GroupError::NotFound)?;
        let role = members.role(user).ok_or(GroupError::NotAMember)?;
        Ok((members, role))
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}
