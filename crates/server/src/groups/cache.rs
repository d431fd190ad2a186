//! The membership cache: group id → members, bounded by the member entries it holds.

use std::{collections::HashMap, sync::Arc};

use super::Members;

/// Member entries the membership cache holds at most (~100 bytes each): past it, other groups
/// are dropped from the cache and read from the store again when next needed.
pub(super) const CACHE_MEMBERS: usize = 1_000_000;

/// Group id → members, bounded by the member entries it holds in all.
#[derive(Debug)]
pub(super) struct Cache {
    groups: HashMap<String, Arc<Members>>,
    /// Member entries in `groups`.
    members: usize,
    limit: usize,
}

impl Cache {
    pub(super) fn new(limit: usize) -> Cache {
        Cache {
            groups: HashMap::new(),
            members: 0,
            limit,
        }
    }

    pub(super) fn get(&self, group_id: &str) -> Option<Arc<Members>> {
        self.groups.get(group_id).cloned()
    }

    /// Caches `members`, dropping other groups (in no particular order, chosen in one pass)
    /// while over the limit.
    pub(super) fn insert(&mut self, group_id: &str, members: Arc<Members>) {
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

    pub(super) fn remove(&mut self, group_id: &str) {
        if let Some(gone) = self.groups.remove(group_id) {
            self.members -= gone.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Member, Role};

    pub(super) fn members(n: usize) -> Arc<Members> {
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
    pub(super) fn the_cache_drops_other_groups_to_stay_within_its_member_limit() {
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
