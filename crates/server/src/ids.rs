//! Server-assigned message ids: UUIDv7 (RFC 9562), time-ordered and strictly increasing within
//! a node.
//!
//! Layout: 48-bit Unix milliseconds, version 7, a 12-bit counter in `rand_a` (RFC 9562 method 1:
//! ids made in the same millisecond still sort in order; past 4,096 in one millisecond the
//! timestamp runs ahead by a millisecond), the variant, and 62 random bits in `rand_b`, which keep
//! ids of different nodes apart. The generator is one atomic and a thread-local PRNG: no lock and
//! no system call per id (`uuid::Uuid::now_v7` makes a `getrandom` call for every id).

use std::{
    cell::Cell,
    hash::{BuildHasher, RandomState},
    sync::atomic::{AtomicU64, Ordering},
};

use uuid::Uuid;

/// Last issued `(millis << 12) | counter`.
static LAST: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()));
}

/// SplitMix64: fast, and plenty for the uniqueness bits of an id (not a secret).
fn random_u64() -> u64 {
    RNG.with(|state| {
        let s = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// A new UUIDv7 for a message accepted at `now_ms` (Unix milliseconds).
pub fn message_id(now_ms: i64) -> Uuid {
    let floor = (now_ms.max(0) as u64) << 12;
    let prev = LAST
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
            Some(floor.max(last + 1))
        })
        .unwrap_or_else(|last| last);
    let stamp = floor.max(prev + 1);
    let millis = stamp >> 12;
    let counter = (stamp & 0xfff) as u16;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6..8].copy_from_slice(&(0x7000 | counter).to_be_bytes());
    bytes[8..].copy_from_slice(&random_u64().to_be_bytes());
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_strictly_increasing() {
        // Ahead of the clock: ids other tests make meanwhile (at the clock) cannot move it.
        let now = crate::clock::now_millis() + 60_000;
        let mut prev = message_id(now);
        assert_eq!(prev.get_version_num(), 7);
        assert_eq!(prev.get_variant(), uuid::Variant::RFC4122);
        for _ in 0..10_000 {
            let id = message_id(now);
            assert!(id > prev, "{id} after {prev}");
            assert!(id.to_string() > prev.to_string());
            prev = id;
        }
        // The timestamp is the millisecond given (or slightly ahead after 4,096 in one ms).
        let ts = (u128::from_be_bytes(*prev.as_bytes()) >> 80) as u64;
        assert!(ts >= now as u64 && ts <= now as u64 + 5, "{ts}");
    }
}
