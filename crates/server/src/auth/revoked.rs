//! Revoked tokens: the app's backend can revoke every token of a user issued before a time
//! (a password change, a ban), or one token by its `jti` (a lost phone). Each node holds the
//! whole list in memory, so checking a token costs a map lookup; the list is kept in the store
//! (it outlives a restart), sent to the other nodes when it changes, and reloaded from the store
//! now and then in a cluster (a node that missed a message catches up).

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::{PoisonError, RwLock},
};

pub use crate::store::Revocation;

/// What of a token revocations look at, kept by each connection that presented one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenTag {
    pub issued_at: Option<u64>,
    pub jti: Option<Box<str>>,
}

#[derive(Debug, Default)]
struct Lists {
    /// user → tokens issued before this (s) are revoked.
    users: HashMap<String, u64>,
    /// jti → when that token expires (s).
    tokens: HashMap<String, u64>,
}

/// The revocations this node knows.
#[derive(Debug, Default)]
pub struct Revoked(RwLock<Lists>);

impl Revoked {
    /// Whether a token of `user` with `tag` is revoked.
    pub fn covers(&self, user: &str, tag: &TokenTag) -> bool {
        let lists = self.0.read().unwrap_or_else(PoisonError::into_inner);
        if lists.users.is_empty() && lists.tokens.is_empty() {
            return false;
        }
        let by_user = lists
            .users
            .get(user)
            .is_some_and(|&before| tag.issued_at.is_none_or(|iat| iat < before));
        by_user
            || tag
                .jti
                .as_deref()
                .is_some_and(|jti| lists.tokens.contains_key(jti))
    }

    /// Adds `r`; returns whether it revokes anything it did not already (a later `before`, a
    /// new `jti`).
    pub fn add(&self, r: &Revocation) -> bool {
        let mut lists = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match r {
            Revocation::User { user, before } => {
                let old = lists.users.entry(user.clone()).or_insert(0);
                let newer = *before > *old;
                *old = (*old).max(*before);
                newer
            }
            Revocation::Token { jti, expires_at } => match lists.tokens.entry(jti.clone()) {
                Entry::Occupied(mut kept) => {
                    let at = kept.get_mut();
                    *at = (*at).max(*expires_at);
                    false
                }
                Entry::Vacant(new) => {
                    new.insert(*expires_at);
                    true
                }
            },
        }
    }

    /// Forgets token revocations that expired before `now` (Unix seconds).
    pub fn forget_expired(&self, now: u64) {
        let mut lists = self.0.write().unwrap_or_else(PoisonError::into_inner);
        lists.tokens.retain(|_, expires_at| *expires_at >= now);
    }

    /// How many revocations are held (users, tokens).
    pub fn len(&self) -> (usize, usize) {
        let lists = self.0.read().unwrap_or_else(PoisonError::into_inner);
        (lists.users.len(), lists.tokens.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(iat: Option<u64>, jti: Option<&str>) -> TokenTag {
        TokenTag {
            issued_at: iat,
            jti: jti.map(Into::into),
        }
    }

    #[test]
    fn a_user_revocation_covers_only_tokens_issued_before_it() {
        let r = Revoked::default();
        assert!(!r.covers("u", &tag(Some(10), None)));
        assert!(r.add(&Revocation::User {
            user: "u".into(),
            before: 100
        }));
        assert!(r.covers("u", &tag(Some(99), None)));
        assert!(r.covers("u", &tag(None, None)));
        assert!(!r.covers("u", &tag(Some(100), None)));
        assert!(!r.covers("v", &tag(Some(1), None)));
        // An earlier time revokes nothing new and does not lower the bar.
        assert!(!r.add(&Revocation::User {
            user: "u".into(),
            before: 50
        }));
        assert!(r.covers("u", &tag(Some(60), None)));
    }

    #[test]
    fn a_token_revocation_covers_its_jti_until_it_expires() {
        let r = Revoked::default();
        let rev = Revocation::Token {
            jti: "j1".into(),
            expires_at: 200,
        };
        assert!(r.add(&rev));
        assert!(!r.add(&rev));
        assert!(r.covers("anyone", &tag(Some(1), Some("j1"))));
        assert!(!r.covers("anyone", &tag(Some(1), Some("j2"))));
        assert!(!r.covers("anyone", &tag(Some(1), None)));
        r.forget_expired(200);
        assert_eq!(r.len(), (0, 1));
        r.forget_expired(201);
        assert_eq!(r.len(), (0, 0));
    }
}
