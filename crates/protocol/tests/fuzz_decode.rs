//! Property tests over inbound frame decoding: no input makes it panic, and every refusal is
//! classified. Bounded case counts so CI stays fast.

use natter_protocol::{ErrorReason, decode_client_msg};
use proptest::prelude::*;

const FIELDS: &[&str] = &[
    "send_id",
    "receiver_id",
    "local_id",
    "server_id",
    "create_time",
    "send_time",
    "seq",
    "msg_type",
    "content_type",
    "content",
    "is_read",
    "unknown",
];

fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[^\"\\\\]{0,12}".prop_map(|s| format!("\"{s}\"")),
        Just("\"\\ud800\"".to_string()),
        Just("1e999".to_string()),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(inner, 0..4).prop_map(|v| format!("{{\"k\":{}}}", v.join(","))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        let _ = decode_client_msg(&text);
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_client_msg(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn objects_with_msg_fields_of_any_type_decode_or_are_classified(
        fields in prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..12)
    ) {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let text = format!("{{{}}}", body.join(","));
        match decode_client_msg(&text) {
            Ok(msg) => prop_assert!(!msg.receiver_id.is_empty()),
            Err(e) => prop_assert!(ErrorReason::ALL.contains(&e.reason)),
        }
    }
}
