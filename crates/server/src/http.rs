//! Plain HTTP endpoints: health and metrics. (The WebSocket route lives in `gateway`.)

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::server::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
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
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// The value of `name` in a URL query string (no percent-decoding: ids and tokens are URL-safe).
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then_some(v)
    })
}
