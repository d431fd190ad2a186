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

/// The value of `name` percent-decoded (`%3A` is `:`), if given; an error if it does not decode
/// to UTF-8. For values a client encodes, such as a cursor holding a conversation id.
pub fn decoded_param(query: Option<&str>, name: &str) -> Result<Option<String>, String> {
    let Some(raw) = query_param(query, name) else {
        return Ok(None);
    };
    let bad = || format!("{name} is not a percent-encoded UTF-8 value");
    let mut bytes = Vec::with_capacity(raw.len());
    let mut rest = raw.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail.get(..2).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).map(Some).map_err(|_| bad())
}

/// The value of `name` in a URL query string (no percent-decoding: ids and tokens are URL-safe).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_decoded_when_asked() {
        let q = Some("cursor=0%3A12%3Ad%3Aa%253Ab%3Ac&x=%zz&y=%C3%A9");
        assert_eq!(
            decoded_param(q, "cursor").unwrap().as_deref(),
            Some("0:12:d:a%3Ab:c")
        );
        assert!(decoded_param(q, "x").is_err());
        assert_eq!(decoded_param(q, "y").unwrap().as_deref(), Some("é"));
        assert_eq!(decoded_param(q, "none"), Ok(None));
        assert_eq!(query_param(q, "cursor"), Some("0%3A12%3Ad%3Aa%253Ab%3Ac"));
    }
}
