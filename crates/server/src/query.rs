//! The URL query string, as the WebSocket route and the HTTP API read it.

/// The value of `name` in a URL query string (no percent-decoding: ids and tokens are URL-safe).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then_some(v)
    })
}
