//! Cross-origin requests, for browser apps served from another origin than the server's: the
//! HTTP API answers the preflights of the origins in `auth.allowed_origins` (the list the
//! WebSocket's Origin check uses; `"*"`: any) and lets them read its answers; the SDK's files
//! and the OpenAPI description are readable from anywhere. Requests carry their token in
//! `Authorization`, never in a cookie, so no credentials are ever allowed.

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{auth::origin_allowed, state::AppState};

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: &str = "600";

/// Who may read a route's answers from another origin.
enum Readers {
    Anyone,
    /// This origin, being allowed.
    Origin(HeaderValue),
    Nobody,
}

fn readers(state: &AppState, path: &str, headers: &HeaderMap) -> Readers {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Readers::Nobody;
    };
    if path.starts_with("/sdk/") || path == "/api/v1/openapi.json" {
        return Readers::Anyone;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match origin.to_str() {
        Ok(o)
            if path.starts_with("/api/")
                && origin_allowed(o, host, &state.config.auth.allowed_origins) =>
        {
            Readers::Origin(origin.clone())
        }
        _ => Readers::Nobody,
    }
}

/// The middleware: answers preflights, marks answers readable by their allowed origin.
pub async fn cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let readers = readers(&state, req.uri().path(), req.headers());
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    let allow = match readers {
        Readers::Nobody => return response,
        Readers::Anyone => HeaderValue::from_static("*"),
        Readers::Origin(origin) => origin,
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    if preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
    }
    response
}
