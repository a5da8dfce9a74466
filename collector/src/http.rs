//! HTTP: the dashboard (static files compiled into the binary), the JSON API behind it, and
//! Prometheus `/metrics`. With a token, `/api/*` and `/metrics` require
//! `Authorization: Bearer <token>`; the static files hold no data and stay open.

use crate::{
    ingest::{now_ms, IngestStats},
    metrics,
    query::{self, FlowFilter, Range},
    rate::RateTracker,
};
use axum::{
    extract::{Query, Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::{
    path::PathBuf,
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// What the handlers share.
pub struct App {
    db: PathBuf,
    /// Opened on first use (the writer creates the file and schema first).
    reader: Mutex<Option<Connection>>,
    pub stats: Arc<IngestStats>,
    pub rates: Arc<RateTracker>,
    token: Option<String>,
    started_ms: i64,
}

impl App {
    pub fn new(
        db: PathBuf,
        stats: Arc<IngestStats>,
        rates: Arc<RateTracker>,
        token: Option<String>,
    ) -> App {
        App {
            db,
            reader: Mutex::new(None),
            stats,
            rates,
            token,
            started_ms: now_ms(),
        }
    }

    /// Runs a query on the reader connection, off the async threads.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> query::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = app.reader.lock().unwrap_or_else(|e| e.into_inner());
            if guard.is_none() {
                *guard = Some(crate::store::open_reader(&app.db).map_err(ApiError::internal)?);
            }
            let conn = guard.as_ref().expect("opened above");
            f(conn).map_err(ApiError::internal)
        })
        .await
        .map_err(ApiError::internal)?
    }
}

/// An error answer: `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn internal(e: impl std::fmt::Display) -> ApiError {
        log::error!("api: {e}");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }

    fn bad(why: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, why.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

pub fn router(app: Arc<App>) -> Router {
    let protected = Router::new()
        .route("/api/devices", get(devices))
        .route("/api/series", get(series))
        .route("/api/talkers", get(talkers))
        .route("/api/conversations", get(conversations))
        .route("/api/flows", get(flows))
        .route("/api/rtt", get(rtt))
        .route("/api/ingest", get(ingest))
        .route("/metrics", get(prometheus))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .route("/", get(|| asset(INDEX_HTML, "text/html; charset=utf-8")))
        .route(
            "/assets/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .merge(protected)
        .with_state(app)
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(token) = &app.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(serde_json::json!({ "error": "missing or wrong bearer token" })),
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// Compares without stopping at the first difference (no timing hint about the token).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Query parameters the API understands (each endpoint uses its own subset).
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    /// Range start, ms since the epoch (window starts at or after it).
    from: Option<i64>,
    /// Range end, exclusive.
    to: Option<i64>,
    device: Option<String>,
    limit: Option<u32>,
    /// Series bucket width, ms.
    step: Option<i64>,
    addr: Option<String>,
    port: Option<String>,
    proto: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl Params {
    fn range(&self) -> Result<Range, ApiError> {
        let r = Range {
            from: self.from.unwrap_or(Range::ALL.from),
            to: self.to.unwrap_or(Range::ALL.to),
        };
        if r.from >= r.to {
            return Err(ApiError::bad("from must be before to"));
        }
        Ok(r)
    }

    fn device(&self) -> Option<String> {
        nonempty(&self.device)
    }

    fn limit(&self, default: u32) -> u32 {
        self.limit.unwrap_or(default).clamp(1, 10_000)
    }
}

/// A protocol by name or number.
pub fn proto(s: &str) -> Option<u8> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        "icmpv6" | "ipv6-icmp" => Some(58),
        "sctp" => Some(132),
        "gre" => Some(47),
        "esp" => Some(50),
        n => n.parse().ok(),
    }
}

#[derive(Serialize)]
struct DevicesAnswer {
    now_ms: i64,
    range: Range,
    devices: Vec<query::Device>,
}

async fn devices(
    State(app): State<Arc<App>>,
    Query(p): Query<Params>,
) -> Result<Json<DevicesAnswer>, ApiError> {
    let range = p.range()?;
    let now = now_ms();
    let devices = app.read(move |c| query::devices(c, range, now)).await?;
    Ok(Json(DevicesAnswer {
        now_ms: now,
        range,
        devices,
    }))
}

/// Default series range when none is given.
const DEFAULT_SERIES_MS: i64 = 15 * 60 * 1000;

async fn series(
    State(app): State<Arc<App>>,
    Query(p): Query<Params>,
) -> Result<Json<query::Series>, ApiError> {
    let to = p.to.unwrap_or_else(now_ms);
    let from = p.from.unwrap_or(to - DEFAULT_SERIES_MS);
    if from >= to {
        return Err(ApiError::bad("from must be before to"));
    }
    let range = Range { from, to };
    let step = p.step.unwrap_or(0);
    let device = p.device();
    Ok(Json(
        app.read(move |c| query::series(c, range, step, device.as_deref()))
            .await?,
    ))
}

async fn talkers(
    State(app): State<Arc<App>>,
    Query(p): Query<Params>,
) -> Result<Json<Vec<query::Talker>>, ApiError> {
    let (range, device, limit) = (p.range()?, p.device(), p.limit(10));
    Ok(Json(
        app.read(move |c| query::top_talkers(c, range, device.as_deref(), limit))
            .await?,
    ))
}

async fn conversations(
    State(app): State<Arc<App>>,
    Query(p): Query<Params>,
) -> Result<Json<Vec<query::Conversation>>, ApiError> {
    let (range, device, limit) = (p.range()?, p.device(), p.limit(10));
    Ok(Json(
        app.read(move |c| query::top_conversations(c, range, device.as_deref(), limit))
            .await?,
    ))
}

async fn flows(
    State(app): State<Arc<App>>,
    Query(p): Query<Params>,
) -> Result<Json<query::Flows>, ApiError> {
    let range = p.range()?;
    let port = match nonempty(&p.port) {
        Some(s) => Some(
            s.parse::<u16>()
                .map_err(|_| ApiError::bad(format!("port {s:?} is not 0..65535")))?,
        ),
        None => None,
    };
    let proto = match nonempty(&p.proto) {
        Some(s) => Some(proto(&s).ok_or_else(|| ApiError::bad(format!("unknown protocol {s:?}")))?),
        None => None,
    };
    let filter = FlowFilter {
        device: p.device(),
        addr: nonempty(&p.addr),
        port,
        proto,
        limit: p.limit(100),
    };
    Ok(Json(
        app.read(move |c| query::flows(c, range, &filter)).await?,
    ))
}

async fn rtt(
    State(app): State<Arc<App>>,
    Query(p): Query<Params>,
) -> Result<Json<query::RttDistribution>, ApiError> {
    let (range, device) = (p.range()?, p.device());
    Ok(Json(
        app.read(move |c| query::rtt(c, range, device.as_deref()))
            .await?,
    ))
}

#[derive(Serialize)]
struct IngestAnswer {
    started_ms: i64,
    broker_connected: bool,
    messages: u64,
    summaries: u64,
    flow_records: u64,
    duplicates: u64,
    presence: u64,
    payload_bytes: u64,
    rejected: std::collections::BTreeMap<&'static str, u64>,
    rates: crate::rate::Rates,
    stored: query::Stored,
}

async fn ingest(State(app): State<Arc<App>>) -> Result<Json<IngestAnswer>, ApiError> {
    let stored = app.read(query::stored).await?;
    let s = &app.stats;
    Ok(Json(IngestAnswer {
        started_ms: app.started_ms,
        broker_connected: s.connected.load(Relaxed),
        messages: s.messages.load(Relaxed),
        summaries: s.summaries.load(Relaxed),
        flow_records: s.flow_records.load(Relaxed),
        duplicates: s.duplicates.load(Relaxed),
        presence: s.presence.load(Relaxed),
        payload_bytes: s.payload_bytes.load(Relaxed),
        rejected: s.rejected(),
        rates: app.rates.rates(),
        stored,
    }))
}

async fn prometheus(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let now = now_ms();
    let devices = app
        .read(move |c| query::devices(c, Range::ALL, now))
        .await?;
    let body = metrics::render(&app.stats, &app.rates.rates(), &devices);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_by_name_or_number() {
        assert_eq!(proto("TCP"), Some(6));
        assert_eq!(proto("icmpv6"), Some(58));
        assert_eq!(proto("47"), Some(47));
        assert_eq!(proto("bogus"), None);
        assert_eq!(proto("300"), None);
    }

    #[test]
    fn token_compare() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }
}
