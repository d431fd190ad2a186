//! The conversation API, `/api/v1/conversations/...`: the chat list, a conversation's history,
//! read positions, the caller's settings and "delete for me".

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    response::Response,
    routing::{get, post},
};
use natter_protocol::{
    HttpError,
    conversation::{self, Conversation},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, Caller, PAGE_BYTES,
    body::{ApiBody, Body},
    groups, limit_param, page_response, store,
};
use crate::{
    query::{decoded_param, non_negative_param},
    state::AppState,
    store::{
        HistoryFrom,
        conv::{ListKey, ListScope, Listing, listing},
    },
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/conversations", get(list))
        .route("/api/v1/conversations/{conv_id}", get(show).patch(settings))
        .route("/api/v1/conversations/{conv_id}/messages", get(messages))
        .route("/api/v1/conversations/{conv_id}/read", post(read))
        .route("/api/v1/conversations/{conv_id}/hide", post(hide))
        .route("/api/v1/conversations/{conv_id}/reads", get(reads))
}

/// The most entries one "delete for me" names.
const MAX_HIDE: usize = 1000;

/// The conversation `conv_id` names, if the caller is in it; and the `conv_seq` above which the
/// caller sees its history (a group member who joined later: the join).
async fn open(
    state: &AppState,
    user: &str,
    conv_id: &str,
) -> Result<(Conversation, i64), ApiError> {
    let not_found = || {
        ApiError::new(
            HttpError::ConversationNotFound,
            "no such conversation of yours (a group id, or d:<user>:<user> in byte order)",
        )
    };
    match conversation::parse(conv_id).ok_or_else(not_found)? {
        Conversation::Group(group) => {
            let groups = groups(state)?;
            let (members, _) = groups.membership(&group, user).await?;
            let floor = if groups.config().new_members_see_history {
                0
            } else {
                members.joined.get(user).copied().unwrap_or(0)
            };
            Ok((Conversation::Group(group), floor))
        }
        c if c.is_between(user) => Ok((c, 0)),
        _ => Err(not_found()),
    }
}

/// The caller's chat list (what `scope` asks for, and perhaps more), in the list's order.
async fn chat_list(
    state: &AppState,
    user: &str,
    scope: ListScope<'_>,
) -> Result<Vec<Listing>, ApiError> {
    let parts = store(state)?.chat_list(user, scope).await?;
    let see_history = state.config.groups.new_members_see_history;
    Ok(listing(user, parts, see_history))
}

/// `GET /api/v1/conversations?limit=L&cursor=C`: the caller's conversations, pinned first, then
/// newest activity first; `next` is the cursor of the page after (null at the end).
async fn list(
    State(state): State<AppState>,
    who: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = query.as_deref();
    let invalid = |what: &str| ApiError::new(HttpError::InvalidQuery, what.to_owned());
    let limit = limit_param(q, 50, 200)? as usize;
    let cursor = decoded_param(q, "cursor").map_err(|e| invalid(&e))?;
    let after = match cursor {
        None => None,
        Some(c) => Some(
            ListKey::parse(&c).ok_or_else(|| invalid("cursor is a `next` this route returned"))?,
        ),
    };
    let scope = ListScope::Page {
        after: after.as_ref(),
        limit,
    };
    let all = chat_list(&state, &who.user, scope).await?;
    let page: Vec<&Listing> = all
        .iter()
        .filter(|l| after.as_ref().is_none_or(|a| a.before(&l.key())))
        .take(limit + 1)
        .collect();
    let next = (page.len() > limit).then(|| page[limit - 1].key().encode());
    Ok(Json(json!({
        "conversations": &page[..page.len().min(limit)],
        "next": next,
    })))
}

/// `GET /api/v1/conversations/{id}`: one conversation of the caller's, as the list shows it.
async fn show(
    State(state): State<AppState>,
    who: Caller,
    Path(conv_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (conv, _) = open(&state, &who.user, &conv_id).await?;
    let id = conv.id();
    let found = chat_list(&state, &who.user, ListScope::One(&id))
        .await?
        .into_iter()
        .find(|l| l.conv_id == id);
    match found {
        Some(l) => Ok(Json(json!(l))),
        // One-to-one with no entry yet: an empty conversation.
        None => Ok(Json(json!(Listing {
            conv_id: id.clone(),
            kind: "direct",
            peer: conv.peer_of(&who.user).map(str::to_owned),
            name: None,
            last: None,
            last_seq: 0,
            read_seq: 0,
            unread: 0,
            peer_read_seq: Some(0),
            joined_seq: None,
            pinned: false,
            muted: false,
            activity: 0,
        }))),
    }
}

/// `GET /api/v1/conversations/{id}/messages?before=N|after=N&limit=L`: entries in the
/// conversation's order; `before` (or neither: the latest) scrolls back, `after` catches up.
/// Entries the caller deleted for themself are left out.
async fn messages(
    State(state): State<AppState>,
    who: Caller,
    Path(conv_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q = query.as_deref();
    let invalid = |what: String| ApiError::new(HttpError::InvalidQuery, what);
    let before = non_negative_param(q, "before").map_err(invalid)?;
    let after = non_negative_param(q, "after").map_err(invalid)?;
    let from = match (before, after) {
        (Some(_), Some(_)) => return Err(invalid("give before or after, not both".into())),
        (Some(b), None) => HistoryFrom::Before(b),
        (None, Some(a)) => HistoryFrom::After(a),
        (None, None) => HistoryFrom::Before(i64::MAX),
    };
    let limit = limit_param(q, 50, 1000)?;
    let (conv, floor) = open(&state, &who.user, &conv_id).await?;
    let store = store(&state)?;
    let (id, user) = (conv.id(), who.user.as_str());
    page_response(&state, user, limit, || async move {
        let mut page = store.history(&id, from, floor, limit, PAGE_BYTES).await?;
        let read = page.len();
        if let (Some(low), Some(high)) = (page.first(), page.last()) {
            let hidden = store.hidden(user, &id, low.conv_seq, high.conv_seq).await?;
            page.retain(|m| !hidden.contains(&m.conv_seq));
        }
        Ok((page, read))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    pinned: Option<bool>,
    muted: Option<bool>,
}

impl ApiBody for SettingsBody {}

/// `PATCH /api/v1/conversations/{id}` `{"pinned": bool, "muted": bool}` (either): the caller's
/// settings, told to the caller's other devices.
async fn settings(
    State(state): State<AppState>,
    who: Caller,
    Path(conv_id): Path<String>,
    Body(body): Body<SettingsBody>,
) -> Result<Json<Value>, ApiError> {
    let (conv, _) = open(&state, &who.user, &conv_id).await?;
    let id = conv.id();
    let now = store(&state)?
        .set_settings(&who.user, &id, body.pinned, body.muted)
        .await?;
    let change = json!({ "pinned": now.pinned, "muted": now.muted });
    state
        .messaging
        .conversation_updated(&who.user, &id, change.clone(), None);
    Ok(Json(
        json!({ "conv_id": id, "pinned": now.pinned, "muted": now.muted }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadBody {
    conv_seq: i64,
}

impl ApiBody for ReadBody {}

/// `POST /api/v1/conversations/{id}/read` `{"conv_seq": N}`: the caller has read up to N (never
/// moves back); the caller's other devices are told, and one-to-one the peer's (a live read
/// receipt).
async fn read(
    State(state): State<AppState>,
    who: Caller,
    Path(conv_id): Path<String>,
    Body(body): Body<ReadBody>,
) -> Result<Json<Value>, ApiError> {
    if body.conv_seq < 1 {
        return Err(ApiError::new(
            HttpError::InvalidRequest,
            "conv_seq is an entry's, 1 or more",
        ));
    }
    let (conv, _) = open(&state, &who.user, &conv_id).await?;
    store(&state)?;
    let upto = state
        .messaging
        .mark_read(&who.user, &conv, body.conv_seq, None)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                HttpError::ConversationNotFound,
                "you are not in it any more",
            )
        })?;
    Ok(Json(json!({ "conv_id": conv.id(), "read_seq": upto })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HideBody {
    conv_seqs: Vec<i64>,
}

impl ApiBody for HideBody {}

/// `POST /api/v1/conversations/{id}/hide` `{"conv_seqs": [N, ...]}`: delete for me: the entries
/// leave the caller's history on every device (the others keep them).
async fn hide(
    State(state): State<AppState>,
    who: Caller,
    Path(conv_id): Path<String>,
    Body(body): Body<HideBody>,
) -> Result<Json<Value>, ApiError> {
    if body.conv_seqs.is_empty()
        || body.conv_seqs.len() > MAX_HIDE
        || body.conv_seqs.iter().any(|s| *s < 1)
    {
        return Err(ApiError::new(
            HttpError::InvalidRequest,
            format!("conv_seqs holds 1 to {MAX_HIDE} entries' conv_seq (1 or more)"),
        ));
    }
    let (conv, _) = open(&state, &who.user, &conv_id).await?;
    let id = conv.id();
    let mut seqs = body.conv_seqs;
    seqs.sort_unstable();
    seqs.dedup();
    store(&state)?.hide(&who.user, &id, &seqs).await?;
    state
        .messaging
        .conversation_updated(&who.user, &id, json!({ "hidden": seqs }), None);
    Ok(Json(json!({ "conv_id": id, "hidden": seqs })))
}

/// `GET /api/v1/conversations/{id}/reads?conv_seq=N`: how many of the others in the
/// conversation have read up to entry N, of how many.
async fn reads(
    State(state): State<AppState>,
    who: Caller,
    Path(conv_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let seq = non_negative_param(query.as_deref(), "conv_seq")
        .map_err(|e| ApiError::new(HttpError::InvalidQuery, e))?
        .filter(|s| *s > 0)
        .ok_or_else(|| ApiError::new(HttpError::InvalidQuery, "conv_seq is required, 1 or more"))?;
    let (conv, _) = open(&state, &who.user, &conv_id).await?;
    let id = conv.id();
    let (read, of) = match &conv {
        Conversation::Group(group) => {
            let (members, _) = groups(&state)?.membership(group, &who.user).await?;
            let read = store(&state)?.read_count(group, seq, &who.user).await?;
            (read, members.len().saturating_sub(1) as i64)
        }
        Conversation::Direct(..) => {
            let peer_read = chat_list(&state, &who.user, ListScope::One(&id))
                .await?
                .into_iter()
                .find(|l| l.conv_id == id)
                .and_then(|l| l.peer_read_seq)
                .unwrap_or(0);
            (i64::from(peer_read >= seq), 1)
        }
    };
    Ok(Json(
        json!({ "conv_id": id, "conv_seq": seq, "read": read, "of": of }),
    ))
}
