//! Plain HTTP endpoints: health, metrics, and the HTTP API. (The WebSocket route lives in
//! `gateway`.) API errors are JSON `{"error", "detail"}` with an HTTP status.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, RawQuery, State},
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::get,
};
use futures_util::StreamExt;
use natter_protocol::{
    HttpError, Msg,
    ids::{check_id, check_user_id},
};
use serde_json::json;

mod body;
mod conversations;
pub mod cors;
mod groups;
pub mod openapi;
mod service;

use crate::{
    auth,
    groups::Groups,
    query::{non_negative_param, query_param},
    state::AppState,
    store::{Store, StoreError, Stream, page_bytes},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/messages", get(messages).post(service::send))
        .route("/api/v1/seq", get(seq))
        .route("/api/v1/openapi.json", get(openapi::openapi))
        .route("/api/v1/users/{user_id}/online", get(online))
        .route("/", get(web_page))
        .route("/sdk/natter.js", get(sdk))
        .route("/sdk/natter.d.ts", get(sdk_types))
        .merge(groups::routes())
        .merge(conversations::routes())
        .merge(service::routes())
}

/// `GET /`: the web chat page, compiled into the binary.
async fn web_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../../../../web/index.html"))
}

/// `GET /sdk/natter.js`: the JavaScript SDK (an ES module), compiled into the binary.
async fn sdk() -> impl axum::response::IntoResponse {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../../../../web/sdk/natter.js"),
    )
}

/// `GET /sdk/natter.d.ts`: the SDK's TypeScript declarations.
async fn sdk_types() -> impl axum::response::IntoResponse {
    static_file(
        "application/typescript; charset=utf-8",
        include_str!("../../../../web/sdk/natter.d.ts"),
    )
}

/// A file of the binary; browsers check for a newer one each time (it changes with the server).
fn static_file(
    content_type: &'static str,
    body: &'static str,
) -> impl axum::response::IntoResponse {
    use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
}

/// `GET /api/v1/users/{id}/online`: whether the user has a device connected, and on which
/// platforms (this node's view; a cluster answers for every node).
async fn online(
    State(state): State<AppState>,
    _: Caller,
    Path(user): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    valid_user(&user, "user id")?;
    let platforms = platforms_of(&state, &user).await?;
    Ok(Json(
        json!({ "user_id": user, "online": !platforms.is_empty(), "platforms": platforms }),
    ))
}

/// The platforms `user` is connected on (a cluster: on any node).
pub(crate) async fn platforms_of(state: &AppState, user: &str) -> Result<Vec<String>, ApiError> {
    match &state.cluster {
        Some(cluster) => cluster.online(user).await.map_err(|e| {
            tracing::warn!(error = %e, "presence lookup failed");
            ApiError::new(HttpError::PresenceUnavailable, "try again")
        }),
        None => Ok(state.hub.platforms(user)),
    }
}

/// An HTTP refusal: the status of its [`HttpError`] and a JSON body `{"error", "detail"}`.
#[derive(Debug)]
pub struct ApiError {
    error: HttpError,
    detail: String,
}

impl ApiError {
    pub fn new(error: HttpError, detail: impl Into<String>) -> ApiError {
        ApiError {
            error,
            detail: detail.into(),
        }
    }

    pub fn error(&self) -> HttpError {
        self.error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({ "error": self.error.as_str(), "detail": self.detail });
        (status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store read failed");
        ApiError::new(
            HttpError::StoreUnavailable,
            "the store could not be read; try again",
        )
    }
}

/// The authenticated caller of an API request: the user of a token sent as `Authorization:
/// Bearer` or `?token=`; in development mode, of `?user_id=`; or, for the app's backend with
/// the server API's key (`X-Api-Key`), the user named by `X-As-User`. Every API handler takes
/// one, so no route answers an unauthenticated request.
#[derive(Debug)]
pub struct Caller {
    pub user: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        if parts.headers.contains_key(service::KEY_HEADER) {
            // The app's backend, on behalf of the user the `X-As-User` header names.
            service::Service::from_request_parts(parts, state).await?;
            let user = parts
                .headers
                .get(service::AS_USER_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            valid_user(&user, "X-As-User")?;
            return Ok(Caller { user });
        }
        not_proxied_in_development(state, &parts.headers)?;
        let query = parts.uri.query();
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let (token, _) = auth::token_from_request(query, authorization, None);
        let identity = state
            .auth
            .identify(token, query_param(query, "user_id"))
            .map_err(|e| ApiError::new(e.reason(), e.detail()))?;
        valid_user(&identity.user, "the caller's user id")?;
        if !state.limits.request(&identity.user) {
            state.metrics.http_refused.increment(1);
            return Err(ApiError::new(
                HttpError::RateLimited,
                "too many requests (limits.http.per_second): retry in a moment",
            ));
        }
        Ok(Caller {
            user: identity.user,
        })
    }
}

/// Development mode (no tokens: anybody may be anybody) is for a loopback listener; behind a
/// reverse proxy on the same host, the whole internet would reach it. A request that carries a
/// proxy's headers is refused there.
pub(crate) fn not_proxied_in_development(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<(), ApiError> {
    const PROXY_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];
    match PROXY_HEADERS.iter().find(|h| headers.contains_key(**h)) {
        Some(h) if state.auth.is_development() => Err(ApiError::new(
            HttpError::DevelopmentBehindProxy,
            format!(
                "the request came through a proxy ({h}) to a server in development mode, where \
                 anybody may connect as anybody: set auth.secret"
            ),
        )),
        _ => Ok(()),
    }
}

/// `invalid_id` unless `id` is a valid user id (natter_protocol::ids).
pub(crate) fn valid_user(id: &str, what: &str) -> Result<(), ApiError> {
    check_user_id(id).map_err(|why| ApiError::new(HttpError::InvalidId, format!("{what} {why}")))
}

/// `invalid_id` unless `id` is a valid id (a group's, say).
pub(crate) fn valid_id(id: &str, what: &str) -> Result<(), ApiError> {
    check_id(id).map_err(|why| ApiError::new(HttpError::InvalidId, format!("{what} {why}")))
}

/// Most bytes of messages in one page of history ([`page_bytes`]): what a response holds,
/// whatever `limit` asks for.
pub(crate) const PAGE_BYTES: usize = 1024 * 1024;

/// Whether more may follow a page of `limit` read within [`PAGE_BYTES`] (`read` messages, some
/// perhaps left out of `page`): it is full, or the next message might not have fitted (a client
/// asking again then gets an empty page).
pub(crate) fn has_more(
    state: &AppState,
    page: &[natter_protocol::Msg],
    read: usize,
    limit: u32,
) -> bool {
    let bytes: usize = page.iter().map(page_bytes).sum();
    read == limit as usize
        || bytes + page_bytes_at_most(state.config.limits.max_message_size) > PAGE_BYTES
}

/// The most a message can weigh in a page, from the largest frame a client may send.
fn page_bytes_at_most(max_message_size: usize) -> usize {
    64 + max_message_size
}

/// The store, or `storage_disabled` when the server stores nothing.
fn store(state: &AppState) -> Result<&Arc<dyn Store>, ApiError> {
    state.store.as_ref().ok_or_else(|| {
        ApiError::new(
            HttpError::StorageDisabled,
            "this server stores nothing (storage.backend: none)",
        )
    })
}

/// The groups service, or `storage_disabled` when the server stores nothing.
fn groups(state: &AppState) -> Result<&Groups, ApiError> {
    state
        .groups
        .as_deref()
        .ok_or_else(|| ApiError::new(HttpError::StorageDisabled, "groups need storage"))
}

/// The query of a history page: `after` a sequence number, at most `limit` messages (default
/// 100, at most 1000).
pub(crate) struct HistoryQuery {
    pub after: i64,
    pub limit: u32,
}

impl HistoryQuery {
    /// Reads `after_name` (default 0) and `limit` from the query string.
    pub(crate) fn parse(q: Option<&str>, after_name: &str) -> Result<HistoryQuery, ApiError> {
        let invalid = |what: String| ApiError::new(HttpError::InvalidQuery, what);
        let after = non_negative_param(q, after_name)
            .map_err(invalid)?
            .unwrap_or(0);
        let limit = limit_param(q, 100, 1000)?;
        Ok(HistoryQuery { after, limit })
    }
}

/// The query's `limit`: `default` when absent, else 1 to `max`.
pub(crate) fn limit_param(q: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    match query_param(q, "limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::new(HttpError::InvalidQuery, format!("limit is 1 to {max}"))),
    }
}

/// One page of `owner`'s `stream` for `caller` ([`page_response`]).
pub(crate) async fn history_page(
    state: &AppState,
    caller: &str,
    store: &Arc<dyn Store>,
    owner: &str,
    stream: Stream,
    after: i64,
    limit: u32,
) -> Result<Response, ApiError> {
    page_response(state, caller, limit, || async move {
        let page = store.page(owner, stream, after, limit, PAGE_BYTES).await?;
        let read = page.len();
        Ok((page, read))
    })
    .await
}

/// A page of messages `read` (at most `limit`, within [`PAGE_BYTES`]; with how many were read,
/// for `has_more`, before any was left out) for `caller`, serialised once, straight from the
/// store's messages; at most `limits.reads_per_user` run at once per caller.
pub(crate) async fn page_response<'a, F>(
    state: &AppState,
    caller: &str,
    limit: u32,
    read: impl FnOnce() -> F,
) -> Result<Response, ApiError>
where
    F: std::future::Future<Output = Result<(Vec<Msg>, usize), StoreError>> + 'a,
{
    let reading = state.limits.read(caller).ok_or_else(|| {
        state.metrics.http_refused.increment(1);
        ApiError::new(
            HttpError::RateLimited,
            "too many history reads at once (limits.reads_per_user): wait for one to end",
        )
    })?;
    let (messages, read) = read().await?;
    #[derive(serde::Serialize)]
    struct Page<'a> {
        messages: &'a [Msg],
        has_more: bool,
    }
    let page = Page {
        has_more: has_more(state, &messages, read, limit),
        messages: &messages,
    };
    let json = match serde_json::to_vec(&page) {
        Ok(json) => axum::body::Bytes::from(json),
        Err(e) => {
            tracing::error!(error = %e, "a history page did not serialise");
            return Err(ApiError::new(HttpError::StoreUnavailable, "try again"));
        }
    };
    drop(messages);
    // The read counts as running until its page has been handed to the socket (or the
    // connection is dropped, at the latest after `limits.http.write_timeout`): a user's slow
    // readers hold at most `reads_per_user` pages between them. The page goes in chunks, as
    // the connection's write buffer takes them, and the read ends after the last one.
    let length = json.len();
    let chunks = (0..length).step_by(RESPONSE_CHUNK).map(move |at| {
        Ok::<_, std::convert::Infallible>(json.slice(at..length.min(at + RESPONSE_CHUNK)))
    });
    let body = futures_util::stream::iter(chunks).chain(
        futures_util::stream::once(async move { drop(reading) })
            .filter_map(|()| std::future::ready(None)),
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// The pieces a history page is written in.
const RESPONSE_CHUNK: usize = 64 * 1024;

/// `GET /api/v1/messages?after_seq=N&limit=L` (inbox) or `?after_send_seq=N` (sent): messages
/// in order, at most `limit` (default 100, at most 1000).
async fn messages(
    State(state): State<AppState>,
    who: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = query.as_deref();
    let store = store(&state)?;
    let (stream, after_name) = match (
        query_param(q, "after_seq"),
        query_param(q, "after_send_seq"),
    ) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                HttpError::InvalidQuery,
                "give after_seq or after_send_seq, not both",
            ));
        }
        (None, Some(_)) => (Stream::Sent, "after_send_seq"),
        _ => (Stream::Inbox, "after_seq"),
    };
    let HistoryQuery { after, limit } = HistoryQuery::parse(q, after_name)?;
    history_page(&state, &who.user, store, &who.user, stream, after, limit).await
}

/// `GET /api/v1/seq`: the caller's last inbox `seq` and sent `send_seq`.
async fn seq(
    State(state): State<AppState>,
    who: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (seq, send_seq) = store(&state)?.cursors(&who.user).await?;
    Ok(Json(json!({ "seq": seq, "send_seq": send_seq })))
}

/// `GET /healthz`: 200 with a small JSON body while the node serves, 503 once it shuts down.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let status = if state.sessions.is_shutting_down() {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    } else {
        axum::http::StatusCode::OK
    };
    let body = format!(
        "{{\"status\":\"{}\",\"connections\":{}}}",
        if status.is_success() {
            "ok"
        } else {
            "shutting_down"
        },
        state.sessions.live()
    );
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

/// `GET /metrics`: Prometheus text exposition.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = state.metrics.render();
    if let Some(store) = &state.store {
        store.render_metrics(&mut out);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
