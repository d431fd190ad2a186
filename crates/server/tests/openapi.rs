//! `/api/v1/openapi.json` describes every route the server answers: the routes registered in
//! the source (every `.route("...", method(...))` under src/) are exactly those of the table
//! the document is built from, and the server serves it.

mod common;

use std::collections::BTreeSet;

use common::{start, test_config};
use natter::http::openapi::{ROUTES, document};

/// `(method, path)` of every `.route(` call in `src`, read from the text.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut dirs = vec![std::path::PathBuf::from(src)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices(".route(") {
                // The call's text, to its closing parenthesis.
                let rest = &text[at + ".route(".len()..];
                let mut depth = 1;
                let end = rest
                    .char_indices()
                    .find(|(_, c)| {
                        depth += match c {
                            '(' => 1,
                            ')' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map(|(i, _)| i)
                    .unwrap();
                let call = &rest[..end];
                let route = call.split('"').nth(1).unwrap().to_owned();
                let methods = &call[call.find(',').unwrap()..];
                for m in ["get", "post", "put", "patch", "delete"] {
                    let named = methods.match_indices(&format!("{m}(")).any(|(i, _)| {
                        i == 0
                            || !methods.as_bytes()[i - 1].is_ascii_alphanumeric()
                                && methods.as_bytes()[i - 1] != b'_'
                    });
                    if named {
                        found.insert((m.to_owned(), route.clone()));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_route_is_described_and_nothing_else() {
    let described: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    let registered = routes_in_source();
    assert!(registered.len() > 20, "{registered:?}");
    let missing: Vec<_> = registered.difference(&described).collect();
    let extra: Vec<_> = described.difference(&registered).collect();
    assert!(
        missing.is_empty(),
        "routes not in openapi::ROUTES: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "openapi::ROUTES names routes the server lacks: {extra:?}"
    );
    // And the document holds each.
    let doc = document();
    for (method, path) in &registered {
        assert!(
            doc["paths"][path][method]["summary"].is_string(),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn the_server_serves_the_document() {
    let server = start(test_config()).await;
    let (status, body) = server.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/api/v1/conversations/{conv_id}/messages"]["get"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["serviceKey"]["name"],
        "X-Api-Key"
    );
}
