//! `/email/mailinglist/:domain`: mailing lists, their members, the posts held for the
//! moderator and the archive; and `/email/unsubscribe/:token`, the RFC 8058 one-click link in
//! every copy a member gets (no API token: the link's signature is the authority).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use wispd_engine::directory::{DirError, Directory};
use wispd_engine::lists::{ListSpec, Received};
use wispd_store::schema::{ArchivedPost, HeldPost, ListMember, MailList};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{Caller, JsonBody};
use crate::view::Data;
use crate::{AppState, rfc3339};

async fn on_dir<R: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Directory) -> Result<R, DirError> + Send + 'static,
) -> Result<R, ApiError> {
    let dir = state.directory.clone();
    Ok(tokio::task::spawn_blocking(move || f(&dir)).await??)
}

fn require_domain(p: &Principal, domain: &str) -> Result<String, ApiError> {
    let d = domain.trim().to_ascii_lowercase();
    if p.owns_domain(&d) {
        Ok(d)
    } else {
        Err(ApiError::Forbidden(format!(
            "This token does not manage {d}"
        )))
    }
}

/// A mailing list.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": 1, "name": "team", "domain": "example.com",
    "address": "team@example.com", "owner": "boss@example.com", "policy": "members",
    "reply_to": "list", "subject_prefix": "[team]", "archive": false, "bounce_limit": 3,
    "members": 12, "posts": 40, "created_at": "2026-05-11T10:15:03+00:00"}))]
pub struct ListView {
    pub id: u64,
    pub name: String,
    pub domain: String,
    /// Where members post.
    pub address: String,
    pub owner: String,
    /// `members` (members only; others refused), `anyone`, `moderated` (others' posts are
    /// held for the owner), `announce` (the owner only, proven by authenticated submission
    /// or an aligned DKIM/SPF pass).
    pub policy: String,
    /// `list` (replies go to the list) or `author`.
    pub reply_to: String,
    pub subject_prefix: Option<String>,
    /// Posts are kept, readable through `/archive`.
    pub archive: bool,
    /// Bounces (within 7 days of each other) after which a member is disabled.
    pub bounce_limit: u32,
    /// Members, enabled or not.
    pub members: usize,
    /// Posts distributed so far.
    pub posts: u64,
    pub created_at: String,
}

impl ListView {
    fn new(l: &MailList, members: usize) -> ListView {
        ListView {
            id: l.id,
            name: l.name.clone(),
            domain: l.domain.clone(),
            address: l.address(),
            owner: l.owner.clone(),
            policy: l.policy.clone(),
            reply_to: l.reply_to.clone(),
            subject_prefix: l.subject_prefix.clone(),
            archive: l.archive,
            bounce_limit: l.bounce_limit,
            members,
            posts: l.posts,
            created_at: rfc3339(l.created_at),
        }
    }
}

/// A list member.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub address: String,
    /// False once the member bounced `bounce_limit` times (adding it again enables it).
    pub enabled: bool,
    pub bounces: u32,
    pub added_at: String,
    pub last_bounce: Option<String>,
}

impl From<&ListMember> for MemberView {
    fn from(m: &ListMember) -> MemberView {
        MemberView {
            address: m.address.clone(),
            enabled: m.enabled,
            bounces: m.bounces,
            added_at: rfc3339(m.added_at),
            last_bounce: m.last_bounce.map(rfc3339),
        }
    }
}

/// A list with its members.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListDetail {
    #[serde(flatten)]
    pub list: ListView,
    pub member_list: Vec<MemberView>,
}

/// `POST /email/mailinglist/:domain` and `PUT …/:name` (absent fields keep their value).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "team", "owner": "boss@example.com",
    "members": ["ann@example.com", "bob@other.org"], "policy": "members", "reply_to": "list",
    "subject_prefix": "[team]", "archive": true}))]
pub struct ListBody {
    /// The local part (required to create; a list can't be renamed).
    #[serde(default)]
    pub name: Option<String>,
    /// Required to create: who moderates and is told about held posts.
    #[serde(default)]
    pub owner: Option<String>,
    /// On create the first members; on `PUT` the whole new membership.
    #[serde(default)]
    pub members: Option<Vec<String>>,
    /// `members` (default), `anyone`, `moderated`, `announce`.
    #[serde(default)]
    pub policy: Option<String>,
    /// `author` (default) or `list`.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// Put in front of every subject that doesn't have it; `""` removes it.
    #[serde(default)]
    pub subject_prefix: Option<String>,
    #[serde(default)]
    pub archive: Option<bool>,
    /// 1 to 1000 (default 3).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub bounce_limit: Option<u32>,
}

impl ListBody {
    fn spec(self) -> ListSpec {
        ListSpec {
            name: self.name,
            owner: self.owner,
            members: self.members,
            policy: self.policy,
            reply_to: self.reply_to,
            subject_prefix: self.subject_prefix,
            archive: self.archive,
            bounce_limit: self.bounce_limit,
        }
    }
}

/// Members to add or remove: one (`address`) or many (`addresses`), or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"addresses": ["ann@example.com", "bob@other.org"]}))]
pub struct MembersBody {
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
}

impl MembersBody {
    fn all(self) -> Result<Vec<String>, ApiError> {
        let mut all = self.addresses;
        all.extend(self.address);
        if all.is_empty() {
            return Err(ApiError::Validation(
                "address or addresses is required".into(),
            ));
        }
        Ok(all)
    }
}

/// What a members change did.
#[derive(Debug, Serialize, ToSchema)]
pub struct MembersChanged {
    /// Added (or enabled again) / removed by this request; members already so are not named.
    pub changed: Vec<String>,
    /// Members now.
    pub members: usize,
}

/// A post held for the moderator.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeldView {
    pub id: u64,
    pub sender: String,
    pub author: String,
    pub subject: String,
    pub size: u64,
    pub received_at: String,
}

impl From<&HeldPost> for HeldView {
    fn from(h: &HeldPost) -> HeldView {
        HeldView {
            id: h.id,
            sender: h.sender.clone(),
            author: h.author.clone(),
            subject: h.subject.clone(),
            size: h.size,
            received_at: rfc3339(h.received_at),
        }
    }
}

/// The moderator's decision on a held post.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"action": "approve"}))]
pub struct ModerateBody {
    /// `approve` (distributed now) or `reject` (deleted; the author is not told).
    #[schema(required = true)]
    pub action: Option<String>,
}

/// What was done with a held post.
#[derive(Debug, Serialize, ToSchema)]
pub struct Moderated {
    pub post: HeldView,
    /// `approved` or `rejected`.
    pub outcome: String,
    pub message: String,
}

/// An archived post.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArchiveView {
    pub number: u64,
    pub author: String,
    pub subject: String,
    pub size: u64,
    pub posted_at: String,
}

impl From<&ArchivedPost> for ArchiveView {
    fn from(a: &ArchivedPost) -> ArchiveView {
        ArchiveView {
            number: a.number,
            author: a.author.clone(),
            subject: a.subject.clone(),
            size: a.size,
            posted_at: rfc3339(a.posted_at),
        }
    }
}

/// Whom a one-click unsubscribe link is for.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnsubscribeView {
    pub list: String,
    pub address: String,
    /// Whether the address is (still) a member.
    pub subscribed: bool,
}

fn count(d: &Directory, l: &MailList) -> Result<usize, DirError> {
    d.list(&l.domain, &l.name).map(|(_, m)| m.len())
}

/// The domain's lists.
#[utoipa::path(
    get,
    path = "/api/v1/email/mailinglist/{domain}",
    operation_id = "email_mailinglist_list",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("domain" = String, Path, description = "A domain the token manages", example = "example.com")),
    responses((status = 200, description = "The domain's lists", body = Data<Vec<ListView>>))
)]
pub async fn lists(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(domain): Path<String>,
) -> Result<Json<Data<Vec<ListView>>>, ApiError> {
    let domain = require_domain(&p, &domain)?;
    let all = on_dir(&s, move |d| d.lists(&domain)).await?;
    Ok(Json(Data::new(
        all.iter().map(|(l, n)| ListView::new(l, *n)).collect(),
    )))
}

/// Creates a list. Its addresses (`name@`, `name-subscribe@`, `name-unsubscribe@`,
/// `name-confirm@`, `name+bounces@`) must not be an account's, a forwarder's or another list's.
#[utoipa::path(
    post,
    path = "/api/v1/email/mailinglist/{domain}",
    operation_id = "email_mailinglist_create",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(("domain" = String, Path, description = "A domain the token manages", example = "example.com")),
    request_body = ListBody,
    responses((status = 201, description = "Created", body = Data<ListView>))
)]
pub async fn create(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(domain): Path<String>,
    JsonBody(b): JsonBody<ListBody>,
) -> Result<(StatusCode, Json<Data<ListView>>), ApiError> {
    let domain = require_domain(&p, &domain)?;
    let view = on_dir(&s, move |d| {
        let l = d.create_list(&domain, b.spec())?;
        Ok(ListView::new(&l, count(d, &l)?))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(Data::new(view))))
}

/// A list with its members.
#[utoipa::path(
    get,
    path = "/api/v1/email/mailinglist/{domain}/{name}",
    operation_id = "email_mailinglist_get",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(
        ("domain" = String, Path, description = "A domain the token manages", example = "example.com"),
        ("name" = String, Path, description = "The list's local part", example = "team"),
    ),
    responses((status = 200, description = "The list", body = Data<ListDetail>))
)]
pub async fn get(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((domain, name)): Path<(String, String)>,
) -> Result<Json<Data<ListDetail>>, ApiError> {
    let domain = require_domain(&p, &domain)?;
    let (l, members) = on_dir(&s, move |d| d.list(&domain, &name)).await?;
    Ok(Json(Data::new(ListDetail {
        list: ListView::new(&l, members.len()),
        member_list: members.iter().map(MemberView::from).collect(),
    })))
}

/// Changes a list's settings; `members`, when given, is the whole new membership.
#[utoipa::path(
    put,
    path = "/api/v1/email/mailinglist/{domain}/{name}",
    operation_id = "email_mailinglist_update",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(
        ("domain" = String, Path, description = "A domain the token manages", example = "example.com"),
        ("name" = String, Path, description = "The list's local part", example = "team"),
    ),
    request_body = ListBody,
    responses((status = 200, description = "The list as changed", body = Data<ListView>))
)]
pub async fn update(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((domain, name)): Path<(String, String)>,
    JsonBody(b): JsonBody<ListBody>,
) -> Result<Json<Data<ListView>>, ApiError> {
    let domain = require_domain(&p, &domain)?;
    let nothing = b.owner.is_none()
        && b.members.is_none()
        && b.policy.is_none()
        && b.reply_to.is_none()
        && b.subject_prefix.is_none()
        && b.archive.is_none()
        && b.bounce_limit.is_none();
    if nothing {
        return Err(ApiError::Validation(
            "Nothing to change: give at least one of owner, members, policy, reply_to, subject_prefix, archive, bounce_limit".into(),
        ));
    }
    let view = on_dir(&s, move |d| {
        let l = d.update_list(&domain, &name, b.spec())?;
        Ok(ListView::new(&l, count(d, &l)?))
    })
    .await?;
    Ok(Json(Data::new(view)))
}

/// Deletes a list with its members, held posts, pending requests and archive.
#[utoipa::path(
    delete,
    path = "/api/v1/email/mailinglist/{domain}/{name}",
    operation_id = "email_mailinglist_delete",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(
        ("domain" = String, Path, description = "A domain the token manages", example = "example.com"),
        ("name" = String, Path, description = "The list's local part", example = "team"),
    ),
    responses((status = 200, description = "The deleted list", body = Data<ListView>))
)]
pub async fn delete(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((domain, name)): Path<(String, String)>,
) -> Result<Json<Data<ListView>>, ApiError> {
    let domain = require_domain(&p, &domain)?;
    let view = on_dir(&s, move |d| {
        let (_, members) = d.list(&domain, &name)?;
        let l = d.delete_list(&domain, &name)?;
        Ok(ListView::new(&l, members.len()))
    })
    .await?;
    Ok(Json(Data::new(view)))
}

/// The list's members.
#[utoipa::path(
    get,
    path = "/api/v1/email/mailinglist/{domain}/{name}/members",
    operation_id = "email_mailinglist_members",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(
        ("domain" = String, Path, description = "A domain the token manages", example = "example.com"),
        ("name" = String, Path, description = "The list's local part", example = "team"),
    ),
    responses((status = 200, description = "The members", body = Data<Vec<MemberView>>))
)]
pub async fn members(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((domain, name)): Path<(String, String)>,
) -> Result<Json<Data<Vec<MemberView>>>, ApiError> {
    let domain = require_domain(&p, &domain)?;
    let (_, members) = on_dir(&s, move |d| d.list(&domain, &name)).await?;
    Ok(Json(Data::new(
        members.iter().map(MemberView::from).collect(),
    )))
}

/// Adds members (idempotent; a member disabled by bounces is enabled again).
#[utoipa::path(
    post,
    path = "/api/v1/email/mailinglist/{domain}/{name}/members",
    operation_id = "email_mailinglist_members_add",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(
        ("domain" = String, Path, description = "A domain the token manages", example = "example.com"),
        ("name" = String, Path, description = "The list's local part", example = "team"),
    ),
    request_body = MembersBody,
    responses((status = 200, description = "What changed", body = Data<MembersChanged>))
)]
pub async fn members_add(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((domain, name)): Path<(String, String)>,
    JsonBody(b): JsonBody<MembersBody>,
) -> Result<Json<Data<MembersChanged>>, ApiError> {
    change_members(&s, &p, &domain, &name, b, true).await
}

/// Removes members (idempotent).
#[utoipa::path(
    delete,
    path = "/api/v1/email/mailinglist/{domain}/{name}/members",
    operation_id = "email_mailinglist_members_remove",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(
        ("domain" = String, Path, description = "A domain the token manages", example = "example.com"),
        ("name" = String, Path, description = "The list's local part", example = "team"),
    ),
    request_body = MembersBody,
    responses((status = 200, description = "What changed", body = Data<MembersChanged>))
)]
pub async fn members_remove(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((domain, name)): Path<(String, String)>,
    JsonBody(b): JsonBody<MembersBody>,
) -> Result<Json<Data<MembersChanged>>, ApiError> {
    change_members(&s, &p, &domain, &name, b, false).await
}

async fn change_members(
    s: &AppState,
    p: &Principal,
    domain: &str,
    name: &str,
    b: MembersBody,
    add: bool,
) -> Result<Json<Data<MembersChanged>>, ApiError> {
    let domain = require_domain(p, domain)?;
    let all = b.all()?;
    let name = name.to_string();
    let changed = on_dir(s, move |d| {
        let changed = if add {
            d.add_list_members(&domain, &name, &all)?
        } else {
            d.remove_list_members(&domain, &name, &all)?
        };
        let (_, m) = d.list(&domain, &name)?;
        Ok(MembersChanged {
            changed,
            members: m.len(),
        })
    })
    .await?;
    Ok(Json(Data::new(changed)))
}

/// Posts held for the moderator.
#[utoipa::path(
    get,
    path = "/api/v1/email/mailinglist/{domain}/{name}/held",
    operation_id = "email_mailinglist_held",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(
        ("domain" = String, Path, description = "A domain the token manages", example = "example.com"),
        ("name" = String, Path, description = "The list's local part", example = "team"),
    ),
    responses((status = 200, description = "The held posts", body = Data<Vec<HeldView>>))
)]
pub async fn held(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((domain, name)): Path<(String, String)>,
) -> Result<Json<Data<Vec<HeldView>>>, ApiError> {
    let domain = require_domain(&p, &domain)?;
    let held = on_dir(&s, move |d| d.held_posts(&domain, &name)).await?;
    Ok(Json(Data::new(held.iter().map(HeldView::from).collect())))
}

/// Approves (distributes) or rejects (deletes) a held post.
#[utoipa::path(
    post,
    path = "/api/v1/email/mailinglist/{domain}/{name}/held/{id}",
    operation_id = "email_mailinglist_moderate",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(
        ("domain" = String, Path, description = "A domain the token manages", example = "example.com"),
        ("name" = String, Path, description = "The list's local part", example = "team"),
        ("id" = u64, Path, description = "The held post's id"),
    ),
    request_body = ModerateBody,
    responses((status = 200, description = "What was done", body = Data<Moderated>))
)]
pub async fn moderate(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((domain, name, id)): Path<(String, String, String)>,
    JsonBody(b): JsonBody<ModerateBody>,
) -> Result<Json<Data<Moderated>>, ApiError> {
    let domain = require_domain(&p, &domain)?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("No held post {id:?}")))?;
    let approve = match b.action.as_deref() {
        Some("approve") => true,
        Some("reject") => false,
        _ => {
            return Err(ApiError::Validation(
                "action must be approve or reject".into(),
            ));
        }
    };
    let (list, post, message) = on_dir(&s, move |d| d.take_held(&domain, &name, id)).await?;
    let view = HeldView::from(&post);
    if !approve {
        tracing::info!(list = %list.address(), held = id, "held post rejected");
        return Ok(Json(Data::new(Moderated {
            post: view,
            outcome: "rejected".into(),
            message: "The post was deleted".into(),
        })));
    }
    match s.mail.lists().approve(&list, &post, &message).await {
        Ok(Received::Done(m)) => Ok(Json(Data::new(Moderated {
            post: view,
            outcome: "approved".into(),
            message: m,
        }))),
        other => {
            // not lost: held again for the next try
            let restore = s.mail.deliverer().write({
                let (post, message) = (post.clone(), message.clone());
                move |w| {
                    w.put(&wispd_store::schema::MAIL_LIST_HELD, post.id, &post)?;
                    w.put_raw(&wispd_store::schema::MAIL_LIST_HELD_DATA, post.id, &message)
                }
            });
            let _ = restore.await;
            let why = match other {
                Ok(Received::Refused(_, _, m) | Received::Failed(m)) => m,
                Ok(Received::Done(_)) => String::new(),
                Err(e) => e.to_string(),
            };
            Err(ApiError::Unavailable(format!(
                "The post could not be distributed and is held again: {why}"
            )))
        }
    }
}

/// The archive's posts, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/email/mailinglist/{domain}/{name}/archive",
    operation_id = "email_mailinglist_archive",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(
        ("domain" = String, Path, description = "A domain the token manages", example = "example.com"),
        ("name" = String, Path, description = "The list's local part", example = "team"),
    ),
    responses((status = 200, description = "The archived posts", body = Data<Vec<ArchiveView>>))
)]
pub async fn archive(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((domain, name)): Path<(String, String)>,
) -> Result<Json<Data<Vec<ArchiveView>>>, ApiError> {
    let domain = require_domain(&p, &domain)?;
    let all = on_dir(&s, move |d| d.archive(&domain, &name)).await?;
    Ok(Json(Data::new(all.iter().map(ArchiveView::from).collect())))
}

/// One archived post, as sent to the members (`message/rfc822`).
#[utoipa::path(
    get,
    path = "/api/v1/email/mailinglist/{domain}/{name}/archive/{number}",
    operation_id = "email_mailinglist_archived",
    tag = "email",
    security(("bearer" = ["admin", "user"])),
    params(
        ("domain" = String, Path, description = "A domain the token manages", example = "example.com"),
        ("name" = String, Path, description = "The list's local part", example = "team"),
        ("number" = u64, Path, description = "The post's number"),
    ),
    responses((status = 200, description = "The message", content_type = "message/rfc822", body = String))
)]
pub async fn archived(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((domain, name, number)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let domain = require_domain(&p, &domain)?;
    let number: u64 = number
        .parse()
        .map_err(|_| ApiError::NotFound(format!("No archived post {number:?}")))?;
    let raw = on_dir(&s, move |d| d.archived(&domain, &name, number)).await?;
    Response::builder()
        .header(header::CONTENT_TYPE, "message/rfc822")
        .body(Body::from(raw))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Whom a one-click unsubscribe link is for (a GET never unsubscribes: link scanners follow
/// links). No API token.
#[utoipa::path(
    get,
    path = "/api/v1/email/unsubscribe/{token}",
    operation_id = "email_unsubscribe_get",
    tag = "email",
    params(("token" = String, Path, description = "The member's signed token from List-Unsubscribe")),
    responses(
        (status = 200, description = "The list and address", body = Data<UnsubscribeView>),
        (status = 404, description = "Not a genuine link (NOT_FOUND)", body = crate::view::ErrorEnvelope),
    )
)]
pub async fn unsubscribe_get(
    State(s): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<Data<UnsubscribeView>>, ApiError> {
    let view = on_dir(&s, move |d| {
        let (list, member) = d.unsubscribe_token(&token)?;
        let subscribed = d.list_member(list.id, &member)?.is_some();
        Ok(UnsubscribeView {
            list: list.address(),
            address: member,
            subscribed,
        })
    })
    .await?;
    Ok(Json(Data::new(view)))
}

/// RFC 8058 one-click unsubscribe: the member named by the link leaves the list (any body,
/// `List-Unsubscribe=One-Click` as mail clients send it). No API token.
#[utoipa::path(
    post,
    path = "/api/v1/email/unsubscribe/{token}",
    operation_id = "email_unsubscribe_post",
    tag = "email",
    params(("token" = String, Path, description = "The member's signed token from List-Unsubscribe")),
    responses(
        (status = 200, description = "Unsubscribed (or it was not a member any more)", body = Data<UnsubscribeView>),
        (status = 404, description = "Not a genuine link (NOT_FOUND)", body = crate::view::ErrorEnvelope),
    )
)]
pub async fn unsubscribe_post(
    State(s): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<Data<UnsubscribeView>>, ApiError> {
    let view = on_dir(&s, move |d| {
        let (list, member) = d.unsubscribe_token(&token)?;
        if d.unsubscribe(list.id, &member)? {
            tracing::info!(list = %list.address(), %member, "one-click unsubscribe");
        }
        Ok(UnsubscribeView {
            list: list.address(),
            address: member,
            subscribed: false,
        })
    })
    .await?;
    Ok(Json(Data::new(view)))
}

#[derive(OpenApi)]
#[openapi(paths(
    lists,
    create,
    get,
    update,
    delete,
    members,
    members_add,
    members_remove,
    held,
    moderate,
    archive,
    archived,
    unsubscribe_get,
    unsubscribe_post
))]
pub struct ListsApi;
