//! Property tests over the HTTP API's inputs: generated query strings of the history routes (a
//! stream's, a group's, a conversation's) and of the WebSocket upgrade, and generated JSON
//! bodies of every route that takes one (groups, conversations, the server API's revocations),
//! sent to a real server. The expected
//! answer of each (its status, and the `error` of a refusal) is computed here from the rules of
//! docs/protocol.md; whatever the input, the server answers and goes on answering.

mod common;

use std::sync::OnceLock;

use common::{TestServer, groups::create_group, start, test_config};
use natter_protocol::ids::check_user_id;
use proptest::prelude::*;
use serde_json::Value;
use tokio::runtime::Runtime;

struct Fixture {
    runtime: Runtime,
    server: TestServer,
    group: String,
}

/// One server for every case (the API's per-user request rate is off: these are many calls
/// of one user, and not what is tested here).
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (server, group) = runtime.block_on(async {
            let mut config = test_config();
            config.limits.http.per_second = 0.0;
            config.groups.max_groups_per_user = 100_000;
            config.service.key = KEY.into();
            let server = start(config).await;
            let group = create_group(&server, "fuzzer", &["member"]).await;
            (server, group)
        });
        Fixture {
            runtime,
            server,
            group,
        }
    })
}

/// The server API's key of the fixture.
const KEY: &str = "fuzz-http-service-key-of-32-bytes";

/// Sends a request as `fuzzer`; returns the status and the JSON answer (`Null` if none).
fn call(method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    call_with(method, path, &[], body)
}

/// The same with extra headers.
fn call_with(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value) {
    let f = fixture();
    f.runtime.block_on(async {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}user_id=fuzzer");
        let body = body.unwrap_or("");
        let (status, text) =
            common::http_request_text(f.server.addr, method, &path, headers, body).await;
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, value)
    })
}

/// A value for a numeric query parameter: numbers in and out of range, and not numbers.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..2000).prop_map(|n| n.to_string()),
        (-5i64..0).prop_map(|n| n.to_string()),
        Just("99999999999999999999".to_owned()),
        Just(String::new()),
        "[a-z+.]{1,4}",
        (0u32..100).prop_map(|n| format!("{n}x")),
    ]
}

fn non_negative_i64(v: &str) -> bool {
    v.parse::<i64>().is_ok_and(|n| n >= 0)
}

fn limit_ok(v: &str) -> bool {
    v.parse::<u32>().is_ok_and(|n| (1..=1000).contains(&n))
}

/// A JSON value of any shape, strings among them of every interesting length.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[ a-z]{0,8}".prop_map(Value::from),
        Just(Value::from("n".repeat(300))),
        Just(Value::from("   ")),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for `name`: valid names and every way to be invalid.
fn name_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "[a-z][ a-z]{0,20}".prop_map(Value::from),
        1 => any_json(),
    ]
}

fn name_ok(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| !s.trim().is_empty() && s.len() <= 256)
}

/// A member id: valid ids and invalid ones (a group's, empty, too long, control characters).
fn member_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => "[a-z0-9]{1,12}".prop_map(Value::from),
        1 => Just(Value::from("g_group")),
        1 => Just(Value::from("")),
        1 => Just(Value::from("u".repeat(200))),
        1 => Just(Value::from("a\u{7}b")),
        1 => any::<i64>().prop_map(Value::from),
    ]
}

/// A body for a route taking `{key: ...}` objects: the right object, extra keys, or any JSON.
fn object_of(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> impl Strategy<Value = Value> {
    let mut object = Vec::new();
    for (key, value) in fields {
        object.push((Just(key), prop::option::weighted(0.9, value)));
    }
    prop_oneof![
        4 => (object, prop::option::weighted(0.1, any_json())).prop_map(|(fields, extra)| {
            let mut map = serde_json::Map::new();
            for (k, v) in fields.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))) {
                map.insert(k.to_owned(), v);
            }
            if let Some(extra) = extra {
                map.insert("extra".into(), extra);
            }
            Value::Object(map)
        }),
        1 => any_json(),
    ]
}

/// Refused with 400 and this `error`, or answered with this success status.
fn expect(status: u16, answer: &Value, ok: Option<u16>, refusal: &str) {
    match ok {
        Some(code) => assert_eq!(status, code, "{answer}"),
        None => {
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["error"], refusal, "{answer}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn history_queries(
        after_seq in prop::option::of(number_text()),
        after_send_seq in prop::option::of(number_text()),
        limit in prop::option::of(number_text()),
        group in any::<bool>(),
    ) {
        let mut params = Vec::new();
        for (name, value) in [("after_seq", &after_seq), ("after_send_seq", &after_send_seq), ("limit", &limit)] {
            if let Some(v) = value {
                params.push(format!("{name}={v}"));
            }
        }
        let query = params.join("&");
        let (path, ok) = if group {
            // A group's history reads after_seq and limit; other parameters are not its own.
            let ok = after_seq.as_deref().is_none_or(non_negative_i64)
                && limit.as_deref().is_none_or(limit_ok);
            (format!("/api/v1/groups/{}/messages?{query}", fixture().group), ok)
        } else {
            let after = match (&after_seq, &after_send_seq) {
                (Some(_), Some(_)) => false,
                (Some(v), None) | (None, Some(v)) => non_negative_i64(v),
                (None, None) => true,
            };
            (format!("/api/v1/messages?{query}"), after && limit.as_deref().is_none_or(limit_ok))
        };
        let (status, answer) = call("GET", &path, None);
        expect(status, &answer, ok.then_some(200), "invalid_query");
        if ok {
            prop_assert!(answer["messages"].is_array() && answer["has_more"].is_boolean());
        }
    }

    #[test]
    fn upgrade_queries(
        since_seq in prop::option::of(number_text()),
        since_send_seq in prop::option::of(number_text()),
    ) {
        let mut params = Vec::new();
        for (name, value) in [("since_seq", &since_seq), ("since_send_seq", &since_send_seq)] {
            if let Some(v) = value {
                params.push(format!("{name}={v}"));
            }
        }
        // Each replay cursor, when given, is a non-negative integer.
        let ok = [&since_seq, &since_send_seq]
            .iter()
            .all(|v| v.as_deref().is_none_or(non_negative_i64));
        let f = fixture();
        let url = format!("{}?{}", f.server.url("fuzzer", "replay"), params.join("&"));
        let answer = f.runtime.block_on(common::connect_with(&url, &[]));
        match answer {
            Ok(_) => prop_assert!(ok, "{url} upgraded"),
            Err((status, body)) => {
                prop_assert!(!ok, "{url}: {status} {body}");
                prop_assert_eq!(status, 400);
                prop_assert!(body.contains("invalid_query"), "{}", body);
            }
        }
    }

    #[test]
    fn rename_bodies(body in object_of(vec![("name", name_value().boxed())])) {
        let ok = body.as_object().is_some_and(|o| {
            o.len() == 1 && o.get("name").is_some_and(name_ok)
        });
        let path = format!("/api/v1/groups/{}", fixture().group);
        let (status, answer) = call("PATCH", &path, Some(&body.to_string()));
        expect(status, &answer, ok.then_some(200), "invalid_request");
    }

    #[test]
    fn role_bodies(body in object_of(vec![(
        "role",
        prop_oneof![
            Just(Value::from("admin")), Just(Value::from("member")),
            Just(Value::from("owner")), any_json(),
        ].boxed(),
    )])) {
        let ok = body.as_object().is_some_and(|o| {
            o.len() == 1 && o.get("role").and_then(Value::as_str).is_some_and(|r| r == "admin" || r == "member")
        });
        let path = format!("/api/v1/groups/{}/members/member/role", fixture().group);
        let (status, answer) = call("PUT", &path, Some(&body.to_string()));
        expect(status, &answer, ok.then_some(200), "invalid_request");
    }

    #[test]
    fn create_and_add_bodies(
        body in object_of(vec![
            ("name", name_value().boxed()),
            ("members", prop_oneof![
                4 => prop::collection::vec(member_id(), 0..6).prop_map(Value::from),
                1 => any_json(),
            ].boxed()),
        ]),
        add in any::<bool>(),
    ) {
        let members_ok = |o: &serde_json::Map<String, Value>, required: bool| match o.get("members") {
            None => !required,
            Some(Value::Array(ids)) => ids.iter().all(|id| id.as_str().is_some_and(|s| check_user_id(s).is_ok())),
            Some(_) => false,
        };
        let (method, path, ok, success) = if add {
            // Adding takes {"members": [...]} alone.
            let ok = body.as_object().is_some_and(|o| o.len() == 1 && members_ok(o, true));
            ("POST", format!("/api/v1/groups/{}/members", fixture().group), ok, 200)
        } else {
            let ok = body.as_object().is_some_and(|o| {
                o.keys().all(|k| k == "name" || k == "members")
                    && o.get("name").is_some_and(name_ok)
                    && members_ok(o, false)
            });
            ("POST", "/api/v1/groups".to_owned(), ok, 201)
        };
        let (status, answer) = call(method, &path, Some(&body.to_string()));
        expect(status, &answer, ok.then_some(success), "invalid_request");
    }

    #[test]
    fn conversation_history_queries(
        before in prop::option::of(number_text()),
        after in prop::option::of(number_text()),
        limit in prop::option::of(number_text()),
        group in any::<bool>(),
    ) {
        let mut params = Vec::new();
        for (name, value) in [("before", &before), ("after", &after), ("limit", &limit)] {
            if let Some(v) = value {
                params.push(format!("{name}={v}"));
            }
        }
        // One side at most, each a non-negative integer; limit 1 to 1000.
        let ok = !(before.is_some() && after.is_some())
            && [&before, &after].iter().all(|v| v.as_deref().is_none_or(non_negative_i64))
            && limit.as_deref().is_none_or(limit_ok);
        let conv = if group { fixture().group.clone() } else { "d:fuzzer:member".to_owned() };
        let path = format!("/api/v1/conversations/{conv}/messages?{}", params.join("&"));
        let (status, answer) = call("GET", &path, None);
        expect(status, &answer, ok.then_some(200), "invalid_query");
        if ok {
            prop_assert!(answer["messages"].is_array() && answer["has_more"].is_boolean());
        }
    }

    #[test]
    fn conversation_bodies(
        settings in object_of(vec![
            ("pinned", prop_oneof![any::<bool>().prop_map(Value::from), any_json()].boxed()),
            ("muted", prop_oneof![any::<bool>().prop_map(Value::from), any_json()].boxed()),
        ]),
        read in object_of(vec![(
            "conv_seq",
            prop_oneof![(-3i64..100).prop_map(Value::from), any_json()].boxed(),
        )]),
        hide in object_of(vec![(
            "conv_seqs",
            prop_oneof![
                prop::collection::vec((-2i64..50).prop_map(Value::from), 0..4).prop_map(Value::from),
                Just(Value::from(vec![1; 1001])),
                any_json(),
            ].boxed(),
        )]),
    ) {
        let conv = "/api/v1/conversations/d:fuzzer:member";
        let only = |o: &serde_json::Map<String, Value>, keys: &[&str]| o.keys().all(|k| keys.contains(&k.as_str()));
        // Each of pinned and muted absent, null or a boolean.
        let ok = settings.as_object().is_some_and(|o| {
            only(o, &["pinned", "muted"]) && o.values().all(|v| v.is_null() || v.is_boolean())
        });
        let (status, answer) = call("PATCH", conv, Some(&settings.to_string()));
        expect(status, &answer, ok.then_some(200), "invalid_request");
        // A conv_seq of 1 or more.
        let ok = read.as_object().is_some_and(|o| {
            only(o, &["conv_seq"]) && o.get("conv_seq").and_then(Value::as_i64).is_some_and(|n| n >= 1)
        });
        let (status, answer) = call("POST", &format!("{conv}/read"), Some(&read.to_string()));
        expect(status, &answer, ok.then_some(200), "invalid_request");
        // 1 to 1000 conv_seqs of 1 or more.
        let ok = hide.as_object().is_some_and(|o| {
            only(o, &["conv_seqs"]) && o.get("conv_seqs").and_then(Value::as_array).is_some_and(|a| {
                (1..=1000).contains(&a.len()) && a.iter().all(|n| n.as_i64().is_some_and(|n| n >= 1))
            })
        });
        let (status, answer) = call("POST", &format!("{conv}/hide"), Some(&hide.to_string()));
        expect(status, &answer, ok.then_some(200), "invalid_request");
    }

    #[test]
    fn revoke_bodies(
        user in object_of(vec![(
            "before",
            prop_oneof![(0u64..u64::MAX).prop_map(Value::from), any_json()].boxed(),
        )]),
        token in object_of(vec![
            ("jti", member_id().boxed()),
            ("expires_at", prop_oneof![(0u64..u64::MAX).prop_map(Value::from), any_json()].boxed()),
        ]),
    ) {
        let key = [("X-Api-Key", KEY)];
        let only = |o: &serde_json::Map<String, Value>, keys: &[&str]| o.keys().all(|k| keys.contains(&k.as_str()));
        // `before`: absent, null, or Unix seconds.
        let ok = user.as_object().is_some_and(|o| {
            only(o, &["before"]) && o.get("before").is_none_or(|v| v.is_null() || v.is_u64())
        });
        let (status, answer) = call_with("POST", "/api/v1/users/someone/revoke", &key, Some(&user.to_string()));
        expect(status, &answer, ok.then_some(200), "invalid_request");
        // A `jti` that is an id, and `expires_at` in Unix seconds.
        let ok = token.as_object().is_some_and(|o| {
            only(o, &["jti", "expires_at"])
                && o.get("jti").and_then(Value::as_str).is_some_and(|j| natter_protocol::ids::check_id(j).is_ok())
                && o.get("expires_at").is_some_and(Value::is_u64)
        });
        let (status, answer) = call_with("POST", "/api/v1/tokens/revoke", &key, Some(&token.to_string()));
        expect(status, &answer, ok.then_some(200), "invalid_request");
    }

    #[test]
    fn bodies_that_are_not_json(text in "[^\u{0}]{0,40}") {
        prop_assume!(serde_json::from_str::<Value>(&text).is_err());
        let path = format!("/api/v1/groups/{}", fixture().group);
        let (status, answer) = call("PATCH", &path, Some(&text));
        expect(status, &answer, None, "invalid_request");
    }
}

/// The server answers beside (and after) the properties above, which share it.
#[test]
fn the_server_keeps_answering() {
    for _ in 0..20 {
        let (status, answer) = call("GET", "/api/v1/seq", None);
        assert_eq!(status, 200, "{answer}");
    }
}
