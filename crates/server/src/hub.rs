//! Who is connected to this node: user id → that user's devices (platform id, connection id,
//! outbox).
//!
//! The map is split into shards, each behind a `std::sync::Mutex`: every operation is a short,
//! synchronous critical section (look up, push into outboxes, done) and nothing awaits while a
//! shard is locked, so a blocking mutex is the right tool. Delivering to a user only queues
//! frames; the writing is done by each connection's own task.
//!
//! Invariant: an entry is removed only by the connection that created it (`unregister` compares
//! connection ids), so a replaced connection's late exit can never unregister its successor.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use natter_protocol::CloseCode;

use crate::{
    auth::TokenTag,
    outbox::{Cursor, Frame, Outbox, PushError},
};

/// Identifies one connection for the lifetime of the process.
pub type ConnId = u64;

const SHARDS: usize = 64;

#[derive(Debug, Clone)]
struct Device {
    platform: Box<str>,
    conn: ConnId,
    outbox: Arc<Outbox>,
    /// When it was registered (µs since the Unix epoch).
    since: i64,
    /// The token it presented (`None` in development mode): revocations close it.
    token: Option<Box<TokenTag>>,
}

type Shard = HashMap<Box<str>, Vec<Device>>;

/// Handle to the local connection registry. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Hub {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    next_conn: AtomicU64,
}

/// The outcome of queueing one frame to a user's devices.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Devices the frame was queued to.
    pub queued: usize,
    /// Devices whose queue was full: they are being disconnected as slow consumers.
    pub slow: usize,
}

impl Fanout {
    pub fn add(&mut self, other: Fanout) {
        self.queued += other.queued;
        self.slow += other.slow;
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            next_conn: AtomicU64::new(1),
        }
    }
}

impl Hub {
    fn shard(&self, user: &str) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(user) as usize) % SHARDS;
        // Nothing panics while a shard is locked; if it ever did, the map is still consistent.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection of `user` on `platform`, made at `since` (µs since the Unix
    /// epoch) with `token`. A connection already registered for the same user and platform is
    /// told to close with 4001 and replaced.
    pub fn register(
        &self,
        user: &str,
        platform: &str,
        outbox: Arc<Outbox>,
        since: i64,
        token: Option<Box<TokenTag>>,
    ) -> ConnId {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let device = Device {
            platform: platform.into(),
            conn,
            outbox,
            since,
            token,
        };
        let mut shard = self.shard(user);
        let devices = shard.entry(user.into()).or_default();
        match devices.iter_mut().find(|d| &*d.platform == platform) {
            Some(old) => {
                old.outbox.close(CloseCode::Replaced);
                *old = device;
            }
            None => devices.push(device),
        }
        conn
    }

    /// Removes the connection `conn`, if it is still the one registered for `user` on `platform`.
    /// Returns whether it was.
    pub fn unregister(&self, user: &str, platform: &str, conn: ConnId) -> bool {
        let mut shard = self.shard(user);
        let Some(devices) = shard.get_mut(user) else {
            return false;
        };
        let Some(i) = devices
            .iter()
            .position(|d| d.conn == conn && &*d.platform == platform)
        else {
            return false;
        };
        devices.swap_remove(i);
        if devices.is_empty() {
            shard.remove(user);
        }
        true
    }

    /// Queues `frame` to every device of `user` on this node except connection `skip`.
    pub fn send_to_user(
        &self,
        user: &str,
        frame: &Frame,
        cursor: Cursor,
        skip: Option<ConnId>,
    ) -> Fanout {
        let mut out = Fanout::default();
        let shard = self.shard(user);
        let Some(devices) = shard.get(user) else {
            return out;
        };
        for d in devices.iter().filter(|d| Some(d.conn) != skip) {
            match d.outbox.push(frame.clone(), cursor) {
                Ok(()) => out.queued += 1,
                Err(PushError::Full) => out.slow += 1,
                Err(PushError::Closed) => {}
            }
        }
        out
    }

    /// Queues `frame` to one connection.
    pub fn send_to_conn(&self, user: &str, conn: ConnId, frame: &Frame) -> Fanout {
        let shard = self.shard(user);
        let device = shard
            .get(user)
            .and_then(|devices| devices.iter().find(|d| d.conn == conn));
        match device.map(|d| d.outbox.push(frame.clone(), Cursor::None)) {
            Some(Ok(())) => Fanout { queued: 1, slow: 0 },
            Some(Err(PushError::Full)) => Fanout { queued: 0, slow: 1 },
            _ => Fanout::default(),
        }
    }

    /// How many connections `user` holds here on platforms other than `platform` (a new
    /// connection on `platform` would replace, not add).
    pub fn other_devices(&self, user: &str, platform: &str) -> usize {
        let shard = self.shard(user);
        shard.get(user).map_or(0, |ds| {
            ds.iter().filter(|d| &*d.platform != platform).count()
        })
    }

    /// The platforms on which `user` is connected to this node.
    pub fn platforms(&self, user: &str) -> Vec<String> {
        let shard = self.shard(user);
        shard
            .get(user)
            .map(|ds| ds.iter().map(|d| d.platform.to_string()).collect())
            .unwrap_or_default()
    }

    /// Asks `user`'s connection on `platform` to close with `code` if it was registered before
    /// `before` (µs; 0: whenever): a login on another node at `before` replaces it, never a
    /// login made here after it (the other node's notice can arrive late).
    pub fn close_platform(&self, user: &str, platform: &str, code: CloseCode, before: i64) {
        let shard = self.shard(user);
        if let Some(devices) = shard.get(user) {
            let older = |d: &&Device| before == 0 || d.since < before;
            for d in devices
                .iter()
                .filter(|d| &*d.platform == platform)
                .filter(older)
            {
                d.outbox.close(code);
            }
        }
    }

    /// Asks every connection of `user` here registered before `before` (µs; 0: whenever) to
    /// close with `code` (the server API's disconnect).
    pub fn close_user(&self, user: &str, code: CloseCode, before: i64) {
        let shard = self.shard(user);
        if let Some(devices) = shard.get(user) {
            for d in devices.iter().filter(|d| before == 0 || d.since < before) {
                d.outbox.close(code);
            }
        }
    }

    /// The connection `conn` of `user` now holds `token` (a token refresh).
    pub fn set_token(&self, user: &str, conn: ConnId, token: Option<Box<TokenTag>>) {
        let mut shard = self.shard(user);
        if let Some(d) = shard
            .get_mut(user)
            .and_then(|devices| devices.iter_mut().find(|d| d.conn == conn))
        {
            d.token = token;
        }
    }

    /// Asks the connections whose token `revoked(user, token)` says is revoked to close with
    /// 4002: those of `user`, or with no user, every connection here. Returns how many.
    pub fn close_revoked(
        &self,
        user: Option<&str>,
        revoked: impl Fn(&str, &TokenTag) -> bool,
    ) -> usize {
        let mut closed = 0;
        let mut close = |user: &str, devices: &[Device]| {
            for d in devices {
                if d.token.as_deref().is_some_and(|t| revoked(user, t)) {
                    d.outbox.close(CloseCode::BadToken);
                    closed += 1;
                }
            }
        };
        match user {
            Some(user) => {
                let shard = self.shard(user);
                if let Some(devices) = shard.get(user) {
                    close(user, devices);
                }
            }
            None => {
                for shard in self.shards.iter() {
                    let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
                    for (user, devices) in shard.iter() {
                        close(user, devices);
                    }
                }
            }
        }
        closed
    }

    /// Calls `f(user, platform)` for every connection here (presence refresh).
    pub fn for_each_device(&self, mut f: impl FnMut(&str, &str)) {
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (user, devices) in shard.iter() {
                for d in devices {
                    f(user, &d.platform);
                }
            }
        }
    }

    /// Asks every connection to close with `code` (used by graceful shutdown).
    pub fn close_all(&self, code: CloseCode) {
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for d in shard.values().flatten() {
                d.outbox.close(code);
            }
        }
    }

    /// Connections registered right now (walks every shard: for tests and diagnostics; the
    /// node limit counts sessions in `server::Sessions`).
    pub fn connection_count(&self) -> usize {
        let mut n = 0;
        self.for_each_device(|_, _| n += 1);
        n
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn outbox() -> Arc<Outbox> {
        Arc::new(Outbox::new(16, 1 << 20))
    }

    #[test]
    fn relogin_replaces_and_old_exit_does_not_unregister_new() {
        let hub = Hub::default();
        let (a, b) = (outbox(), outbox());
        let first = hub.register("u", "web", a.clone(), 1, None);
        let second = hub.register("u", "web", b.clone(), 2, None);
        assert_eq!(a.close_requested(), Some(CloseCode::Replaced));
        assert_eq!(hub.connection_count(), 1);
        // The old connection's exit comes late: it must not remove the new one.
        assert!(!hub.unregister("u", "web", first));
        let f = hub.send_to_user("u", &Frame::from_static("x"), Cursor::None, None);
        assert_eq!(f.queued, 1);
        assert_eq!(b.drain(&mut VecDeque::new()), None);
        assert!(hub.unregister("u", "web", second));
        assert_eq!(hub.connection_count(), 0);
    }

    #[test]
    fn send_skips_the_sending_connection() {
        let hub = Hub::default();
        let phone = hub.register("u", "phone", outbox(), 1, None);
        hub.register("u", "desk", outbox(), 2, None);
        let f = hub.send_to_user("u", &Frame::from_static("x"), Cursor::None, Some(phone));
        assert_eq!(f, Fanout { queued: 1, slow: 0 });
        let mut platforms = hub.platforms("u");
        platforms.sort();
        assert_eq!(platforms, vec!["desk", "phone"]);
    }

    #[test]
    fn a_login_elsewhere_closes_only_older_connections() {
        let hub = Hub::default();
        let phone = outbox();
        hub.register("u", "phone", phone.clone(), 100, None);
        // A notice of a login made before this connection (it arrived late): kept.
        hub.close_platform("u", "phone", CloseCode::Replaced, 50);
        assert_eq!(phone.close_requested(), None);
        hub.close_platform("u", "desk", CloseCode::Replaced, 200);
        assert_eq!(phone.close_requested(), None);
        hub.close_platform("u", "phone", CloseCode::Replaced, 200);
        assert_eq!(phone.close_requested(), Some(CloseCode::Replaced));
    }
}
