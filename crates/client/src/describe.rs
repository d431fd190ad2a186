//! One line of text for a frame, as a terminal shows it: messages with their sender, receipts,
//! group notices and ephemeral events in words instead of raw ids and JSON.

use natter_protocol::{Msg, conversation::Change, is_ephemeral, is_group_id, msg_type};

/// How a terminal shows `m`.
pub fn describe(m: &Msg) -> String {
    let place = if is_group_id(&m.receiver_id) {
        format!(" in {}", m.receiver_id)
    } else {
        String::new()
    };
    match m.msg_type {
        msg_type::READ if m.conv_seq > 0 => {
            format!("{}{place} read up to #{}", m.send_id, m.conv_seq)
        }
        msg_type::READ => format!("{} read your messages up to {}", m.send_id, m.content),
        msg_type::RECALL => match Change::parse(&m.content) {
            Some(c) => format!("{}{place} recalled #{}", m.send_id, c.conv_seq),
            // A recalled entry itself: its content is gone.
            None => format!("{}{place}: (message recalled)", m.send_id),
        },
        msg_type::EDIT => match Change::parse(&m.content) {
            Some(Change {
                conv_seq,
                content: Some(text),
            }) => format!("{}{place} edited #{conv_seq}: {text}", m.send_id),
            _ => format!("{}{place} edited a message", m.send_id),
        },
        msg_type::CONVERSATION_UPDATED => {
            format!("({} on another device: {})", m.conv_id, m.content)
        }
        t if (msg_type::GROUP_CREATED..=msg_type::GROUP_INVITED).contains(&t) => notice(m),
        t if is_ephemeral(t) => format!("{}{place} ({t}): {}", m.send_id, m.content),
        _ => format!("{}{place}: {}", m.send_id, m.content),
    }
}

/// A group notice: `{"group_id", "name", "actor", "users", "count"}` in words.
fn notice(m: &Msg) -> String {
    let content: serde_json::Value = serde_json::from_str(&m.content).unwrap_or_default();
    let name = content["name"].as_str().unwrap_or(&m.receiver_id);
    let actor = content["actor"].as_str().unwrap_or(&m.send_id);
    let users: Vec<&str> = content["users"]
        .as_array()
        .map(|u| u.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let count = content["count"].as_u64().unwrap_or(users.len() as u64) as usize;
    let mut who = users.join(", ");
    if count > users.len() {
        who.push_str(&format!(" and {} more", count - users.len()));
    }
    let what = match m.msg_type {
        msg_type::GROUP_CREATED => format!("created the group with {who}"),
        msg_type::GROUP_MEMBERS_ADDED => format!("added {who}"),
        msg_type::GROUP_MEMBER_LEFT => "left".to_owned(),
        msg_type::GROUP_DISSOLVED => "dissolved the group".to_owned(),
        msg_type::GROUP_RENAMED => "renamed the group".to_owned(),
        msg_type::GROUP_MEMBER_REMOVED => format!("removed {who}"),
        msg_type::GROUP_ROLE_CHANGED => format!("changed the role of {who}"),
        msg_type::GROUP_INVITED => format!("invited {who}"),
        other => format!("changed the group ({other})"),
    };
    format!("[{name}] {actor} {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(msg_type: i32, receiver: &str, content: &str) -> Msg {
        Msg {
            send_id: "alice".into(),
            receiver_id: receiver.into(),
            msg_type,
            content: content.into(),
            ..Msg::default()
        }
    }

    #[test]
    fn frames_in_words() {
        assert_eq!(describe(&msg(0, "bob", "hi")), "alice: hi");
        assert_eq!(describe(&msg(1, "g_1", "hi")), "alice in g_1: hi");
        assert_eq!(
            describe(&msg(23, "bob", "0199-id")),
            "alice read your messages up to 0199-id"
        );
        assert_eq!(describe(&msg(100, "bob", "typing")), "alice (100): typing");
        let receipt = Msg {
            conv_seq: 7,
            ..msg(23, "bob", "")
        };
        assert_eq!(describe(&receipt), "alice read up to #7");
        assert_eq!(
            describe(&msg(25, "g_1", r#"{"conv_seq":3}"#)),
            "alice in g_1 recalled #3"
        );
        assert_eq!(describe(&msg(25, "bob", "")), "alice: (message recalled)");
        assert_eq!(
            describe(&msg(26, "bob", r#"{"conv_seq":3,"content":"fixed"}"#)),
            "alice edited #3: fixed"
        );
        let created =
            r#"{"group_id":"g_1","name":"team","actor":"alice","users":["alice","bob"],"count":3}"#;
        assert_eq!(
            describe(&msg(2, "g_1", created)),
            "[team] alice created the group with alice, bob and 1 more"
        );
        let left = r#"{"group_id":"g_1","name":"team","actor":"bob","users":["bob"],"count":1}"#;
        assert_eq!(describe(&msg(4, "g_1", left)), "[team] bob left");
        assert_eq!(
            describe(&msg(11, "g_1", "not json")),
            "[g_1] alice invited "
        );
    }
}
