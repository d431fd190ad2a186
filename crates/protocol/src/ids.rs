//! The rules for ids and the other client-given fields that are stored: one place, used by the
//! WebSocket route (path ids), message decoding (`receiver_id`, `local_id`, `content`), the
//! HTTP API (path and body ids) and token verification (`sub`).

use crate::is_group_id;

/// The longest user, platform or group id, and the longest `local_id`, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why an id is refused, for the error's detail.
pub fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        Err("is empty")
    } else if id.len() > MAX_ID_LEN {
        Err("is longer than 128 bytes")
    } else if id.chars().any(char::is_control) {
        Err("contains control characters")
    } else {
        Ok(())
    }
}

/// A user id: an id that does not start with the group prefix (reserved for groups).
pub fn check_user_id(id: &str) -> Result<(), &'static str> {
    check_id(id)?;
    if is_group_id(id) {
        return Err("starts with g_ (reserved for group ids)");
    }
    Ok(())
}

/// A message's `local_id`: empty (no resend detection), or at most [`MAX_ID_LEN`] bytes without
/// control characters.
pub fn check_local_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Ok(());
    }
    check_id(id)
}

/// Text that is stored: anything but NUL (which PostgreSQL's text cannot hold).
pub fn check_stored_text(text: &str) -> Result<(), &'static str> {
    if text.contains('\0') {
        return Err("contains a NUL character");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded_and_printable_and_user_ids_are_not_group_ids() {
        assert!(check_id("alice").is_ok());
        assert!(check_id(&"a".repeat(MAX_ID_LEN)).is_ok());
        assert!(check_id(&"a".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(check_id("").is_err());
        for bad in ["a\0b", "a\nb", "a\u{7f}", "\u{85}x"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_id("g_team").is_ok());
        assert!(check_user_id("g_team").is_err());
        assert!(check_user_id("team").is_ok());
        assert!(check_local_id("").is_ok());
        assert!(check_local_id(&"x".repeat(129)).is_err());
        assert!(check_stored_text("fine\ttext\n").is_ok());
        assert!(check_stored_text("no\0nul").is_err());
    }
}
