//! Conversations: a one-to-one pair of users, or a group. Every stored message belongs to one,
//! and every entry of a conversation has a place in it (`conv_seq`), the same for everyone in it.
//!
//! Ids: a group's conversation id is the group id (`g_...`); a pair's is `d:` followed by the
//! two user ids in byte order, each with `%` written `%25` and `:` written `%3A`, joined by `:`
//! (`d:alice:bob`). The escaping keeps ids containing `:` apart; no user id starts with `g_`,
//! and none of these starts with it either.

use crate::{Msg, is_group_id, msg_type};

/// Prefix of a one-to-one conversation id.
pub const DIRECT_PREFIX: &str = "d:";

/// A parsed conversation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversation {
    /// Two users (in byte order; the same user twice for notes to oneself).
    Direct(String, String),
    /// A group.
    Group(String),
}

impl Conversation {
    /// The conversation id.
    pub fn id(&self) -> String {
        match self {
            Conversation::Direct(a, b) => direct_id(a, b),
            Conversation::Group(g) => g.clone(),
        }
    }

    /// Whether `user` is one of a one-to-one conversation's two users (groups: `false`).
    pub fn is_between(&self, user: &str) -> bool {
        matches!(self, Conversation::Direct(a, b) if a == user || b == user)
    }

    /// In a one-to-one conversation, the user that is not `user`.
    pub fn peer_of<'a>(&'a self, user: &str) -> Option<&'a str> {
        match self {
            Conversation::Direct(a, b) if a == user => Some(b),
            Conversation::Direct(a, b) if b == user => Some(a),
            _ => None,
        }
    }
}

/// The id of the conversation between users `a` and `b` (either order).
pub fn direct_id(a: &str, b: &str) -> String {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    let mut id = String::with_capacity(DIRECT_PREFIX.len() + a.len() + b.len() + 1);
    id.push_str(DIRECT_PREFIX);
    escape_into(&mut id, a);
    id.push(':');
    escape_into(&mut id, b);
    id
}

fn escape_into(out: &mut String, user: &str) {
    for c in user.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("%25") => out.push('%'),
            Some("%3A") => out.push(':'),
            _ => return None,
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The conversation an id names; `None` for anything [`direct_id`] or a group id is not.
pub fn parse(id: &str) -> Option<Conversation> {
    if is_group_id(id) {
        return Some(Conversation::Group(id.to_owned()));
    }
    let (a, b) = id.strip_prefix(DIRECT_PREFIX)?.split_once(':')?;
    let (a, b) = (unescape(a)?, unescape(b)?);
    let parsed = Conversation::Direct(a, b);
    // Only the canonical spelling (byte order, escaped) names the conversation.
    (parsed.id() == id).then_some(parsed)
}

/// The id of the conversation `m` belongs to: its group, or its sender and receiver.
pub fn id_of(m: &Msg) -> String {
    if is_group_id(&m.receiver_id) {
        m.receiver_id.clone()
    } else {
        direct_id(&m.send_id, &m.receiver_id)
    }
}

/// Whether a stored message is an entry of its conversation (takes a `conv_seq`): everything but
/// read receipts, which move a reader's position instead.
pub fn is_entry(m: &Msg) -> bool {
    m.msg_type != msg_type::READ
}

/// What a recall (`msg_type` 25) or an edit (26) says: which entry, and for an edit the new
/// content. Carried as the event's `content`, a JSON object: `{"conv_seq": 12}` or
/// `{"conv_seq": 12, "content": "new text"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    pub conv_seq: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

impl Change {
    /// The change an event's content names; `None` if it is not one.
    pub fn parse(content: &str) -> Option<Change> {
        let change: Change = serde_json::from_str(content).ok()?;
        (change.conv_seq > 0).then_some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_ids_are_one_per_pair_and_parse_back() {
        assert_eq!(direct_id("bob", "alice"), "d:alice:bob");
        assert_eq!(direct_id("alice", "bob"), "d:alice:bob");
        assert_eq!(
            parse("d:alice:bob"),
            Some(Conversation::Direct("alice".into(), "bob".into()))
        );
        // Ids with the separator or the escape character stay apart.
        let ab = direct_id("a:b", "c");
        let a_bc = direct_id("a", "b:c");
        assert_ne!(ab, a_bc);
        for (x, y) in [("a:b", "c"), ("a", "b:c"), ("50%", "x%3A"), ("me", "me")] {
            let id = direct_id(x, y);
            let mut pair = [x.to_owned(), y.to_owned()];
            pair.sort();
            let [a, b] = pair;
            assert_eq!(parse(&id), Some(Conversation::Direct(a, b)), "{id}");
        }
        assert_eq!(parse("g_team"), Some(Conversation::Group("g_team".into())));
        for bad in [
            "d:bob:alice",
            "d:alice",
            "x:a:b",
            "d:a%3a:b",
            "d:a%:b",
            "alice",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_pair_has_one_id_that_names_it(a in "\\PC{0,6}", b in "\\PC{0,6}") {
            let id = direct_id(&a, &b);
            proptest::prop_assert_eq!(&id, &direct_id(&b, &a));
            let conv = parse(&id).unwrap();
            proptest::prop_assert!(conv.is_between(&a) && conv.is_between(&b));
        }
    }

    #[test]
    fn changes_name_an_entry() {
        assert_eq!(
            Change::parse(r#"{"conv_seq":3}"#),
            Some(Change {
                conv_seq: 3,
                content: None
            })
        );
        assert_eq!(
            Change::parse(r#"{"conv_seq":3,"content":"fixed"}"#)
                .unwrap()
                .content
                .as_deref(),
            Some("fixed")
        );
        for bad in ["3", "{}", r#"{"conv_seq":0}"#, r#"{"conv_seq":"3"}"#] {
            assert_eq!(Change::parse(bad), None, "{bad}");
        }
    }
}
