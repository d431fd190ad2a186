//! The codes a client can be told: error reasons of error replies, HTTP errors, close codes.

/// Why a client frame was refused. The string form is the first word of an error reply's
/// `content` and the `reason` label of the `natter_frames_rejected_total` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    /// The text frame is not JSON.
    InvalidJson,
    /// JSON, but a field has the wrong type or a required field is missing.
    InvalidMsg,
    /// `receiver_id` is empty.
    MissingReceiver,
    /// Binary frames are not part of the protocol.
    BinaryNotSupported,
    /// The `msg_type` is not one a client may send.
    UnsupportedMsgType,
    /// `send_id` names somebody other than the authenticated user.
    SenderMismatch,
    /// The connection sends faster than its rate limit; the message was not accepted.
    RateLimited,
    /// The store could not commit the message: it was not accepted; send it again later.
    StoreUnavailable,
    /// A group message from somebody who is not a member (or to a group that does not exist).
    NotAMember,
    /// A recall or edit of an entry that is not the sender's, is a recall or an edit itself,
    /// was recalled, or is older than `messages.edit_window`.
    NotEditable,
    /// A token refresh whose token is not valid for this connection (the detail says why:
    /// `token_expired`, `token_user_mismatch`...). The connection keeps its old token.
    BadToken,
    /// The app's backend refused the message (the before-send hook; the detail is its reason),
    /// or the hook failed with `on_failure: refuse`.
    RefusedByBackend,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 12] = [
        ErrorReason::InvalidJson,
        ErrorReason::InvalidMsg,
        ErrorReason::MissingReceiver,
        ErrorReason::BinaryNotSupported,
        ErrorReason::UnsupportedMsgType,
        ErrorReason::SenderMismatch,
        ErrorReason::RateLimited,
        ErrorReason::StoreUnavailable,
        ErrorReason::NotAMember,
        ErrorReason::NotEditable,
        ErrorReason::BadToken,
        ErrorReason::RefusedByBackend,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::InvalidJson => "invalid_json",
            ErrorReason::InvalidMsg => "invalid_msg",
            ErrorReason::MissingReceiver => "missing_receiver",
            ErrorReason::BinaryNotSupported => "binary_not_supported",
            ErrorReason::UnsupportedMsgType => "unsupported_msg_type",
            ErrorReason::SenderMismatch => "sender_mismatch",
            ErrorReason::RateLimited => "rate_limited",
            ErrorReason::StoreUnavailable => "store_unavailable",
            ErrorReason::NotAMember => "not_a_member",
            ErrorReason::NotEditable => "not_editable",
            ErrorReason::BadToken => "bad_token",
            ErrorReason::RefusedByBackend => "refused_by_backend",
        }
    }
}

/// Every `error` value of an HTTP refusal (the WebSocket upgrade and the HTTP API), with its
/// status. The body is `{"error": "<as_str>", "detail": "..."}`. The tables in
/// `docs/protocol.md` mirror this enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpError {
    /// A path id too long, with control characters, or a user id with the group prefix.
    InvalidId,
    /// A query parameter that is not what the route takes.
    InvalidQuery,
    /// A request body that is not what the route takes.
    InvalidRequest,
    /// A request body larger than the route takes.
    BodyTooLarge,
    /// A request body that did not arrive within `limits.http.body_timeout`.
    BodyTimeout,
    /// Over `limits.http` (requests per second, or history reads at once) for this user.
    RateLimited,
    /// No token, and the server requires one.
    TokenMissing,
    /// Not a JWT, a wrong algorithm, or a required claim missing.
    TokenMalformed,
    /// `exp` has passed.
    TokenExpired,
    /// `nbf` has not come yet.
    TokenNotYetValid,
    /// Signed with another key.
    TokenBadSignature,
    /// `iss` is not the configured issuer.
    TokenBadIssuer,
    /// `aud` does not include the configured audience.
    TokenBadAudience,
    /// `sub` is not the user id in the URL.
    TokenUserMismatch,
    /// The token is bound to another platform.
    TokenPlatformMismatch,
    /// The token was revoked by the app's backend (its user's tokens of before a time, or its
    /// `jti`).
    TokenRevoked,
    /// A browser `Origin` the server does not allow.
    OriginForbidden,
    /// A request through a reverse proxy to a server in development mode (no tokens).
    DevelopmentBehindProxy,
    /// The caller is not a member of the group.
    NotAMember,
    /// Only the group's owner or an admin may do this.
    Forbidden,
    /// No such group.
    GroupNotFound,
    /// No pending invitation of the caller to that group.
    NotInvited,
    /// No such conversation of the caller's (an id that names none, or one the caller is not in).
    ConversationNotFound,
    /// The server API without its key, or with another one (`X-Api-Key`).
    ServiceKeyInvalid,
    /// The server API is off (no `service.key`).
    ServiceDisabled,
    /// The server API's send: the message was refused (the detail is the error reply's content).
    MessageRefused,
    /// The server stores nothing (`storage.backend: none`).
    StorageDisabled,
    /// The group would exceed `groups.max_members`.
    GroupFull,
    /// A user would exceed `groups.max_groups_per_user`.
    TooManyGroups,
    /// The user holds `limits.max_connections_per_user` connections already.
    UserConnectionLimit,
    /// The node holds `limits.max_connections` connections.
    NodeConnectionLimit,
    /// The node is stopping.
    ServerShuttingDown,
    /// The store could not be read or written; try again.
    StoreUnavailable,
    /// The cluster's presence could not be read; try again.
    PresenceUnavailable,
}

impl HttpError {
    pub const ALL: [HttpError; 34] = [
        HttpError::InvalidId,
        HttpError::InvalidQuery,
        HttpError::InvalidRequest,
        HttpError::BodyTooLarge,
        HttpError::BodyTimeout,
        HttpError::RateLimited,
        HttpError::TokenMissing,
        HttpError::TokenMalformed,
        HttpError::TokenExpired,
        HttpError::TokenNotYetValid,
        HttpError::TokenBadSignature,
        HttpError::TokenBadIssuer,
        HttpError::TokenBadAudience,
        HttpError::TokenUserMismatch,
        HttpError::TokenPlatformMismatch,
        HttpError::TokenRevoked,
        HttpError::OriginForbidden,
        HttpError::DevelopmentBehindProxy,
        HttpError::NotAMember,
        HttpError::Forbidden,
        HttpError::GroupNotFound,
        HttpError::NotInvited,
        HttpError::ConversationNotFound,
        HttpError::ServiceKeyInvalid,
        HttpError::ServiceDisabled,
        HttpError::MessageRefused,
        HttpError::StorageDisabled,
        HttpError::GroupFull,
        HttpError::TooManyGroups,
        HttpError::UserConnectionLimit,
        HttpError::NodeConnectionLimit,
        HttpError::ServerShuttingDown,
        HttpError::StoreUnavailable,
        HttpError::PresenceUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HttpError::InvalidId => "invalid_id",
            HttpError::InvalidQuery => "invalid_query",
            HttpError::InvalidRequest => "invalid_request",
            HttpError::BodyTooLarge => "body_too_large",
            HttpError::BodyTimeout => "body_timeout",
            HttpError::RateLimited => "rate_limited",
            HttpError::TokenMissing => "token_missing",
            HttpError::TokenMalformed => "token_malformed",
            HttpError::TokenExpired => "token_expired",
            HttpError::TokenNotYetValid => "token_not_yet_valid",
            HttpError::TokenBadSignature => "token_bad_signature",
            HttpError::TokenBadIssuer => "token_bad_issuer",
            HttpError::TokenBadAudience => "token_bad_audience",
            HttpError::TokenUserMismatch => "token_user_mismatch",
            HttpError::TokenPlatformMismatch => "token_platform_mismatch",
            HttpError::TokenRevoked => "token_revoked",
            HttpError::OriginForbidden => "origin_forbidden",
            HttpError::DevelopmentBehindProxy => "development_mode_behind_proxy",
            HttpError::NotAMember => "not_a_member",
            HttpError::Forbidden => "forbidden",
            HttpError::GroupNotFound => "group_not_found",
            HttpError::NotInvited => "not_invited",
            HttpError::ConversationNotFound => "conversation_not_found",
            HttpError::ServiceKeyInvalid => "service_key_invalid",
            HttpError::ServiceDisabled => "service_disabled",
            HttpError::MessageRefused => "message_refused",

            HttpError::StorageDisabled => "storage_disabled",
            HttpError::GroupFull => "group_full",
            HttpError::TooManyGroups => "too_many_groups",
            HttpError::UserConnectionLimit => "user_connection_limit",
            HttpError::NodeConnectionLimit => "node_connection_limit",
            HttpError::ServerShuttingDown => "server_shutting_down",
            HttpError::StoreUnavailable => "store_unavailable",
            HttpError::PresenceUnavailable => "presence_unavailable",
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(self) -> u16 {
        match self {
            HttpError::InvalidId
            | HttpError::InvalidQuery
            | HttpError::InvalidRequest
            | HttpError::MessageRefused => 400,
            HttpError::TokenMissing
            | HttpError::TokenMalformed
            | HttpError::TokenExpired
            | HttpError::TokenNotYetValid
            | HttpError::TokenBadSignature
            | HttpError::TokenBadIssuer
            | HttpError::TokenBadAudience
            | HttpError::TokenUserMismatch
            | HttpError::TokenPlatformMismatch
            | HttpError::TokenRevoked
            | HttpError::ServiceKeyInvalid => 401,
            HttpError::OriginForbidden
            | HttpError::DevelopmentBehindProxy
            | HttpError::NotAMember
            | HttpError::Forbidden => 403,
            HttpError::GroupNotFound
            | HttpError::NotInvited
            | HttpError::ConversationNotFound
            | HttpError::ServiceDisabled
            | HttpError::StorageDisabled => 404,
            HttpError::GroupFull | HttpError::TooManyGroups => 409,
            HttpError::BodyTooLarge => 413,
            HttpError::BodyTimeout => 408,
            HttpError::UserConnectionLimit | HttpError::RateLimited => 429,
            HttpError::NodeConnectionLimit
            | HttpError::ServerShuttingDown
            | HttpError::StoreUnavailable
            | HttpError::PresenceUnavailable => 503,
        }
    }
}

/// WebSocket close codes the server uses. The table in `docs/protocol.md` mirrors this enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal closure (the client asked to close).
    Normal,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1009: a frame or message was larger than `limits.max_message_size`.
    TooBig,
    /// 1011: the server hit an internal error.
    Internal,
    /// 4001: the same user logged in again on the same platform; this connection is replaced.
    Replaced,
    /// 4002: the token is missing, invalid or expired.
    BadToken,
    /// 4003: the client did not read its messages fast enough (outbound queue full).
    SlowConsumer,
    /// 4004: nothing received from the client within `heartbeat.timeout`.
    HeartbeatTimeout,
    /// 4005: the client kept sending faster than its rate limit allows.
    RateLimited,
    /// 4006: the app's backend ended the user's sessions (server API).
    Disconnected,
}

impl CloseCode {
    pub const ALL: [CloseCode; 10] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::TooBig,
        CloseCode::Internal,
        CloseCode::Replaced,
        CloseCode::BadToken,
        CloseCode::SlowConsumer,
        CloseCode::HeartbeatTimeout,
        CloseCode::RateLimited,
        CloseCode::Disconnected,
    ];

    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::TooBig => 1009,
            CloseCode::Internal => 1011,
            CloseCode::Replaced => 4001,
            CloseCode::BadToken => 4002,
            CloseCode::SlowConsumer => 4003,
            CloseCode::HeartbeatTimeout => 4004,
            CloseCode::RateLimited => 4005,
            CloseCode::Disconnected => 4006,
        }
    }

    /// The close frame's reason text (also the metric label).
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "server_shutdown",
            CloseCode::TooBig => "message_too_big",
            CloseCode::Internal => "internal_error",
            CloseCode::Replaced => "logged_in_elsewhere",
            CloseCode::BadToken => "bad_token",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::HeartbeatTimeout => "heartbeat_timeout",
            CloseCode::RateLimited => "rate_limited",
            CloseCode::Disconnected => "disconnected",
        }
    }

    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }
}
