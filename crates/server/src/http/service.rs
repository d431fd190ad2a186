//! The server API, for the app's backend: authenticated by `service.key` (the `X-Api-Key`
//! header), never by a user's token. Send a message as any user (`POST /api/v1/messages`: the
//! WebSocket's path, so the same checks, idempotency, storage and ack), list a user's devices,
//! disconnect a user's sessions, revoke tokens; and every user route (groups, invitations,
//! conversations) on behalf of the user named by `X-As-User` (see `Caller`).

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, State},
    http::{StatusCode, request::Parts},
    routing::{get, post},
};
use natter_protocol::{CloseCode, ErrorReason, HttpError, Msg, decode_client_msg};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{
    ApiError,
    body::{ApiBody, Body, MsgText},
    platforms_of, valid_user,
};
use crate::{
    auth::Revocation,
    clock::{now_micros, now_secs},
    delivery::{Refusal, Reply},
    messaging::Origin,
    state::AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users/{user_id}/devices", get(devices))
        .route("/api/v1/users/{user_id}/disconnect", post(disconnect))
        .route("/api/v1/users/{user_id}/revoke", post(revoke_user))
        .route("/api/v1/tokens/revoke", post(revoke_token))
}

/// The header carrying the server API's key.
pub(crate) const KEY_HEADER: &str = "x-api-key";
/// The header naming the user the backend acts for on the user routes (groups, conversations).
pub(crate) const AS_USER_HEADER: &str = "x-as-user";

/// The app's backend, authenticated by `service.key`.
#[derive(Debug)]
pub struct Service;

impl FromRequestParts<AppState> for Service {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Service, ApiError> {
        let key = state.config.service.key.as_bytes();
        if key.is_empty() {
            return Err(ApiError::new(
                HttpError::ServiceDisabled,
                "the server API is off: set service.key",
            ));
        }
        let given = parts
            .headers
            .get(KEY_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !same(given, key) {
            state.metrics.http_refused.increment(1);
            return Err(ApiError::new(
                HttpError::ServiceKeyInvalid,
                "send service.key as the X-Api-Key header",
            ));
        }
        Ok(Service)
    }
}

/// Whether `a` and `b` are equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /api/v1/messages` with a `Msg` whose `send_id` is the sender: stored and delivered as
/// if that user had sent it on a WebSocket (its devices get a copy); answers with the ack. A
/// resend (same `send_id`, `create_time`, `local_id`) gets the original's ack.
pub(super) async fn send(
    State(state): State<AppState>,
    _: Service,
    MsgText(text): MsgText,
) -> Result<Json<Msg>, ApiError> {
    let refused = |r: Refusal| match r.reason {
        ErrorReason::StoreUnavailable => ApiError::new(HttpError::StoreUnavailable, r.detail),
        reason => ApiError::new(
            HttpError::MessageRefused,
            format!("{}: {}", reason.as_str(), r.detail),
        ),
    };
    let msg = decode_client_msg(&text).map_err(|e| {
        // Not JSON at all is a bad request, as on every route; a JSON that is no message, a
        // refused one.
        let error = match e.reason {
            ErrorReason::InvalidJson => HttpError::InvalidRequest,
            _ => HttpError::MessageRefused,
        };
        ApiError::new(error, format!("{}: {}", e.reason.as_str(), e.detail))
    })?;
    if msg.send_id.is_empty() {
        return Err(ApiError::new(
            HttpError::InvalidRequest,
            "send_id names the sender",
        ));
    }
    valid_user(&msg.send_id, "send_id")?;
    let sender = msg.send_id.clone();
    let (done, outcome) = oneshot::channel();
    let origin = Origin {
        user: &sender,
        reply: Reply::Api(done),
    };
    state
        .messaging
        .accept(origin, msg, None)
        .await
        .map_err(refused)?;
    let ack = outcome
        .await
        .map_err(|_| ApiError::new(HttpError::StoreUnavailable, "the server is shutting down"))?
        .map_err(refused)?;
    Ok(Json(ack))
}

/// `GET /api/v1/users/{id}/devices`: the platforms the user is connected on (every node).
async fn devices(
    State(state): State<AppState>,
    _: Service,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    valid_user(&user, "user id")?;
    let platforms = platforms_of(&state, &user).await?;
    Ok(Json(json!({ "user_id": user, "platforms": platforms })))
}

/// `POST /api/v1/users/{id}/disconnect`: closes every connection of the user, on every node,
/// with 4006. (The user may connect again with a valid token: stop issuing them to keep it out.)
async fn disconnect(
    State(state): State<AppState>,
    _: Service,
    Path(user): Path<String>,
) -> Result<StatusCode, ApiError> {
    valid_user(&user, "user id")?;
    let at = now_micros();
    state.hub.close_user(&user, CloseCode::Disconnected, at);
    if let Some(cluster) = &state.cluster {
        cluster.disconnect(&user, at);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeUser {
    /// Tokens issued before this (Unix seconds) are revoked; now if absent.
    before: Option<u64>,
}

impl ApiBody for RevokeUser {}

/// `POST /api/v1/users/{id}/revoke` with `{"before": secs}` (or `{}`: now): every token of the
/// user issued before then is refused from now on, and the connections holding one close with
/// 4002, on every node. Tokens issued since still work (sign new ones with `iat` ≥ `before`).
async fn revoke_user(
    State(state): State<AppState>,
    _: Service,
    Path(user): Path<String>,
    Body(body): Body<RevokeUser>,
) -> Result<Json<Value>, ApiError> {
    valid_user(&user, "user id")?;
    let before = body.before.unwrap_or_else(now_secs);
    apply(
        &state,
        Revocation::User {
            user: user.clone(),
            before,
        },
    )
    .await?;
    Ok(Json(json!({ "user_id": user, "before": before })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeToken {
    jti: String,
    /// The token's `exp` (Unix seconds): the revocation is kept until then.
    expires_at: u64,
}

impl ApiBody for RevokeToken {}

/// `POST /api/v1/tokens/revoke` with `{"jti", "expires_at"}`: the token with that `jti` is
/// refused from now on and the connections holding it close with 4002, on every node.
async fn revoke_token(
    State(state): State<AppState>,
    _: Service,
    Body(body): Body<RevokeToken>,
) -> Result<Json<Value>, ApiError> {
    natter_protocol::ids::check_id(&body.jti)
        .map_err(|why| ApiError::new(HttpError::InvalidRequest, format!("jti {why}")))?;
    let RevokeToken { jti, expires_at } = body;
    apply(
        &state,
        Revocation::Token {
            jti: jti.clone(),
            expires_at,
        },
    )
    .await?;
    Ok(Json(json!({ "jti": jti, "expires_at": expires_at })))
}

async fn apply(state: &AppState, r: Revocation) -> Result<(), ApiError> {
    crate::revoke::revoke(
        &state.auth,
        &state.hub,
        state.store.as_ref(),
        state.cluster.as_ref(),
        r,
    )
    .await?;
    Ok(())
}
