//! The rules of who may do what to a group, and the notice each change produces.

use std::sync::Arc;

use natter_protocol::{GROUP_PREFIX, ids::check_user_id, msg_type};

use super::{GroupError, Groups, Members, Notice};
use crate::{
    clock::now_millis,
    config::InviteRule,
    ids,
    store::{Group, Member, Role},
};

/// What creating a group did.
#[derive(Debug)]
pub struct Created {
    pub group: Group,
    pub members: Vec<Member>,
    /// Invited, not members yet (`groups.invite: accept`).
    pub invited: Vec<String>,
    /// The creation's notice, then the invitation's if anybody was invited.
    pub notices: Vec<Notice>,
}

/// What adding members did: who became a member, who was invited, and the notice.
#[derive(Debug)]
pub struct Added {
    pub added: Vec<String>,
    pub invited: Vec<String>,
    pub notice: Option<Notice>,
}

impl Groups {
    /// `TooManyGroups` if one of `users` chose `groups.max_groups_per_user` groups already.
    pub(super) async fn check_group_count(&self, users: &[String]) -> Result<(), GroupError> {
        let max = self.config.max_groups_per_user;
        let counts = self.store.group_counts(users).await?;
        match counts.into_iter().find(|(_, n)| *n as usize >= max) {
            Some((user, _)) => Err(GroupError::TooManyGroups(user, max)),
            None => Ok(()),
        }
    }

    /// Creates a group owned by `owner` with `members` (`groups.invite: direct`), or inviting
    /// them (`accept`).
    pub async fn create(
        &self,
        owner: &str,
        name: &str,
        members: &[String],
    ) -> Result<Created, GroupError> {
        // The size first: no work proportional to an oversized list.
        if members.len() > self.config.max_members {
            return Err(GroupError::Full(self.config.max_members));
        }
        validate_name(name)?;
        let all = distinct(std::iter::once(owner).chain(members.iter().map(String::as_str)))?;
        if all.len() > self.config.max_members {
            return Err(GroupError::Full(self.config.max_members));
        }
        // Only the owner chose this group: it counts toward the owner's limit alone.
        self.check_group_count(&all[..1]).await?;
        let (joining, invitees) = match self.config.invite {
            InviteRule::Direct => (&all[..], &[][..]),
            InviteRule::Accept => (&all[..1], &all[1..]),
        };
        let created_at = now_millis();
        let group = Group {
            group_id: format!("{GROUP_PREFIX}{}", ids::message_id(created_at).simple()),
            name: name.to_owned(),
            owner: owner.to_owned(),
            created_at,
        };
        let rows: Vec<(String, Role)> = joining
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
        let mut notices = vec![Notice::new(
            &group,
            owner,
            msg_type::GROUP_CREATED,
            joining,
            &members,
        )];
        let invited = self.invite(&group, owner, invitees, &members).await?;
        notices.extend(invited.1);
        let list = self.store.members(&group.group_id).await?;
        Ok(Created {
            group,
            members: list,
            invited: invited.0,
            notices,
        })
    }

    /// Invites `users` to `group`; returns who was newly invited and, if anybody, the notice
    /// (to the members and to them).
    async fn invite(
        &self,
        group: &Group,
        actor: &str,
        users: &[String],
        members: &Arc<Members>,
    ) -> Result<(Vec<String>, Option<Notice>), GroupError> {
        if users.is_empty() {
            return Ok((Vec::new(), None));
        }
        let keep = self.config.max_invites_per_user;
        let invited = self
            .store
            .invite(&group.group_id, users, actor, now_millis(), keep)
            .await?;
        let notice = (!invited.is_empty()).then(|| {
            let mut n = Notice::new(group, actor, msg_type::GROUP_INVITED, &invited, members);
            n.audience.also.extend(invited.iter().cloned());
            n
        });
        Ok((invited, notice))
    }

    /// `user` accepts an invitation: joins the group (it counts toward their limit).
    pub async fn accept(&self, group_id: &str, user: &str) -> Result<(Group, Notice), GroupError> {
        let members = self.members(group_id).await?.ok_or(GroupError::NotFound)?;
        if members.role(user).is_some() {
            return Err(GroupError::Invalid(format!("{user} is a member already")));
        }
        if members.len() >= self.config.max_members {
            return Err(GroupError::Full(self.config.max_members));
        }
        self.check_group_count(&[user.to_owned()]).await?;
        if !self.store.take_invite(group_id, user).await? {
            return Err(GroupError::NotInvited);
        }
        let added = self
            .store
            .add_members(group_id, &[user.to_owned()], true)
            .await?;
        let (group, members) = self.reload(group_id).await?;
        let notice = Notice::new(
            &group,
            user,
            msg_type::GROUP_MEMBERS_ADDED,
            &added,
            &members,
        );
        Ok((group, notice))
    }

    /// `user` declines an invitation.
    pub async fn decline(&self, group_id: &str, user: &str) -> Result<(), GroupError> {
        if self.store.take_invite(group_id, user).await? {
            Ok(())
        } else {
            Err(GroupError::NotInvited)
        }
    }

    /// Adds members (owner or admin; `groups.invite: direct`) or invites them (`accept`).
    pub async fn add(
        &self,
        group_id: &str,
        actor: &str,
        users: &[String],
    ) -> Result<Added, GroupError> {
        let (members, role) = self.membership(group_id, actor).await?;
        if !role.manages() {
            return Err(GroupError::Forbidden);
        }
        if users.len() > self.config.max_members {
            return Err(GroupError::Full(self.config.max_members));
        }
        let new: Vec<String> = distinct(users.iter().map(String::as_str))?
            .into_iter()
            .filter(|u| members.role(u).is_none())
            .collect();
        if members.len() + new.len() > self.config.max_members {
            return Err(GroupError::Full(self.config.max_members));
        }
        if self.config.invite == InviteRule::Accept {
            let group = self
                .store
                .group(group_id)
                .await?
                .ok_or(GroupError::NotFound)?;
            let (invited, notice) = self.invite(&group, actor, &new, &members).await?;
            return Ok(Added {
                added: Vec::new(),
                invited,
                notice,
            });
        }
        // Added by somebody else, not chosen: it does not count toward their limit.
        let added = self.store.add_members(group_id, &new, false).await?;
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
        Ok(Added {
            added,
            invited: Vec::new(),
            notice,
        })
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
}

/// The valid, distinct user ids of `users`, in their order: linear in the input.
fn distinct<'a>(users: impl Iterator<Item = &'a str>) -> Result<Vec<String>, GroupError> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for user in users {
        validate_user(user)?;
        if seen.insert(user) {
            out.push(user.to_owned());
        }
    }
    Ok(out)
}

pub(super) fn validate_name(name: &str) -> Result<(), GroupError> {
    if name.trim().is_empty() || name.len() > 256 {
        return Err(GroupError::Invalid("name: 1 to 256 bytes".into()));
    }
    Ok(())
}

pub(super) fn validate_user(user: &str) -> Result<(), GroupError> {
    check_user_id(user).map_err(|why| {
        let shown: String = user.chars().take(40).collect();
        GroupError::Invalid(format!("user id `{shown}` {why}"))
    })
}
