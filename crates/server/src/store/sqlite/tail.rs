//! What the log holds, in memory: its batches, the counters of the users with messages in it,
//! and the resend keys of its messages.
//!
//! Invariants:
//! - Message ids are handed out consecutively, in commit order. `natter.db` holds every message
//!   up to `moved_upto`, the log every committed message after it.
//! - Only this process writes the files (`natter.lock`), and in it only the appender allocates
//!   sequence numbers, so the counters of users with messages in the log live here; for every
//!   other user `user_seq` in `natter.db` is current.
//! - The tail changes only while the log connection is held: after an append commits
//!   ([`Tail::record`]), and after a move has committed in `natter.db` ([`Tail::forget`]).

use std::{collections::VecDeque, hash::BuildHasher, sync::Arc};

use natter_protocol::Msg;
use sqlx::{Row, sqlite::SqliteConnection};

use super::pack::unpack;
use crate::store::{
    StoreError,
    batch::Map,
    conv::{ConvRow, apply_change, change_target, changes},
    page_bytes,
};

#[derive(Debug, Default)]
pub(super) struct Tail {
    /// The id the next stored message gets.
    pub(super) next_id: i64,
    /// The last id moved to `natter.db`: the log holds the ids after it.
    pub(super) moved_upto: i64,
    /// The log's batches up to this id are deleted (the next append deletes up to `moved_upto`).
    pub(super) cleared_upto: i64,
    /// The log's batches, oldest first.
    pub(super) batches: VecDeque<Logged>,
    /// The ids of the log's messages with a local_id, by the hash of their resend key; an entry
    /// is compared with the logged message itself, so no copy of a key is kept.
    keys: hashbrown::HashTable<i64>,
    hasher: foldhash::fast::RandomState,
    /// The counters of every user (or group) with a message in the log.
    pub(super) counters: Map<String, Counter>,
    /// Bytes of the log's messages held here ([`page_bytes`]).
    pub(super) bytes: usize,
    /// The chat list's changes of the log's messages, per conversation, merged
    /// ([`crate::store::conv`]); readers merge them into what `natter.db` holds.
    pub(super) convs: Map<String, ConvTail>,
    /// Group members' read positions raised by the log's messages (their own entries).
    pub(super) member_reads: Map<(String, String), (i64, i64)>,
    /// The log's recalls and edits, by the entry they change `(conv_id, conv_seq)`, with their
    /// ids: readers apply them to what they return until the move has changed the entry in
    /// `natter.db` ([`Changed::apply`]).
    pub(super) changed: Changed,
}

/// Recalls and edits not moved yet, by the entry they change.
#[derive(Debug, Clone, Default)]
pub(super) struct Changed(Map<(String, i64), (Msg, i64)>);

impl Changed {
    /// Applies the changes to the entries among `msgs`.
    pub(super) fn apply(&self, msgs: &mut [Msg]) {
        if self.0.is_empty() {
            return;
        }
        for m in msgs.iter_mut().filter(|m| m.conv_seq > 0) {
            if let Some((event, _)) = self.0.get(&(m.conv_id.clone(), m.conv_seq)) {
                apply_change(m, event);
            }
        }
    }
}

/// A conversation with changes in the log.
#[derive(Debug, Clone)]
pub(super) struct ConvTail {
    pub(super) row: ConvRow,
    /// A one-to-one conversation's last `conv_seq` handed out, once the log numbered an entry.
    pub(super) counter: Option<i64>,
    /// The id of the last logged message that changed it.
    pub(super) last_id: i64,
}

/// A batch in the log: its messages have the ids `first_id..first_id + msgs.len()`.
#[derive(Debug, Clone)]
pub(super) struct Logged {
    pub(super) first_id: i64,
    pub(super) msgs: Arc<[Msg]>,
}

impl Logged {
    fn last_id(&self) -> i64 {
        self.first_id + self.msgs.len() as i64 - 1
    }
}

/// A user's (or group's) counters.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counter {
    pub(super) seq: i64,
    pub(super) send_seq: i64,
    /// The greatest `create_time` of the user's stored messages with a `local_id` (-1: none).
    pub(super) created_upto: i64,
    /// The id of the user's last message in the log.
    pub(super) last_id: i64,
}

impl Counter {
    /// A user with nothing stored.
    pub(super) const NONE: Counter = Counter {
        seq: 0,
        send_seq: 0,
        created_upto: -1,
        last_id: 0,
    };
}

impl Tail {
    /// The tail as the files left it: the log's batches beyond natter.db's `moved.upto`.
    pub(super) async fn recover(
        archive: &mut SqliteConnection,
        log: &mut SqliteConnection,
    ) -> Result<Tail, StoreError> {
        let moved: i64 = sqlx::query_scalar("SELECT upto FROM moved")
            .fetch_one(&mut *archive)
            .await?;
        let mut batches = VecDeque::new();
        let rows = sqlx::query("SELECT first_id, body FROM log_batches ORDER BY first_id")
            .fetch_all(&mut *log)
            .await?;
        for row in rows {
            let batch = Logged {
                first_id: row.try_get(0)?,
                msgs: unpack(row.try_get::<&[u8], _>(1)?)?.into(),
            };
            if batch.last_id() > moved {
                batches.push_back(batch);
            }
        }
        let last_id = batches.back().map_or(0, Logged::last_id);
        let bytes = batches
            .iter()
            .flat_map(|b| b.msgs.iter())
            .map(page_bytes)
            .sum();
        Ok(Tail {
            next_id: last_id.max(moved) + 1,
            moved_upto: moved,
            batches,
            bytes,
            ..Tail::default()
        })
    }

    /// Messages in the log (ids are consecutive and only committed ones are handed out).
    pub(super) fn rows(&self) -> i64 {
        self.next_id - 1 - self.moved_upto
    }

    /// The logged original of `m` (same resend key), if the log has one.
    pub(super) fn original(&self, m: &Msg) -> Option<&Msg> {
        let hash = key_hash(&self.hasher, m);
        let id = self.keys.find(hash, |id| {
            logged(&self.batches, *id).is_some_and(|o| same_key(o, m))
        })?;
        logged(&self.batches, *id)
    }

    /// A user's counters: the tail's, else `archived` (read from `user_seq` for this batch).
    pub(super) fn counter(&self, archived: &Map<String, Counter>, user: &str) -> Counter {
        self.counters
            .get(user)
            .or_else(|| archived.get(user))
            .copied()
            .unwrap_or(Counter::NONE)
    }

    /// A one-to-one conversation's last `conv_seq`, if the log numbered one of its entries.
    pub(super) fn conv_counter(&self, conv_id: &str) -> Option<i64> {
        self.convs.get(conv_id).and_then(|c| c.counter)
    }

    /// Learns what an append committed: `numbered` with ids from `first_id`, the next free
    /// `(seq, send_seq)` of every user it numbered (`archived` as for [`Tail::counter`]), and
    /// the next free `conv_seq` of every one-to-one conversation.
    pub(super) fn record(
        &mut self,
        first_id: i64,
        numbered: Vec<Msg>,
        next: Map<String, (i64, i64)>,
        next_conv: Map<String, i64>,
        archived: &Map<String, Counter>,
    ) {
        let last_id = first_id + numbered.len() as i64 - 1;
        let batch_changes = changes(&numbered);
        for (id, row) in batch_changes.rows {
            let entry = self.convs.entry(id).or_insert_with(|| ConvTail {
                row: ConvRow::default(),
                counter: None,
                last_id,
            });
            if entry.row.conv_id.is_empty() {
                entry.row = row;
            } else {
                entry.row.merge(&row);
            }
            entry.last_id = last_id;
        }
        for (id, n) in next_conv {
            if let Some(entry) = self.convs.get_mut(&id) {
                entry.counter = Some(n - 1);
            }
        }
        for (key, seq) in batch_changes.member_reads {
            let at = self.member_reads.entry(key).or_insert((0, last_id));
            *at = (at.0.max(seq), last_id);
        }
        for (id, m) in (first_id..).zip(&numbered) {
            if let Some((conv_id, seq)) = change_target(m) {
                self.changed
                    .0
                    .insert((conv_id.to_owned(), seq), (m.clone(), id));
            }
        }
        for (user, (seq, send_seq)) in next {
            let c = self.counter(archived, &user);
            self.counters.insert(
                user,
                Counter {
                    seq: seq - 1,
                    send_seq: send_seq - 1,
                    ..c
                },
            );
        }
        self.bytes += numbered.iter().map(page_bytes).sum::<usize>();
        // The batch first: the key table finds (and rehashes) its entries through it.
        let numbered: Arc<[Msg]> = numbered.into();
        self.batches.push_back(Logged {
            first_id,
            msgs: numbered.clone(),
        });
        for (id, m) in (first_id..).zip(numbered.iter()) {
            if !m.local_id.is_empty() {
                self.remember(m, id);
            }
            if let Some(c) = self.counters.get_mut(&m.receiver_id) {
                c.last_id = id;
            }
            if let Some(c) = self.counters.get_mut(&m.send_id) {
                c.last_id = id;
                if !m.local_id.is_empty() {
                    c.created_upto = c.created_upto.max(m.create_time);
                }
            }
        }
        self.next_id = first_id + numbered.len() as i64;
    }

    /// Forgets what a move committed to `natter.db` (the ids up to `upto`); returns the batches
    /// it let go, to be freed off the caller's locks.
    pub(super) fn forget(&mut self, upto: i64) -> Vec<Logged> {
        let mut forgotten = Vec::new();
        while self.batches.front().is_some_and(|b| b.last_id() <= upto) {
            forgotten.extend(self.batches.pop_front());
        }
        let freed: usize = forgotten
            .iter()
            .flat_map(|b| b.msgs.iter())
            .map(page_bytes)
            .sum();
        self.bytes = self.bytes.saturating_sub(freed);
        self.keys.retain(|id| *id > upto);
        self.counters.retain(|_, c| c.last_id > upto);
        self.convs.retain(|_, c| c.last_id > upto);
        self.member_reads.retain(|_, (_, id)| *id > upto);
        self.changed.0.retain(|_, (_, id)| *id > upto);
        self.moved_upto = self.moved_upto.max(upto);
        forgotten
    }

    /// Remembers the key of `m`, logged with this id.
    fn remember(&mut self, m: &Msg, id: i64) {
        let Tail {
            keys,
            hasher,
            batches,
            ..
        } = self;
        keys.insert_unique(key_hash(hasher, m), id, |id| {
            logged(batches, *id).map_or(0, |o| key_hash(hasher, o))
        });
    }
}

/// The logged messages with ids in `from + 1..=upto`, in id order.
pub(super) fn between(batches: &[Logged], from: i64, upto: i64) -> Vec<&Msg> {
    batches
        .iter()
        .flat_map(|b| (b.first_id..).zip(b.msgs.iter()))
        .filter(|(id, _)| *id > from && *id <= upto)
        .map(|(_, m)| m)
        .collect()
}

/// The logged message with this id.
fn logged(batches: &VecDeque<Logged>, id: i64) -> Option<&Msg> {
    let after = batches.partition_point(|b| b.first_id <= id);
    let batch = batches.get(after.checked_sub(1)?)?;
    batch.msgs.get(usize::try_from(id - batch.first_id).ok()?)
}

fn key_hash(hasher: &foldhash::fast::RandomState, m: &Msg) -> u64 {
    hasher.hash_one((&m.send_id, m.create_time, &m.local_id))
}

/// Whether `a` and `b` have the same resend key, compared without copying it.
pub(super) fn same_key(a: &Msg, b: &Msg) -> bool {
    a.create_time == b.create_time && a.local_id == b.local_id && a.send_id == b.send_id
}
