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

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use natter_protocol::{GROUP_PREFIX, Msg, is_group_id, msg_type};

use crate::{
    clock::now_millis,
    config::GroupsConfig,
    ids,
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
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Member entries the membership cache holds at most (~100 bytes each): past it, other groups
/// are dropped from the cache and read from the store again when next needed.
const CACHE_MEMBERS: usize = 1_000_000;

/// Group id → members, bounded by the member entries it holds in all.
#[derive(Debug)]
struct Cache {
    groups: HashMap<String, Arc<Members>>,
    /// Member entries in `groups`.
    members: usize,
    limit: usize,
}

impl Cache {
    fn new(limit: usize) -> Cache {
        Cache {
            groups: HashMap::new(),
            members: 0,
            limit,
        }
    }

    fn get(&self, group_id: &str) -> Option<Arc<Members>> {
        self.groups.get(group_id).cloned()
    }

    /// Caches `members`, dropping other groups (in no particular order, chosen in one pass)
    /// while over the limit.
    fn insert(&mut self, group_id: &str, members: Arc<Members>) {
        self.remove(group_id);
        let mut excess = (self.members + members.len()).saturating_sub(self.limit);
        let mut dropped = Vec::new();
        for (other, m) in &self.groups {
            if excess == 0 {
                break;
            }
            excess = excess.saturating_sub(m.len());
            dropped.push(other.clone());
        }
        for other in dropped {
            self.remove(&other);
        }
        self.members += members.len();
        self.groups.insert(group_id.to_owned(), members);
    }

    fn remove(&mut self, group_id: &str) {
        if let Some(gone) = self.groups.remove(group_id) {
            self.members -= gone.len();
        }
    }
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

    async fn check_group_count(&self, users: &[String]) -> Result<(), GroupError> {
        let max = self.config.max_groups_per_user;
        let counts = self.store.group_counts(users).await?;
        match counts.into_iter().find(|(_, n)| *n as usize >= max) {
            Some((user, _)) => Err(GroupError::TooManyGroups(user, max)),
            None => Ok(()),
        }
    }

    /// Creates a group owned by `owner` with `members`; returns it and the notification.
    pub async fn create(
        &self,
        owner: &str,
        name: &str,
        members: &[String],
    ) -> Result<(Group, Vec<Member>, Notice), GroupError> {
        validate_name(name)?;
        let mut all: Vec<String> = vec![owner.to_owned()];
        for m in members {
            validate_user(m)?;
            if !all.contains(m) {
                all.push(m.clone());
            }
        }
        if all.len() > self.config.max_members {
            return Err(GroupError::Full(self.config.max_members));
        }
        self.check_group_count(&all).await?;
        let created_at = now_millis();
        let group = Group {
            group_id: format!("{GROUP_PREFIX}{}", ids::message_id(created_at).simple()),
            name: name.to_owned(),
            owner: owner.to_owned(),
            created_at,
        };
        let rows: Vec<(String, Role)> = all
            .iter()
            .map(|u| {
                (
                    u.clone(),
                    if u == owner {
                        Role::Owner
                    } else {
                        Role::Member
                    },
                )
            })
            .collect();
        self.store.create_group(&group, &rows).await?;
        let members = self
            .refresh(&group.group_id)
            .await?
            .ok_or(GroupError::NotFound)?;
        let notice = Notice::new(&group, owner, msg_type::GROUP_CREATED, &all, &members);
        let list = self.store.members(&group.group_id).await?;
        Ok((group, list, notice))
    }

    /// Adds members (owner or admin); returns who was new and, if anybody, the notification.
    pub async fn add(
        &self,
        group_id: &str,
        actor: &str,
        users: &[String],
    ) -> Result<(Vec<String>, Option<Notice>), GroupError> {
        let (members, role) = self.membership(group_id, actor).await?;
        if !role.manages() {
            return Err(GroupError::Forbidden);
        }
        for u in users {
            validate_user(u)?;
        }
        let new: Vec<String> = users
            .iter()
            .filter(|u| members.role(u).is_none())
            .cloned()
            .collect();
        if members.len() + new.len() > self.config.max_members {
            return Err(GroupError::Full(self.config.max_members));
        }
        self.check_group_count(&new).await?;
        let added = self.store.add_members(group_id, &new).await?;
        let (group, members) = self.reload(group_id).await?;
        let notice = (!added.is_empty()).then(|| {
            Notice::new(
                &group,
                actor,
                msg_type::GROUP_MEMBERS_ADDED,
                &added,
                &members,
            )
        });
        Ok((added, notice))
    }

    /// Removes `user` (owner or admin; or the user leaving). The owner cannot leave.
    pub async fn remove(
        &self,
        group_id: &str,
        actor: &str,
        user: &str,
    ) -> Result<Notice, GroupError> {
        let (_, actor_role) = self.membership(group_id, actor).await?;
        let leaving = actor == user;
        if !leaving && !actor_role.manages() {
            return Err(GroupError::Forbidden);
        }
        let members = self.members(group_id).await?.ok_or(GroupError::NotFound)?;
        match members.role(user) {
            None => return Err(GroupError::Invalid(format!("{user} is not a member"))),
            Some(Role::Owner) => {
                return Err(GroupError::Invalid(
                    "the owner cannot leave or be removed; dissolve the group instead".into(),
                ));
            }
            Some(Role::Admin) if actor_role != Role::Owner && !leaving => {
                return Err(GroupError::Forbidden);
            }
            Some(_) => {}
        }
        self.store.remove_member(group_id, user).await?;
        let (group, members) = self.reload(group_id).await?;
        let kind = if leaving {
            msg_type::GROUP_MEMBER_LEFT
        } else {
            msg_type::GROUP_MEMBER_REMOVED
        };
        let mut n = Notice::new(&group, actor, kind, &[user.to_owned()], &members);
        n.audience.also.push(user.to_owned());
        Ok(n)
    }

    /// Changes a member's role (owner only; admin or member).
    pub async fn set_role(
        &self,
        group_id: &str,
        actor: &str,
        user: &str,
        role: Role,
    ) -> Result<Notice, GroupError> {
        let (members, actor_role) = self.membership(group_id, actor).await?;
        if actor_role != Role::Owner {
            return Err(GroupError::Forbidden);
        }
        if role == Role::Owner || members.role(user).is_none_or(|r| r == Role::Owner) {
            return Err(GroupError::Invalid(
                "the role of a member other than the owner can be admin or member".into(),
            ));
        }
        self.store.set_role(group_id, user, role).await?;
        let (group, members) = self.reload(group_id).await?;
        Ok(Notice::new(
            &group,
            actor,
            msg_type::GROUP_ROLE_CHANGED,
            &[user.to_owned()],
            &members,
        ))
    }

    pub async fn rename(
        &self,
        group_id: &str,
        actor: &str,
        name: &str,
    ) -> Result<Notice, GroupError> {
        validate_name(name)?;
        let (members, role) = self.membership(group_id, actor).await?;
        if !role.manages() {
            return Err(GroupError::Forbidden);
        }
        self.store.rename_group(group_id, name).await?;
        let group = self
            .store
            .group(group_id)
            .await?
            .ok_or(GroupError::NotFound)?;
        Ok(Notice::new(
            &group,
            actor,
            msg_type::GROUP_RENAMED,
            &[],
            &members,
        ))
    }

    /// Dissolves the group (owner only). Every former member hears of it.
    pub async fn dissolve(&self, group_id: &str, actor: &str) -> Result<Notice, GroupError> {
        let (members, role) = self.membership(group_id, actor).await?;
        if role != Role::Owner {
            return Err(GroupError::Forbidden);
        }
        let group = self
            .store
            .group(group_id)
            .await?
            .ok_or(GroupError::NotFound)?;
        // Once dissolved the group has no members to look up, here or on another node: the
        // notice goes to each former member by user id instead.
        let mut notice = Notice::new(
            &group,
            actor,
            msg_type::GROUP_DISSOLVED,
            &[],
            &Arc::new(Members::default()),
        );
        notice.audience.also = members.roles.keys().cloned().collect();
        self.store.dissolve_group(group_id).await?;
        self.lock().remove(group_id);
        Ok(notice)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// A membership-change notification: a group message from the actor, and who gets it.
#[derive(Debug)]
pub struct Notice {
    pub msg: Msg,
    pub audience: Audience,
}

impl Notice {
    fn new(
        group: &Group,
        actor: &str,
        kind: i32,
        users: &[String],
        members: &Arc<Members>,
    ) -> Notice {
        let content = serde_json::json!({
            "group_id": group.group_id,
            "name": group.name,
            "actor": actor,
            "users": users,
        });
        Notice {
            msg: Msg {
                send_id: actor.to_owned(),
                receiver_id: group.group_id.clone(),
                msg_type: kind,
                content: content.to_string(),
                ..Msg::default()
            },
            audience: Audience {
                members: members.clone(),
                also: Vec::new(),
            },
        }
    }
}

fn validate_name(name: &str) -> Result<(), GroupError> {
    if name.trim().is_empty() || name.len() > 256 {
        return Err(GroupError::Invalid("name: 1 to 256 bytes".into()));
    }
    Ok(())
}

fn validate_user(user: &str) -> Result<(), GroupError> {
    if user.is_empty()
        || user.len() > 128
        || is_group_id(user)
        || user.chars().any(char::is_control)
    {
        return Err(GroupError::Invalid(format!(
            "`{user}` is not a valid user id"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Arc<Members> {
        Arc::new(Members::from_rows(
            (0..n)
                .map(|i| Member {
                    user_id: format!("u{i}"),
                    role: Role::Member,
                    joined_seq: 0,
                })
                .collect(),
        ))
    }

    #[test]
    fn the_cache_drops_other_groups_to_stay_within_its_member_limit() {
        let mut cache = Cache::new(10);
        cache.insert("g_a", members(4));
        cache.insert("g_b", members(4));
        assert_eq!(cache.members, 8);
        cache.insert("g_c", members(4));
        assert!(cache.get("g_c").is_some(), "the group just loaded stays");
        assert_eq!(cache.groups.len(), 2, "one of the others went");
        assert_eq!(cache.members, 8);
        // Replacing a group's entry counts its members once.
        cache.insert("g_c", members(6));
        assert_eq!(
            cache.members,
            cache.groups.values().map(|m| m.len()).sum::<usize>()
        );
        assert!(cache.members <= 10);
        // A group larger than the limit is still cached, alone.
        cache.insert("g_big", members(12));
        assert_eq!(cache.groups.len(), 1);
        assert_eq!(cache.members, 12);
        cache.remove("g_big");
        assert_eq!((cache.groups.len(), cache.members), (0, 0));
    }
}
