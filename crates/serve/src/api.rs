//! The HTTP API (axum) and its OpenAPI document (utoipa).
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/recommend?user=ID&k=20` | top-k unseen items from the served model; 404 unknown user, 410 erased user, 400 bad `k` |
//! | `POST /v1/forget` | `{"user": ID, "items": [ID, ...]}`, `{"user": ID}` or `{"item": ID}`; 202 `{"id"}` once committed |
//! | `GET /v1/forget/{id}` | status `queued` / `applied` / `failed`, the removed edges and the receipt |
//! | `GET /v1/health` | liveness, model version, queue depth; 503 with the reason while the worker is down |
//! | `GET /metrics` | Prometheus text |
//! | `GET /openapi.json` | this API as OpenAPI 3.1 |
//!
//! The forget routes require `Authorization: Bearer <token>`, compared in constant time. Every error is a
//! JSON object `{"error": "..."}` with a 4xx status for anything the client sent.
//!
//! # Overload
//!
//! Bodies over [`Limits::body_bytes`] get 413. The forget routes answer 429 with a `Retry-After` header (whole
//! seconds) when the token's rate limit ([`Limits::rate`], a token bucket per bearer token) is spent, and a
//! new forget request gets 429 when [`Limits::max_queue`] requests are already queued in the ledger (it is
//! not recorded; a repeat of a recorded request is still answered with its id). Recommendations are never
//! refused for load: they read the served model without waiting for the worker or the ledger.
//!
//! # Requests that name what is already forgotten
//!
//! A forget request is accepted when its ids name interactions the model has *or had* (a `404` for an
//! unknown id, a `422` for known ids that never named an interaction). So forgetting is idempotent by
//! effect, not only by content:
//! - the same request again (any item order, repeats) gets the same id: `202` with `"duplicate": true` and
//!   the status it has (`queued`, or `applied` with what it removed the first time); nothing new is queued;
//! - a *different* request naming pairs an earlier request already removed, or a user (item) all of whose
//!   interactions were already forgotten, is a new request: `202` with `"duplicate": false`. When applied it
//!   removes nothing new: its status is `applied` with `"edges": []`, no receipt, and
//!   `"already_forgotten": true` (the model did not change for it; a batch of only such requests writes no
//!   new version). A request that names some remaining interactions removes those, and only those.
//!
//! An erased user (all of its interactions forgotten) still gets `410` from `GET /v1/recommend`; a forget
//! request naming it is not an error, by the rule above.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use unlearnrec_core::io::sha256_hex;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::ledger::{Forget, Ledger, Status};
use crate::metrics::Metrics;
use crate::store::{Rejection, Served};
use crate::worker::Kick;

/// Bounds on what clients may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request body size, bytes.
    pub body_bytes: usize,
    /// Items in one `{"user", "items"}` request.
    pub items: usize,
    /// Length of one external id, bytes.
    pub id_bytes: usize,
    /// Largest `k` of a recommendation.
    pub max_k: usize,
    /// Forget requests queued in the ledger at most (`--max-queue`); a new one past it gets 429. `None`:
    /// unbounded.
    pub max_queue: Option<u64>,
    /// The rate limit of the forget routes per bearer token (`--rate-limit`, `--rate-burst`); `None`: off.
    pub rate: Option<Rate>,
}

impl Default for Limits {
    fn default() -> Self {
        Self { body_bytes: 64 * 1024, items: 1000, id_bytes: 256, max_k: 1000, max_queue: None, rate: None }
    }
}

/// A token-bucket rate: `per_sec` requests a second on average, bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second (at least 1).
    pub per_sec: u32,
    /// The bucket's size (at least 1).
    pub burst: u32,
}

/// Token buckets of [`Rate`], one per bearer token (keyed by its SHA-256).
pub struct RateLimiter {
    rate: Option<Rate>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// Buckets of `rate`; `None`: every request passes.
    pub fn new(rate: Option<Rate>) -> Self {
        Self { rate, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request from `key`'s bucket; `Err(seconds)` (whole, at least 1) until one is available when
    /// it is empty.
    pub fn take(&self, key: &str) -> Result<(), u64> {
        let Some(rate) = self.rate else { return Ok(()) };
        let (per_sec, burst) = (f64::from(rate.per_sec.max(1)), f64::from(rate.burst.max(1)));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = buckets.entry(key.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * per_sec).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / per_sec).ceil().max(1.0) as u64)
        }
    }
}

/// The bearer token; only its SHA-256 is kept, and `Debug` does not show it.
#[derive(Clone)]
pub struct Token {
    sha256: String,
}

impl Token {
    /// A token from its text (surrounding whitespace trimmed).
    ///
    /// # Errors
    /// An empty token.
    pub fn new(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("the token is empty".into());
        }
        Ok(Self { sha256: sha256_hex(t.as_bytes()) })
    }

    /// A key naming the token (its SHA-256), for per-token state such as rate limits.
    pub fn key(&self) -> &str {
        &self.sha256
    }

    /// Whether `given` is the token, in time independent of where they differ (both sides are hashed
    /// first, so the length does not leak either).
    pub fn matches(&self, given: &str) -> bool {
        sha256_hex(given.as_bytes()).as_bytes().ct_eq(self.sha256.as_bytes()).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The served model.
    pub served: Arc<ArcSwap<Served>>,
    /// The handlers' ledger connection.
    pub ledger: Arc<Mutex<Ledger>>,
    /// Wakes the worker.
    pub kick: Arc<Kick>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The bearer token of the forget routes.
    pub token: Token,
    /// Input bounds.
    pub limits: Limits,
    /// The rate limits' buckets ([`Limits::rate`]).
    pub rates: Arc<RateLimiter>,
}

/// An error response: a status and `{"error": message}` (with `Retry-After` on a 429).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None }
    }
    fn too_many(message: impl Into<String>, retry_after: u64) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(StatusCode::TOO_MANY_REQUESTS, message) }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("{e}");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "the ledger is unavailable; try again")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(ErrorBody { error: self.message })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Unknown { .. } => ApiError::new(StatusCode::NOT_FOUND, r.to_string()),
            Rejection::NoInteraction(_) => ApiError::unprocessable(r.to_string()),
        }
    }
}

/// An error.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// Query of `GET /v1/recommend`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecommendQuery {
    /// The user's external id.
    #[param(example = "7")]
    user: String,
    /// How many items (1 to 1000, default 20).
    #[param(minimum = 1, maximum = 1000)]
    k: Option<i64>,
}

/// One recommended item.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Scored {
    /// The item's external id.
    pub item: String,
    /// Its score (dot product of the final embeddings).
    pub score: f32,
}

/// Recommendations for one user.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Recommendations {
    /// The user.
    pub user: String,
    /// The model version that answered.
    pub model_version: u64,
    /// Best first; items the user has seen are excluded.
    pub items: Vec<Scored>,
}

/// An external id: a string, or a non-negative integer taken as its decimal text.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ExternalId {
    /// Text.
    Text(String),
    /// A number.
    Number(u64),
}

impl ExternalId {
    fn into_string(self) -> String {
        match self {
            ExternalId::Text(s) => s,
            ExternalId::Number(n) => n.to_string(),
        }
    }
}

/// A forget request, as documented: exactly one of three shapes. (Bodies are parsed with [`ForgetBody`],
/// which names what is wrong with any other shape.)
#[derive(ToSchema)]
#[serde(untagged, deny_unknown_fields)]
#[allow(dead_code)]
pub enum ForgetRequest {
    /// These interactions of one user.
    #[schema(title = "pairs")]
    Pairs {
        /// The user.
        user: ExternalId,
        /// The items whose interactions with the user go.
        #[schema(min_items = 1, max_items = 1000)]
        items: Vec<ExternalId>,
    },
    /// Every interaction of a user.
    #[schema(title = "user")]
    User {
        /// The user.
        user: ExternalId,
    },
    /// Every interaction of an item.
    #[schema(title = "item")]
    Item {
        /// The item.
        item: ExternalId,
    },
}

/// A forget request: `{"user", "items"}` (these interactions), `{"user"}` (all of the user's) or
/// `{"item"}` (all of the item's).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetBody {
    /// The user.
    user: Option<ExternalId>,
    /// With `user`: the items whose interactions with the user go (1 to 1000).
    items: Option<Vec<ExternalId>>,
    /// Alone: the item all of whose interactions go.
    item: Option<ExternalId>,
}

/// A committed forget request.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The request id (a content hash: the same request gets the same id).
    pub id: String,
    /// Its status now.
    pub status: Status,
    /// True when the same request had been committed before.
    pub duplicate: bool,
}

/// Where a forget request stands.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ForgetStatus {
    /// The request id.
    pub id: String,
    /// `queued`, `applied` or `failed`.
    pub status: Status,
    /// The request, canonical (`kind`: `pairs`, `user` or `item`).
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was committed (UTC).
    pub created_utc: String,
    /// When it was applied or failed (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_utc: Option<String>,
    /// The model version that applied it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<u64>,
    /// The `[user, item]` pairs it removed (empty when an earlier request had already removed them).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Vec<String>>>)]
    pub edges: Option<Vec<(String, String)>>,
    /// The receipt of the removal (`unlearn::receipt::Receipt`), when it removed edges the model learned from.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub receipt: Option<serde_json::Value>,
    /// Once applied: true when everything it names had already been forgotten by earlier requests, so it
    /// removed nothing and changed no model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub already_forgotten: Option<bool>,
}

/// Liveness.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unhealthy` (with a 503) while the worker is down.
    pub status: String,
    /// Why the service is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Restarts of the worker after a panic since the process started.
    #[serde(default)]
    pub worker_restarts: u64,
    /// The served model version.
    pub model_version: u64,
    /// Queued forget requests (as the worker last counted them).
    pub queued: u64,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "unlearnrec serve",
        description = "Recommendations from a graph recommender, and erasure of interactions with the UnlearnRec influence encoder. Forget requests are committed to a durable ledger before they are acknowledged and applied exactly once, in batches."
    ),
    paths(recommend, forget, forget_status, health, metrics_text, openapi_json),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document of the service.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The router with every route, the metrics middleware and the body limit.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/recommend", get(recommend))
        .route("/v1/forget", post(forget))
        .route("/v1/forget/{id}", get(forget_status))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .route_layer(middleware::from_fn_with_state(state.metrics.clone(), track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.body_bytes))
        .with_state(state)
}

async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("other", |p| p.as_str()).to_owned();
    let method = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        _ => "other",
    };
    let t = Instant::now();
    let resp = next.run(req).await;
    m.request(&route, method, resp.status().as_u16(), t.elapsed().as_secs_f64());
    resp
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match given {
        Some(t) if state.token.matches(t) => Ok(()),
        _ => Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")),
    }
}

/// [`authorize`], then the token's rate limit.
fn admit(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    authorize(state, headers)?;
    state.rates.take(state.token.key()).map_err(|secs| {
        state.metrics.rate_limited();
        ApiError::too_many("rate limit of this token exceeded; retry later", secs)
    })
}

/// Runs a ledger operation off the async threads.
async fn with_ledger<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut Ledger) -> crate::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let ledger = state.ledger.clone();
    tokio::task::spawn_blocking(move || {
        let mut l = ledger.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut l)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
}

/// Top-k unseen items for a user.
#[utoipa::path(
    get,
    path = "/v1/recommend",
    params(RecommendQuery),
    responses(
        (status = 200, description = "Recommendations, best first", body = Recommendations),
        (status = 400, description = "Missing user or k outside 1..=1000", body = ErrorBody),
        (status = 404, description = "Unknown user", body = ErrorBody),
        (status = 410, description = "The user was erased: all of its interactions were forgotten", body = ErrorBody),
    )
)]
async fn recommend(
    State(state): State<AppState>,
    query: Result<Query<RecommendQuery>, QueryRejection>,
) -> Result<Json<Recommendations>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let k = q.k.unwrap_or(20);
    if !(1..=state.limits.max_k as i64).contains(&k) {
        return Err(ApiError::bad_request(format!("k must be between 1 and {}", state.limits.max_k)));
    }
    let served = state.served.load_full();
    let user = served
        .user(&q.user)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("unknown user id {:?}", q.user)))?;
    if served.is_erased_user(user) {
        return Err(ApiError::new(
            StatusCode::GONE,
            format!("user {:?} was erased: all of its interactions were forgotten", q.user),
        ));
    }
    let top = served.recommend(user, k as usize).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(Recommendations {
        user: q.user,
        model_version: served.version,
        items: top.into_iter().map(|(item, score)| Scored { item, score }).collect(),
    }))
}

/// Parses and checks the shape of a forget body (not the ids against the model).
pub fn parse_forget(bytes: &[u8], limits: &Limits) -> Result<Forget, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty body; expected {\"user\": ID, \"items\": [ID, ...]}, {\"user\": ID} or {\"item\": ID}",
        ));
    }
    let body: ForgetBody = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::unprocessable(format!("invalid request: {e}")),
        _ => ApiError::bad_request(format!("malformed JSON: {e}")),
    })?;
    let id = |v: ExternalId, what: &str| {
        let s = v.into_string();
        if s.is_empty() || s.len() > limits.id_bytes {
            return Err(ApiError::unprocessable(format!("{what} id must be 1 to {} bytes", limits.id_bytes)));
        }
        Ok(s)
    };
    let forget = match (body.user, body.items, body.item) {
        (Some(u), Some(items), None) => {
            if items.is_empty() || items.len() > limits.items {
                return Err(ApiError::unprocessable(format!("items must list 1 to {} ids", limits.items)));
            }
            let items = items.into_iter().map(|i| id(i, "item")).collect::<Result<_, _>>()?;
            Forget::Pairs { user: id(u, "user")?, items }
        }
        (Some(u), None, None) => Forget::User { user: id(u, "user")? },
        (None, None, Some(i)) => Forget::Item { item: id(i, "item")? },
        _ => {
            return Err(ApiError::unprocessable(
                "expected {\"user\": ID, \"items\": [ID, ...]}, {\"user\": ID} or {\"item\": ID}",
            ));
        }
    };
    Ok(forget.canonical())
}

/// Commits a forget request to the ledger; 202 only once it is durable.
#[utoipa::path(
    post,
    path = "/v1/forget",
    request_body = ForgetRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Committed to the ledger (or already there: same id)", body = Accepted),
        (status = 400, description = "Empty body or malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token; nothing recorded", body = ErrorBody),
        (status = 404, description = "Unknown user or item", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 422, description = "Wrong shape, or ids that name no interaction", body = ErrorBody),
        (status = 429, description = "The token's rate limit is spent, or the queue is full (nothing recorded); see Retry-After", body = ErrorBody),
    )
)]
async fn forget(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    admit(&state, &headers)?;
    let bytes = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let forget = parse_forget(&bytes, &state.limits)?;
    state.served.load().check(&forget)?;
    let max = state.limits.max_queue;
    let sub = with_ledger(&state, move |l| l.submit_bounded(&forget, max)).await?.map_err(|queued| {
        state.metrics.queue_full();
        // About one batch: the mean time the worker took per batch so far.
        let secs = state.metrics.mean_batch_secs().unwrap_or(1.0).ceil().clamp(1.0, 60.0) as u64;
        ApiError::too_many(format!("the forget queue is full ({queued} queued); retry later"), secs)
    })?;
    state.kick.kick();
    Ok((StatusCode::ACCEPTED, Json(Accepted { id: sub.row.id, status: sub.row.status, duplicate: sub.duplicate })))
}

/// The status of a forget request, with its receipt once applied.
#[utoipa::path(
    get,
    path = "/v1/forget/{id}",
    params(("id" = String, Path, description = "The id returned by POST /v1/forget")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The request's status", body = ForgetStatus),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such request", body = ErrorBody),
        (status = 429, description = "The token's rate limit is spent; see Retry-After", body = ErrorBody),
    )
)]
async fn forget_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ForgetStatus>, ApiError> {
    admit(&state, &headers)?;
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let lookup = id.clone();
    let row = with_ledger(&state, move |l| l.get(&lookup))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no forget request {id:?}")))?;
    let receipt = row.receipt.as_deref().map(serde_json::from_str).transpose().map_err(ApiError::internal)?;
    Ok(Json(ForgetStatus {
        id: row.id,
        status: row.status,
        request: serde_json::to_value(&row.forget).map_err(ApiError::internal)?,
        reason: row.reason,
        created_utc: row.created_utc,
        done_utc: row.done_utc,
        model_version: row.version,
        already_forgotten: (row.status == Status::Applied).then(|| row.edges.as_ref().is_none_or(Vec::is_empty)),
        edges: row.edges,
        receipt,
    }))
}

/// Liveness, model version and queue depth; 503 while the worker is down (after a panic, until it is
/// restarted, or for good when it gave up), with the reason.
#[utoipa::path(
    get,
    path = "/v1/health",
    responses(
        (status = 200, description = "Serving, and the worker runs", body = Health),
        (status = 503, description = "Recommendations are served but the worker is down: forget requests are recorded, not applied", body = Health),
    )
)]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let reason = state.metrics.worker_status();
    let status = if reason.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let health = Health {
        status: if reason.is_some() { "unhealthy" } else { "ok" }.into(),
        reason,
        worker_restarts: state.metrics.worker_restarts(),
        model_version: state.served.load().version,
        queued: state.metrics.queue_depth(),
    };
    (status, Json(health))
}

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"))
)]
async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    let served = state.served.load();
    state.metrics.set_model_version(served.version);
    state.metrics.set_edges_since_anchor(served.edges_since_anchor() as u64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    responses((status = 200, description = "OpenAPI 3.1", body = Object, content_type = "application/json"))
)]
async fn openapi_json() -> impl IntoResponse {
    Json(openapi())
}
