//! The group API: `/api/v1/groups/...`. Every change also becomes a notification message in the
//! group (see `groups::notice`).

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::Response,
    routing::{get, post, put},
};
use natter_protocol::HttpError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, Caller, HistoryQuery,
    body::{ApiBody, Body, member_list_bytes},
    groups, history_page, valid_id, valid_user,
};
use crate::{
    groups::{GroupError, Notice},
    state::AppState,
    store::{MyGroup, Role, Stream},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/groups", post(create).get(list))
        .route(
            "/api/v1/groups/{group_id}",
            get(show).patch(rename).delete(dissolve),
        )
        .route("/api/v1/groups/{group_id}/members", post(add))
        .route(
            "/api/v1/groups/{group_id}/members/{user_id}",
            axum::routing::delete(remove),
        )
        .route(
            "/api/v1/groups/{group_id}/members/{user_id}/role",
            put(set_role),
        )
        .route("/api/v1/groups/{group_id}/messages", get(messages))
        .route("/api/v1/invites", get(invites))
        .route("/api/v1/invites/{group_id}/accept", post(accept))
        .route("/api/v1/invites/{group_id}", axum::routing::delete(decline))
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> ApiError {
        let error = match &e {
            GroupError::NotFound => HttpError::GroupNotFound,
            GroupError::NotAMember => HttpError::NotAMember,
            GroupError::Forbidden => HttpError::Forbidden,
            GroupError::Full(_) => HttpError::GroupFull,
            GroupError::TooManyGroups(..) => HttpError::TooManyGroups,
            GroupError::NotInvited => HttpError::NotInvited,
            GroupError::Invalid(_) => HttpError::InvalidRequest,
            GroupError::Store(_) => HttpError::StoreUnavailable,
        };
        if let GroupError::Store(s) = &e {
            tracing::error!(error = %s, "group store operation failed");
        }
        ApiError::new(error, e.to_string())
    }
}

async fn announce(state: &AppState, notice: Notice) {
    if let Some(cluster) = &state.cluster {
        cluster.members_changed(&notice.msg.receiver_id);
    }
    state.messaging.notify(notice).await;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateGroup {
    name: String,
    #[serde(default)]
    members: Vec<String>,
}

impl ApiBody for CreateGroup {
    fn max_bytes(config: &crate::Config) -> usize {
        member_list_bytes(config)
    }
}

/// `POST /api/v1/groups {"name", "members": [...]}` → 201: the caller owns the new group; the
/// others are members (`groups.invite: direct`) or invited (`accept`).
async fn create(
    State(state): State<AppState>,
    who: Caller,
    Body(req): Body<CreateGroup>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (user, groups) = (who.user, groups(&state)?);
    let created = groups.create(&user, &req.name, &req.members).await?;
    for notice in created.notices {
        announce(&state, notice).await;
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "group": created.group, "members": created.members, "invited": created.invited,
        })),
    ))
}

/// `GET /api/v1/groups`: the caller's groups, with their role and each group's last `seq`.
async fn list(State(state): State<AppState>, who: Caller) -> Result<Json<Value>, ApiError> {
    let (user, groups) = (who.user, groups(&state)?);
    let mut out = Vec::new();
    for MyGroup { group, role, seq } in groups.store().groups_of(&user).await? {
        out.push(json!({
            "group_id": group.group_id, "name": group.name, "owner": group.owner,
            "created_at": group.created_at, "role": role, "seq": seq,
        }));
    }
    Ok(Json(json!({ "groups": out })))
}

/// `GET /api/v1/groups/{id}`: the group, its members and last `seq` (members only).
async fn show(
    State(state): State<AppState>,
    who: Caller,
    Path(group_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    valid_id(&group_id, "group id")?;
    let (user, groups) = (who.user, groups(&state)?);
    groups.membership(&group_id, &user).await?;
    let store = groups.store();
    let group = store.group(&group_id).await?.ok_or(GroupError::NotFound)?;
    let members = store.members(&group_id).await?;
    let (seq, _) = store.cursors(&group_id).await?;
    Ok(Json(
        json!({ "group": group, "members": members, "seq": seq }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    name: String,
}

impl ApiBody for Rename {}

/// `PATCH /api/v1/groups/{id} {"name"}`: owner or admin.
async fn rename(
    State(state): State<AppState>,
    who: Caller,
    Path(group_id): Path<String>,
    Body(req): Body<Rename>,
) -> Result<Json<Value>, ApiError> {
    valid_id(&group_id, "group id")?;
    let (user, groups) = (who.user, groups(&state)?);
    let notice = groups.rename(&group_id, &user, &req.name).await?;
    announce(&state, notice).await;
    Ok(Json(json!({ "group_id": group_id, "name": req.name })))
}

/// `DELETE /api/v1/groups/{id}`: the owner dissolves the group.
async fn dissolve(
    State(state): State<AppState>,
    who: Caller,
    Path(group_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    valid_id(&group_id, "group id")?;
    let (user, groups) = (who.user, groups(&state)?);
    let notice = groups.dissolve(&group_id, &user).await?;
    announce(&state, notice).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMembers {
    members: Vec<String>,
}

impl ApiBody for AddMembers {
    fn max_bytes(config: &crate::Config) -> usize {
        member_list_bytes(config)
    }
}

/// `POST /api/v1/groups/{id}/members {"members": [...]}`: owner or admin; adds them
/// (`groups.invite: direct`) or invites them (`accept`).
async fn add(
    State(state): State<AppState>,
    who: Caller,
    Path(group_id): Path<String>,
    Body(req): Body<AddMembers>,
) -> Result<Json<Value>, ApiError> {
    valid_id(&group_id, "group id")?;
    let (user, groups) = (who.user, groups(&state)?);
    let added = groups.add(&group_id, &user, &req.members).await?;
    if let Some(notice) = added.notice {
        announce(&state, notice).await;
    }
    Ok(Json(
        json!({ "added": added.added, "invited": added.invited }),
    ))
}

/// `DELETE /api/v1/groups/{id}/members/{user}`: owner or admin removes; a member removes
/// themself (leaves).
async fn remove(
    State(state): State<AppState>,
    who: Caller,
    Path((group_id, member)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    valid_id(&group_id, "group id")?;
    valid_user(&member, "user id")?;
    let (user, groups) = (who.user, groups(&state)?);
    let notice = groups.remove(&group_id, &user, &member).await?;
    announce(&state, notice).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRole {
    role: Role,
}

impl ApiBody for SetRole {}

/// `PUT /api/v1/groups/{id}/members/{user}/role {"role": "admin" | "member"}`: owner only.
async fn set_role(
    State(state): State<AppState>,
    who: Caller,
    Path((group_id, member)): Path<(String, String)>,
    Body(req): Body<SetRole>,
) -> Result<Json<Value>, ApiError> {
    valid_id(&group_id, "group id")?;
    valid_user(&member, "user id")?;
    let (user, groups) = (who.user, groups(&state)?);
    let notice = groups.set_role(&group_id, &user, &member, req.role).await?;
    announce(&state, notice).await;
    Ok(Json(json!({ "user_id": member, "role": req.role })))
}

/// `GET /api/v1/groups/{id}/messages?after_seq=N&limit=L`: the group's messages after `N`
/// (members only; from when the member joined, unless `groups.new_members_see_history`).
async fn messages(
    State(state): State<AppState>,
    who: Caller,
    Path(group_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    valid_id(&group_id, "group id")?;
    let (user, groups) = (who.user, groups(&state)?);
    let (members, _) = groups.membership(&group_id, &user).await?;
    let HistoryQuery { after, limit } = HistoryQuery::parse(query.as_deref(), "after_seq")?;
    let joined = members.joined.get(&user).copied().unwrap_or(0);
    let from = if groups.config().new_members_see_history {
        after
    } else {
        after.max(joined)
    };
    history_page(
        &state,
        &user,
        groups.store(),
        &group_id,
        Stream::Inbox,
        from,
        limit,
    )
    .await
}

/// `GET /api/v1/invites`: the caller's pending invitations, newest first.
async fn invites(State(state): State<AppState>, who: Caller) -> Result<Json<Value>, ApiError> {
    let invites = groups(&state)?.store().invites_of(&who.user).await?;
    Ok(Json(json!({ "invites": invites })))
}

/// `POST /api/v1/invites/{group_id}/accept`: the caller joins the group it was invited to.
async fn accept(
    State(state): State<AppState>,
    who: Caller,
    Path(group_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    valid_id(&group_id, "group id")?;
    let (group, notice) = groups(&state)?.accept(&group_id, &who.user).await?;
    announce(&state, notice).await;
    Ok(Json(json!({ "group": group, "role": Role::Member })))
}

/// `DELETE /api/v1/invites/{group_id}`: the caller declines an invitation.
async fn decline(
    State(state): State<AppState>,
    who: Caller,
    Path(group_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    valid_id(&group_id, "group id")?;
    groups(&state)?.decline(&group_id, &who.user).await?;
    Ok(StatusCode::NO_CONTENT)
}
