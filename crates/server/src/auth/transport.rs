//! Where a request carries its token (query, `Authorization: Bearer`, subprotocol), and the
//! browser `Origin` check.

/// The token a WebSocket request carries: `?token=` in the query, an `Authorization: Bearer`
/// header, or a `bearer.<token>` entry in `Sec-WebSocket-Protocol`. Also returns the
/// subprotocol to select, when the token came that way.
pub fn token_from_request<'a>(
    query: Option<&'a str>,
    authorization: Option<&'a str>,
    protocols: Option<&'a str>,
) -> (Option<&'a str>, Option<&'a str>) {
    if let Some(t) = crate::query::query_param(query, "token") {
        return (Some(t), None);
    }
    let from_header = authorization.and_then(|h| {
        h.strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(str::trim)
    });
    if let Some(t) = from_header {
        return (Some(t), None);
    }
    let offered = protocols
        .into_iter()
        .flat_map(|p| p.split(','))
        .map(str::trim);
    let mut token = None;
    let mut named = None;
    for p in offered {
        if let Some(t) = p.strip_prefix(BEARER_PROTOCOL_PREFIX) {
            token = Some(t);
        } else if p == PROTOCOL {
            named = Some(p);
        }
    }
    // The server must answer with one of the offered protocols: `natter` when offered, else the
    // bearer entry itself.
    let selected = match (token, named) {
        (Some(_), Some(n)) => Some(n),
        (Some(t), None) => protocols
            .into_iter()
            .flat_map(|p| p.split(','))
            .map(str::trim)
            .find(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX) == Some(t)),
        _ => None,
    };
    (token, selected)
}

/// The subprotocol name a browser client offers beside its `bearer.<token>` entry.
pub const PROTOCOL: &str = "natter";
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// Whether a browser `origin` may open a WebSocket to a server reached as `host`.
pub fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    // Same origin: the Origin's authority is the Host the browser connected to.
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    host.is_some_and(|h| h.eq_ignore_ascii_case(authority))
}
