//! Property tests over inbound frame decoding. Most generated frames are well-formed JSON objects
//! with the `Msg` fields, each value of the right type or a wrong one, so that the paths that
//! matter (valid JSON with wrong fields) are reached; the expected outcome of each is computed
//! here, from the rules of docs/protocol.md, not by the decoder. Bounded case counts keep CI
//! fast.

use natter_protocol::{ErrorReason, Msg, decode_client_msg};
use proptest::prelude::*;
use serde_json::Value;

/// The fields of `Msg` a client may send, and the type each takes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Int64,
    Int32,
    Bool,
}

const FIELDS: &[(&str, Kind)] = &[
    ("send_id", Kind::Text),
    ("receiver_id", Kind::Text),
    ("local_id", Kind::Text),
    ("server_id", Kind::Text),
    ("content", Kind::Text),
    ("create_time", Kind::Int64),
    ("send_time", Kind::Int64),
    ("seq", Kind::Int64),
    ("send_seq", Kind::Int64),
    ("conv_id", Kind::Text),
    ("conv_seq", Kind::Int64),
    ("msg_type", Kind::Int32),
    ("content_type", Kind::Int32),
    ("is_read", Kind::Bool),
];

/// Any JSON value: scalars of every type, big and fractional numbers, arrays, objects.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,3}", inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Whether `v` is a value the field of kind `k` accepts.
fn fits(k: Kind, v: &Value) -> bool {
    match k {
        Kind::Text => v.is_string(),
        Kind::Int64 => v.is_i64() || v.as_u64().is_some_and(|n| i64::try_from(n).is_ok()),
        Kind::Int32 => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        Kind::Bool => v.is_boolean(),
    }
}

/// A value for a field of kind `k`: mostly of the right type, often of a wrong one.
fn value_for(k: Kind) -> BoxedStrategy<Value> {
    prop_oneof![3 => right_value(k), 1 => any_value()].boxed()
}

/// A value of the type a field of kind `k` takes (out of range for `Int32` at times).
fn right_value(k: Kind) -> BoxedStrategy<Value> {
    match k {
        Kind::Text => prop_oneof![
            Just(String::new()),
            ".{0,16}",
            "[a-z]{120,136}",
            Just("a\u{0}b".to_string())
        ]
        .prop_map(Value::String)
        .boxed(),
        Kind::Int64 => any::<i64>().prop_map(Value::from).boxed(),
        Kind::Int32 => prop_oneof![0..30i64, any::<i32>().prop_map(i64::from), any::<i64>()]
            .prop_map(Value::from)
            .boxed(),
        Kind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
    }
}

/// An object's members in order: known fields (sometimes twice) and unknown ones.
fn members() -> impl Strategy<Value = Vec<(String, Value)>> {
    let known = prop::sample::select(FIELDS)
        .prop_flat_map(|(name, k)| (Just(name.to_string()), value_for(k)));
    let unknown = ("x_[a-z]{1,4}", any_value());
    prop::collection::vec(prop_oneof![4 => known, 1 => unknown], 0..14)
}

/// An object whose members are all well typed and distinct, in any order: every strict prefix
/// of its text fails only for being unfinished.
fn valid_members() -> impl Strategy<Value = Vec<(String, Value)>> {
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = FIELDS
        .iter()
        .map(|(name, k)| {
            let k = if *k == Kind::Int32 { Kind::Bool } else { *k };
            proptest::option::of((Just(name.to_string()), right_value(k))).boxed()
        })
        .collect();
    (fields, any::<prop::sample::Index>()).prop_map(|(fields, rotate)| {
        let mut members: Vec<(String, Value)> = fields.into_iter().flatten().collect();
        if !members.is_empty() {
            let at = rotate.index(members.len());
            members.rotate_left(at);
        }
        // Int32 fields hold a small integer here (out of range would refuse the frame).
        for (name, value) in &mut members {
            if name == "msg_type" || name == "content_type" {
                *value = Value::from(i64::from(value.as_bool().unwrap_or(false)));
            }
        }
        members
    })
}

fn object_text(members: &[(String, Value)]) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// What decoding `members` as a frame must give: the message, or the reason it is refused.
fn expected(members: &[(String, Value)]) -> Result<Msg, ErrorReason> {
    let mut seen = std::collections::HashSet::new();
    for (name, value) in members {
        let Some((_, k)) = FIELDS.iter().find(|(f, _)| f == name) else {
            continue; // unknown fields are ignored
        };
        if !seen.insert(name.as_str()) || !fits(*k, value) {
            return Err(ErrorReason::InvalidMsg);
        }
    }
    let get = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let text = |name: &str| get(name).and_then(Value::as_str).unwrap_or("").to_owned();
    let int = |name: &str| get(name).and_then(Value::as_i64).unwrap_or(0);
    let msg = Msg {
        send_id: text("send_id"),
        receiver_id: text("receiver_id"),
        local_id: text("local_id"),
        server_id: text("server_id"),
        content: text("content"),
        create_time: int("create_time"),
        send_time: int("send_time"),
        seq: int("seq"),
        send_seq: int("send_seq"),
        conv_id: text("conv_id"),
        conv_seq: int("conv_seq"),
        msg_type: int("msg_type") as i32,
        content_type: int("content_type") as i32,
        is_read: get("is_read").and_then(Value::as_bool).unwrap_or(false),
    };
    if msg.receiver_id.is_empty() {
        return Err(ErrorReason::MissingReceiver);
    }
    // What is stored is bounded and storable; what the server keeps for itself is refused.
    let id_ok = |s: &str| s.len() <= 128 && !s.chars().any(char::is_control);
    if !id_ok(&msg.receiver_id) || !id_ok(&msg.local_id) || msg.content.contains('\0') {
        return Err(ErrorReason::InvalidMsg);
    }
    if (2..=12).contains(&msg.msg_type) || msg.msg_type == 24 {
        return Err(ErrorReason::UnsupportedMsgType);
    }
    if msg.content_type == 2 {
        return Err(ErrorReason::InvalidMsg);
    }
    Ok(msg)
}

/// The `local_id` an error reply carries: the frame's, when it has exactly one, it is text,
/// and it is a valid local_id (at most 128 bytes, no control characters).
fn expected_local_id(members: &[(String, Value)]) -> String {
    let ids: Vec<&Value> = members
        .iter()
        .filter(|(k, _)| k == "local_id")
        .map(|(_, v)| v)
        .collect();
    match ids.as_slice() {
        [Value::String(s)] if s.len() <= 128 && !s.chars().any(char::is_control) => s.clone(),
        _ => String::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn objects_decode_exactly_as_the_rules_say(members in members()) {
        let text = object_text(&members);
        match (decode_client_msg(&text), expected(&members)) {
            (Ok(msg), Ok(want)) => prop_assert_eq!(msg, want),
            (Err(e), Err(reason)) => {
                prop_assert_eq!(e.reason, reason, "{}: {}", text, e.detail);
                prop_assert_eq!(e.local_id, expected_local_id(&members));
            }
            (got, want) => prop_assert!(false, "{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn json_that_is_not_an_object_is_not_a_msg(value in any_value()) {
        // An array of strings would fill the fields in their order if decoding allowed it.
        let value = if value.is_object() { Value::Array(vec![value]) } else { value };
        let e = decode_client_msg(&value.to_string()).unwrap_err();
        prop_assert_eq!(e.reason, ErrorReason::InvalidMsg);
    }

    #[test]
    fn a_cut_frame_is_invalid_json(members in valid_members(), cut in any::<prop::sample::Index>()) {
        let text = object_text(&members);
        // Every strict prefix of an object is unfinished JSON (cut on a character boundary).
        let at = cut.index(text.len());
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let e = decode_client_msg(&text[..at]).unwrap_err();
        prop_assert_eq!(e.reason, ErrorReason::InvalidJson, "{:?}", &text[..at]);
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        let _ = decode_client_msg(&text);
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_client_msg(&String::from_utf8_lossy(&bytes));
    }
}
