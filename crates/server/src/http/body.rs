//! Request bodies of the HTTP API: read within `limits.http.body_timeout`, at most the route's
//! size, then parsed as its JSON type.

use axum::extract::{FromRequest, Request};
use futures_util::StreamExt;
use natter_protocol::{HttpError, ids::MAX_ID_LEN};
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::{config::Config, state::AppState};

/// The body of every route that takes a small one (a name, a role).
pub(crate) const SMALL_BODY: usize = 16 * 1024;

/// What a member list may weigh per member: a longest id, its quotes, a comma and room for
/// spaces.
const BYTES_PER_MEMBER: usize = MAX_ID_LEN + 32;

/// A route's JSON body type and how large it may be.
pub(crate) trait ApiBody: DeserializeOwned {
    fn max_bytes(_config: &Config) -> usize {
        SMALL_BODY
    }
}

/// The most a body holding a list of members may weigh: a whole largest group.
pub(crate) fn member_list_bytes(config: &Config) -> usize {
    SMALL_BODY + config.groups.max_members * BYTES_PER_MEMBER
}

/// A JSON body of type `T`, read with the route's limits.
pub(crate) struct Body<T>(pub T);

impl<T: ApiBody> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Body<T>, ApiError> {
        let body = read_object(req, state, T::max_bytes(&state.config)).await?;
        serde_json::from_slice(&body)
            .map(Body)
            .map_err(|e| ApiError::new(HttpError::InvalidRequest, format!("the body: {e}")))
    }
}

/// A message's JSON text, for the protocol's own decoder (which says what is wrong with it):
/// read with the limits of a body, at most a message and its envelope.
pub(crate) struct MsgText(pub String);

impl FromRequest<AppState> for MsgText {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<MsgText, ApiError> {
        let limit = state.config.limits.max_message_size + 4096;
        let body = read_object(req, state, limit).await?;
        String::from_utf8(body)
            .map(MsgText)
            .map_err(|_| ApiError::new(HttpError::InvalidRequest, "the body is not UTF-8"))
    }
}

/// Reads a request's body within `limit` bytes and `limits.http.body_timeout`; it must be a
/// JSON object (its first character `{`).
async fn read_object(req: Request, state: &AppState, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        state.metrics.http_refused.increment(1);
        ApiError::new(
            HttpError::BodyTooLarge,
            format!("this route takes a body of at most {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut chunks = req.into_body().into_data_stream();
    let read = async {
        let mut body = Vec::with_capacity(declared.unwrap_or(0));
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::new(HttpError::InvalidRequest, format!("reading the body: {e}"))
            })?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let timeout = state.config.limits.http.body_timeout;
    let body = tokio::time::timeout(timeout, read).await.map_err(|_| {
        state.metrics.http_refused.increment(1);
        ApiError::new(
            HttpError::BodyTimeout,
            format!("the body did not arrive within {timeout:?}"),
        )
    })??;
    // Every body is an object: serde would also fill a struct from an array, field by field
    // in order (`["a"]` as `{"name": "a"}`).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            HttpError::InvalidRequest,
            "the body is a JSON object",
        ));
    }
    Ok(body)
}
