//! Retention: deletes whole chunks, oldest first, once their newest message is older than the
//! cutoff, so a message can outlive the cutoff by about one move, never go before it. Retention
//! may delete an inbox chunk before a sent chunk pointing into it; the messages it held are past
//! the cutoff, and the sent stream leaves them out too ([`resolve`](super::resend::resolve));
//! so does a conversation's history, whose chunks (`conv_chunks`) go the same way.

use super::{
    SqliteStore,
    compact::{clear_log, compact},
    read::chunks_table,
};
use crate::store::{StoreError, Stream};

/// Chunks looked at per statement, so that moves are never held up for long.
const PRUNE_CHUNKS: i64 = 2000;

impl SqliteStore {
    /// Moves the log, then deletes the chunks whose newest message was sent before
    /// `before_ms`, oldest first; returns how many messages left the inboxes.
    pub(super) async fn prune_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        compact(&self.hot, &self.writer).await?;
        clear_log(&self.hot).await?;
        let mut pruned = 0;
        let conv_chunks = [(None, "conv_chunks")];
        let streams = [Stream::Inbox, Stream::Sent].map(|s| (Some(s), chunks_table(s)));
        for (stream, table) in streams.into_iter().chain(conv_chunks) {
            loop {
                let mut writer = self.writer().await;
                // Chunks are written in move order, so their ids follow time: the old ones are
                // a prefix (a chunk of a move may wait behind a slightly newer one of the same
                // move, until the next pass).
                let rows: Vec<(i64, i64, i64)> = sqlx::query_as(&format!(
                    "SELECT id, last_time, last - first + 1 FROM {table} ORDER BY id LIMIT ?"
                ))
                .bind(PRUNE_CHUNKS)
                .fetch_all(&mut *writer)
                .await?;
                let old = rows.iter().take_while(|r| r.1 < before_ms).count();
                let Some(&(upto, _, _)) = old.checked_sub(1).map(|i| &rows[i]) else {
                    break;
                };
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                sqlx::query(&format!("DELETE FROM {table} WHERE id <= ?"))
                    .bind(upto)
                    .execute(&mut *tx)
                    .await?;
                if stream == Some(Stream::Sent) {
                    sqlx::query("DELETE FROM sent_keys WHERE chunk <= ?")
                        .bind(upto)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                if stream == Some(Stream::Inbox) {
                    pruned += rows[..old].iter().map(|r| r.2 as u64).sum::<u64>();
                }
                if old < rows.len() || rows.len() < PRUNE_CHUNKS as usize {
                    break;
                }
            }
        }
        Ok(pruned)
    }
}
