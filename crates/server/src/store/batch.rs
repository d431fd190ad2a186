//! What a batch's messages are, for both stores: new or resent (by [`Key`]), and the numbers
//! the new ones get.

use std::collections::HashMap;

use natter_protocol::{Msg, conversation, is_group_id};

use super::Appended;

/// What makes a message the same message when it is sent again: `(send_id, create_time,
/// local_id)`, all three set by the sending client (a resend repeats the message as it was).
/// Keeping `create_time` in the key orders a sender's keys by time: PostgreSQL's idempotency
/// index grows at its end whatever the client's `local_id`s look like (random UUIDs included),
/// and SQLite needs no lookup for a message newer than everything its sender had stored (older
/// ones are found through the create_time ranges of the sender's sent chunks, or `sent_keys`).
pub(super) type Key = (String, i64, String);

/// The maps of the message path, hashed with foldhash (already in the tree, through hashbrown)
/// rather than SipHash: storing a message takes about ten lookups by user id or [`Key`].
pub(super) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub(super) fn key(m: &Msg) -> Key {
    (m.send_id.clone(), m.create_time, m.local_id.clone())
}

/// What a message of a batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Not stored before, and the first of its key in the batch (or without a `local_id`).
    New,
    /// Stored before: the original is in the lookup's results.
    Stored,
    /// A repeat of the batch's message at this index.
    RepeatOf(usize),
}

impl Seen {
    pub(super) fn is_new(self) -> bool {
        self == Seen::New
    }
}

/// What each message of a batch is (`stored` holds the originals found by [`Key`]).
pub(super) fn classify(batch: &[Msg], stored: &Map<Key, Msg>) -> Vec<Seen> {
    let mut first_in_batch: Map<(&str, i64, &str), usize> = Map::default();
    batch
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if m.local_id.is_empty() {
                Seen::New
            } else if !stored.is_empty() && stored.contains_key(&key(m)) {
                Seen::Stored
            } else {
                match first_in_batch.entry((&m.send_id, m.create_time, &m.local_id)) {
                    std::collections::hash_map::Entry::Occupied(e) => Seen::RepeatOf(*e.get()),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(i);
                        Seen::New
                    }
                }
            }
        })
        .collect()
}

/// Whether a message is numbered in a one-to-one conversation's own counter (a group's entries
/// take the group's `seq`).
pub(super) fn takes_direct_conv_seq(m: &Msg) -> bool {
    conversation::is_entry(m) && !is_group_id(&m.receiver_id)
}

/// How many `conv_seq`s each one-to-one conversation's new entries of the batch take, by
/// conversation id in order.
pub(super) fn conv_demand(batch: &[Msg], seen: &[Seen]) -> Vec<(String, i64)> {
    let mut demand: std::collections::BTreeMap<String, i64> = Default::default();
    for (m, _) in batch
        .iter()
        .zip(seen)
        .filter(|(m, s)| s.is_new() && takes_direct_conv_seq(m))
    {
        *demand.entry(conversation::id_of(m)).or_default() += 1;
    }
    demand.into_iter().collect()
}

/// Numbers the new messages of a batch and decides every message's outcome. `next` holds, per
/// user, the next free `seq` and `send_seq`, and `next_conv` per one-to-one conversation the
/// next free `conv_seq`; both are advanced past the numbers handed out. Every new message gets
/// its `conv_id`; an entry its `conv_seq` (a group's: its `seq`); a read receipt keeps the
/// `conv_seq` it was sent with (the position read up to).
/// Returns the numbered new messages (to insert) and one outcome per message of `batch`.
pub(super) fn number(
    batch: &[Msg],
    seen: &[Seen],
    stored: &Map<Key, Msg>,
    next: &mut Map<String, (i64, i64)>,
    next_conv: &mut Map<String, i64>,
) -> (Vec<Msg>, Vec<Appended>) {
    let mut numbered: Vec<Msg> = Vec::with_capacity(batch.len());
    let mut outcomes: Vec<Appended> = Vec::with_capacity(batch.len());
    for (m, seen) in batch.iter().zip(seen) {
        let outcome = match *seen {
            Seen::New => {
                let mut m = m.clone();
                m.seq = next.get_mut(&m.receiver_id).map_or(0, |n| {
                    n.0 += 1;
                    n.0 - 1
                });
                m.send_seq = next.get_mut(&m.send_id).map_or(0, |n| {
                    n.1 += 1;
                    n.1 - 1
                });
                m.conv_id = conversation::id_of(&m);
                if !conversation::is_entry(&m) {
                    m.conv_seq = m.conv_seq.max(0);
                } else if is_group_id(&m.receiver_id) {
                    m.conv_seq = m.seq;
                } else {
                    m.conv_seq = next_conv.get_mut(&m.conv_id).map_or(0, |n| {
                        *n += 1;
                        *n - 1
                    });
                }
                let outcome = Appended::New {
                    seq: m.seq,
                    send_seq: m.send_seq,
                    conv_seq: m.conv_seq,
                };
                numbered.push(m);
                outcome
            }
            Seen::RepeatOf(first) => Appended::Duplicate(match &outcomes[first] {
                Appended::New {
                    seq,
                    send_seq,
                    conv_seq,
                } => Msg {
                    seq: *seq,
                    send_seq: *send_seq,
                    conv_seq: *conv_seq,
                    conv_id: conversation::id_of(&batch[first]),
                    ..batch[first].clone()
                },
                Appended::Duplicate(m) => m.clone(),
            }),
            Seen::Stored => {
                Appended::Duplicate(stored.get(&key(m)).cloned().unwrap_or_else(|| m.clone()))
            }
        };
        outcomes.push(outcome);
    }
    (numbered, outcomes)
}
