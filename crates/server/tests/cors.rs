//! Browser apps served from another origin: the HTTP API answers the preflights of the origins
//! in `auth.allowed_origins` and lets them read its answers, and nobody else's; the SDK's files
//! are readable from anywhere.

mod common;

use common::{http_exchange, start, test_config};

const APP: &str = "https://app.example";

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_may_call_the_api_and_anyone_may_load_the_sdk() {
    let mut config = test_config();
    config.auth.allowed_origins = vec![APP.into()];
    let server = start(config).await;

    // The preflight of a call with a token.
    let preflight = [
        ("Origin", APP),
        ("Access-Control-Request-Method", "PATCH"),
        (
            "Access-Control-Request-Headers",
            "authorization, content-type",
        ),
    ];
    let path = "/api/v1/conversations/d%3Aa%3Ab";
    let (status, head, _) = http_exchange(server.addr, "OPTIONS", path, &preflight, "").await;
    assert_eq!(status, 204);
    assert_eq!(header(&head, "access-control-allow-origin"), Some(APP));
    assert!(
        header(&head, "access-control-allow-methods")
            .unwrap()
            .contains("patch")
    );
    assert!(
        header(&head, "access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    assert_eq!(header(&head, "access-control-allow-credentials"), None);

    // The call itself: readable by that origin.
    let (status, head, body) = http_exchange(
        server.addr,
        "GET",
        "/api/v1/seq?user_id=a",
        &[("Origin", APP)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&head, "access-control-allow-origin"), Some(APP));

    // Another origin: not allowed to read, its preflight gets no permission.
    let other = [
        ("Origin", "https://evil.example"),
        ("Access-Control-Request-Method", "GET"),
    ];
    let (_, head, _) = http_exchange(server.addr, "OPTIONS", "/api/v1/seq", &other, "").await;
    assert_eq!(header(&head, "access-control-allow-origin"), None);
    let (_, head, _) =
        http_exchange(server.addr, "GET", "/api/v1/seq?user_id=a", &other[..1], "").await;
    assert_eq!(header(&head, "access-control-allow-origin"), None);

    // The SDK, from anywhere; with its type.
    for (path, kind) in [
        ("/sdk/natter.js", "text/javascript"),
        ("/sdk/natter.d.ts", "application/typescript"),
    ] {
        let (status, head, body) = http_exchange(server.addr, "GET", path, &other[..1], "").await;
        assert_eq!(status, 200);
        assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
        assert!(header(&head, "content-type").unwrap().starts_with(kind));
        assert!(body.contains("Natter"), "{path}");
    }
}
