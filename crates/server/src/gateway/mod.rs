//! The WebSocket gateway: where a message enters the server and where it leaves for a device.
//!
//! [`upgrade`] checks the request and upgrades it; [`Session::run`] is the one task that owns the
//! socket for its whole life. It `select!`s over three things: frames from the client, its own
//! bounded outbox (frames other tasks queued for this device), and the heartbeat timer. Nothing
//! else ever touches the socket: there is no lock around a sink and no second writer.
//!
//! This is the only module that sees the WebSocket library (axum's `ws`, tungstenite beneath).

mod rate;
mod replay;
mod session;

use std::time::Duration;

use axum::{
    extract::{Path, RawQuery, State, WebSocketUpgrade},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use natter_protocol::{
    HttpError,
    ids::{check_id, check_user_id},
};

use crate::{
    auth::{self},
    http::{ApiError, not_proxied_in_development},
    state::AppState,
};

use self::{replay::Replay, session::Session};

/// How long a closing connection gets to take its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A refusal before the upgrade: an HTTP status with a JSON body `{"error", "detail"}`.
fn refuse(state: &AppState, reason: HttpError, detail: &str) -> Response {
    state.metrics.upgrade_refused(reason);
    ApiError::new(reason, detail).into_response()
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `GET /ws/{user_id}/conn/{platform_id}`: checks the request, then upgrades it. Every check
/// happens before the upgrade, so a refused client gets a plain HTTP answer.
pub async fn upgrade(
    Path((user, platform)): Path<(String, String)>,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let ids = check_user_id(&user)
        .map_err(|why| format!("user id {why}"))
        .and_then(|()| check_id(&platform).map_err(|why| format!("platform id {why}")));
    if let Err(detail) = ids {
        return refuse(&state, HttpError::InvalidId, &detail);
    }
    if let Err(e) = not_proxied_in_development(&state, &headers) {
        state.metrics.upgrade_refused(e.error());
        return e.into_response();
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        // An Origin that is not plain text matches nothing: the check fails closed.
        let origin = origin.to_str().unwrap_or_default();
        let host = header(&headers, header::HOST);
        if !auth::origin_allowed(origin, host, &state.config.auth.allowed_origins) {
            let detail = format!("origin {origin:?} is not in auth.allowed_origins");
            return refuse(&state, HttpError::OriginForbidden, &detail);
        }
    }
    let (token, protocol) = auth::token_from_request(
        query.as_deref(),
        header(&headers, header::AUTHORIZATION),
        header(&headers, header::SEC_WEBSOCKET_PROTOCOL),
    );
    let identity = match state.auth.verify(token, &user, &platform) {
        Ok(identity) => identity,
        Err(e) => return refuse(&state, e.reason(), e.detail()),
    };
    let replay = match Replay::from_query(query.as_deref()) {
        Ok(r) => r,
        Err(detail) => return refuse(&state, HttpError::InvalidQuery, &detail),
    };
    let per_user = state.config.limits.max_connections_per_user;
    if state.hub.other_devices(&user, &platform) >= per_user {
        let detail =
            format!("a user may hold {per_user} connections (limits.max_connections_per_user)");
        return refuse(&state, HttpError::UserConnectionLimit, &detail);
    }
    let Some(guard) = state
        .sessions
        .try_enter(state.config.limits.max_connections)
    else {
        let reason = if state.sessions.is_shutting_down() {
            HttpError::ServerShuttingDown
        } else {
            HttpError::NodeConnectionLimit
        };
        return refuse(&state, reason, "try another node or later");
    };
    let cfg = &state.config;
    let mut ws = ws
        .read_buffer_size(cfg.websocket.read_buffer_size)
        .write_buffer_size(cfg.websocket.write_buffer_size)
        .max_write_buffer_size(cfg.websocket.max_write_buffer_size)
        .max_message_size(cfg.limits.max_message_size)
        .max_frame_size(cfg.limits.max_message_size);
    if let Some(p) = protocol {
        ws = ws.protocols([p.to_owned()]);
    }
    ws.on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| async move {
            Session::start(state, socket, identity, platform, guard)
                .run(replay)
                .await
        })
}
