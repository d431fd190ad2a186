//! The URL query string, as the WebSocket route and the HTTP API read it.

/// The value of `name` as a non-negative integer, if given; an error naming it otherwise.
pub fn non_negative_param(query: Option<&str>, name: &str) -> Result<Option<i64>, String> {
    match query_param(query, name) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| format!("{name} must be a non-negative integer")),
    }
}

/// The value of `name` in a URL query string (no percent-decoding: ids and tokens are URL-safe).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then_some(v)
    })
}
