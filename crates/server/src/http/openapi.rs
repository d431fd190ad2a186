//! The HTTP API described for machines: `GET /api/v1/openapi.json`, an OpenAPI 3.0 document
//! built from [`ROUTES`], the table of every route the server answers. `tests/openapi.rs` reads
//! the routers' source and fails when a route is missing from the table (or the table names one
//! the server does not have). docs/protocol.md has the prose.

use axum::Json;
use serde_json::{Map, Value, json};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anybody (health, metrics, the web page).
    Public,
    /// A user, by token (or the backend with the server API's key and `X-As-User`).
    User,
    /// The app's backend, with the server API's key.
    Service,
    /// A device opening its WebSocket (token in the query, header or subprotocol).
    Upgrade,
}

/// One route: method, path (axum's `{param}` form), who may call it, what it does.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
}

const fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    summary: &'static str,
) -> Route {
    Route {
        method,
        path,
        access,
        summary,
    }
}

use Access::{Public, Service, Upgrade, User};

/// Every route of the server.
pub const ROUTES: &[Route] = &[
    route("get", "/", Public, "The web chat page"),
    route(
        "get",
        "/sdk/natter.js",
        Public,
        "The JavaScript SDK (an ES module)",
    ),
    route(
        "get",
        "/sdk/natter.d.ts",
        Public,
        "The JavaScript SDK's TypeScript declarations",
    ),
    route(
        "get",
        "/healthz",
        Public,
        "Whether the node serves (503 while it stops)",
    ),
    route("get", "/metrics", Public, "Prometheus metrics"),
    route("get", "/api/v1/openapi.json", Public, "This description"),
    route(
        "get",
        "/ws/{user_id}/conn/{platform_id}",
        Upgrade,
        "Open a device's WebSocket",
    ),
    route(
        "get",
        "/api/v1/messages",
        User,
        "A page of the caller's inbox (after_seq) or sent stream (after_send_seq)",
    ),
    route(
        "post",
        "/api/v1/messages",
        Service,
        "Send a message as its send_id; answers with the ack",
    ),
    route(
        "get",
        "/api/v1/seq",
        User,
        "The caller's last seq and send_seq",
    ),
    route(
        "get",
        "/api/v1/users/{user_id}/online",
        User,
        "Whether a user is connected, and on which platforms",
    ),
    route(
        "get",
        "/api/v1/users/{user_id}/devices",
        Service,
        "The platforms a user is connected on",
    ),
    route(
        "post",
        "/api/v1/users/{user_id}/disconnect",
        Service,
        "Close every connection of a user (4006)",
    ),
    route(
        "post",
        "/api/v1/users/{user_id}/revoke",
        Service,
        "Revoke a user's tokens issued before a time; their connections close (4002)",
    ),
    route(
        "post",
        "/api/v1/tokens/revoke",
        Service,
        "Revoke one token by its jti; its connections close (4002)",
    ),
    route("post", "/api/v1/groups", User, "Create a group"),
    route("get", "/api/v1/groups", User, "The caller's groups"),
    route(
        "get",
        "/api/v1/groups/{group_id}",
        User,
        "A group and its members",
    ),
    route("patch", "/api/v1/groups/{group_id}", User, "Rename a group"),
    route(
        "delete",
        "/api/v1/groups/{group_id}",
        User,
        "Dissolve a group",
    ),
    route(
        "post",
        "/api/v1/groups/{group_id}/members",
        User,
        "Add (or invite) members",
    ),
    route(
        "delete",
        "/api/v1/groups/{group_id}/members/{user_id}",
        User,
        "Remove a member, or leave",
    ),
    route(
        "put",
        "/api/v1/groups/{group_id}/members/{user_id}/role",
        User,
        "Change a member's role",
    ),
    route(
        "get",
        "/api/v1/groups/{group_id}/messages",
        User,
        "A page of a group's stream",
    ),
    route(
        "get",
        "/api/v1/invites",
        User,
        "The caller's pending invitations",
    ),
    route(
        "post",
        "/api/v1/invites/{group_id}/accept",
        User,
        "Accept an invitation",
    ),
    route(
        "delete",
        "/api/v1/invites/{group_id}",
        User,
        "Decline an invitation",
    ),
    route("get", "/api/v1/conversations", User, "The chat list"),
    route(
        "get",
        "/api/v1/conversations/{conv_id}",
        User,
        "One conversation, as listed",
    ),
    route(
        "patch",
        "/api/v1/conversations/{conv_id}",
        User,
        "The caller's settings (pinned, muted)",
    ),
    route(
        "get",
        "/api/v1/conversations/{conv_id}/messages",
        User,
        "A page of a conversation's history (before or after)",
    ),
    route(
        "post",
        "/api/v1/conversations/{conv_id}/read",
        User,
        "Move the caller's read position",
    ),
    route(
        "post",
        "/api/v1/conversations/{conv_id}/hide",
        User,
        "Delete entries for the caller",
    ),
    route(
        "get",
        "/api/v1/conversations/{conv_id}/reads",
        User,
        "How many read up to an entry",
    ),
];

/// The OpenAPI document for [`ROUTES`].
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let security = match r.access {
            Access::Public => json!([]),
            Access::User => json!([{"userToken": []}, {"serviceKey": [], "asUser": []}]),
            // The upgrade takes a user's token only (query, header or subprotocol).
            Access::Upgrade => json!([{"userToken": []}]),
            Access::Service => json!([{"serviceKey": []}]),
        };
        let operation = json!({
            "summary": r.summary,
            "parameters": params,
            "security": security,
            "responses": {
                "default": {"description": "JSON; a refusal is {\"error\", \"detail\"} (docs/protocol.md, HTTP errors)"}
            },
        });
        let item = paths
            .entry(r.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(r.method.to_owned(), operation);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Natter",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The Natter messaging server's HTTP API. The WebSocket protocol and every error are in docs/protocol.md.",
        },
        "components": {
            "securitySchemes": {
                "userToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "serviceKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "asUser": {"type": "apiKey", "in": "header", "name": "X-As-User"},
            }
        },
        "paths": paths,
    })
}

/// `GET /api/v1/openapi.json`.
pub(super) async fn openapi() -> Json<Value> {
    Json(document())
}
