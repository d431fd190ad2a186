//! Plain HTTP endpoints: health, metrics, and the HTTP API. (The WebSocket route lives in
//! `gateway`.) API errors are JSON `{"error", "detail"}` with an HTTP status.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

mod groups;

use crate::{
    auth::{self, Identity},
    query::query_param,
    state::AppState,
    store::{Store, StoreError, Stream},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/messages", get(messages))
        .route("/api/v1/seq", get(seq))
        .route("/api/v1/users/{user_id}/online", get(online))
        .route("/", get(web_page))
        .merge(groups::routes())
}

/// `GET /`: the web chat page, compiled into the binary.
async fn web_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../../../../web/index.html"))
}

/// `GET /api/v1/users/{id}/online`: whether the user has a device connected, and on which
/// platforms (this node's view; a cluster answers for every node).
async fn online(
    State(state): State<AppState>,
    Path(user): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    identify(&state, &headers, query.as_deref())?;
    let platforms = match &state.cluster {
        Some(cluster) => cluster.online(&user).await.map_err(|e| {
            tracing::warn!(error = %e, "presence lookup failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "presence_unavailable",
                "try again",
            )
        })?,
        None => state.hub.platforms(&user),
    };
    Ok(Json(
        json!({ "user_id": user, "online": !platforms.is_empty(), "platforms": platforms }),
    ))
}

/// An API error: an HTTP status and a JSON body `{"error", "detail"}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "detail": self.detail });
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store read failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store could not be read; try again",
        )
    }
}

/// The caller of an API request: a token as `Authorization: Bearer` or `?token=`; in
/// development mode, `?user_id=`.
fn identify(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Identity, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (token, _) = auth::token_from_request(query, authorization, None);
    state
        .auth
        .identify(token, query_param(query, "user_id"))
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.reason(), e.detail()))
}

/// The caller and the store (API endpoints that read stored data).
pub(crate) fn caller<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(Identity, &'s Arc<dyn Store>), ApiError> {
    let who = identify(state, headers, query)?;
    let store = state.store.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "storage_disabled",
            "this server stores nothing (storage.backend: none)",
        )
    })?;
    Ok((who, store))
}

/// `GET /api/v1/messages?after_seq=N&limit=L` (inbox) or `?after_send_seq=N` (sent): messages
/// in order, at most `limit` (default 100, at most 1000).
async fn messages(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = query.as_deref();
    let (who, store) = caller(&state, &headers, q)?;
    let number =
        |name: &str| query_param(q, name).map(|v| v.parse::<i64>().ok().filter(|n| *n >= 0));
    let (stream, after) = match (number("after_seq"), number("after_send_seq")) {
        (None, None) => (Stream::Inbox, 0),
        (Some(Some(n)), None) => (Stream::Inbox, n),
        (None, Some(Some(n))) => (Stream::Sent, n),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "give after_seq or after_send_seq (non-negative integers), not both",
            ));
        }
    };
    let limit = match number("limit") {
        None => 100,
        Some(Some(n)) if (1..=1000).contains(&n) => n as u32,
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "limit is 1 to 1000",
            ));
        }
    };
    let messages = store.after(&who.user, stream, after, limit).await?;
    let has_more = messages.len() == limit as usize;
    Ok(Json(json!({ "messages": messages, "has_more": has_more })))
}

/// `GET /api/v1/seq`: the caller's last inbox `seq` and sent `send_seq`.
async fn seq(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (who, store) = caller(&state, &headers, query.as_deref())?;
    let (seq, send_seq) = store.cursors(&who.user).await?;
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
