//! HTTP: the dashboard (static files compiled into the binary), the JSON API behind it, and
//! Prometheus `/metrics`. With a token, `/api/*` and `/metrics` require
//! `Authorization: Bearer <token>`; the static files hold no data and stay open.

use crate::{
    api::{
        self, conversations, devices, dns, fleet, flows::FlowFilter, health, owners, rtt, series,
        stored, talkers, tcp, Range, Reader,
    },
    config::Limits,
    ingest::{now_ms, IngestStats},
    metrics,
    rate::RateTracker,
    store::Db,
};
use axum::extract::rejection::QueryRejection;
use axum::{
    extract::{Query, Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::{Deserialize, Serialize};
use std::{
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::Duration,
};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// What the handlers share.
pub struct App {
    readers: Readers,
    pub stats: Arc<IngestStats>,
    pub rates: Arc<RateTracker>,
    token: Option<String>,
    /// Names accepted in `Host` besides IP addresses and localhost.
    hosts: Vec<String>,
    started_ms: i64,
}

/// A pool of read-only connections: at most `permits` queries at once, each stopped once it
/// has run longer than `timeout`.
struct Readers {
    db: Db,
    /// Opened on first use (the writer creates the database and schema first).
    idle: Mutex<Vec<Box<dyn Reader>>>,
    permits: Arc<tokio::sync::Semaphore>,
    timeout: Duration,
}

impl App {
    pub fn new(
        db: Db,
        stats: Arc<IngestStats>,
        rates: Arc<RateTracker>,
        token: Option<String>,
        limits: &Limits,
    ) -> App {
        App {
            readers: Readers {
                db,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(tokio::sync::Semaphore::new(limits.http_readers)),
                timeout: limits.query_timeout,
            },
            stats,
            rates,
            token,
            hosts: limits.http_hosts.clone(),
            started_ms: now_ms(),
        }
    }

    /// Runs a query on a pooled reader, off the async threads, within the time limit.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut dyn Reader) -> api::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        // Held by the query itself: a client that goes away does not free it early.
        let permit = self
            .readers
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)?;
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let r = &app.readers;
            let taken = r.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut reader = match taken {
                Some(reader) => reader,
                None => api::open(&r.db, r.timeout).map_err(ApiError::internal)?,
            };
            reader.busy();
            let result = f(reader.as_mut());
            reader.idle();
            // A reader whose connection broke is not kept.
            if !reader.broken() {
                r.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(reader);
            }
            result.map_err(|e| match e {
                api::Error::Timeout => ApiError::bad(format!(
                    "the query ran longer than {} ms (--query-timeout-ms) and was stopped; \
                     narrow the range (from, to) or pick a device",
                    r.timeout.as_millis()
                )),
                api::Error::Bad(why) => ApiError::bad(why),
                e => ApiError::internal(e),
            })
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
        .route("/api/tcp", get(tcp_health))
        .route("/api/dns", get(dns_lookups))
        .route("/api/owners", get(owners_of))
        .route("/api/ingest", get(ingest))
        .route("/api/fleet", get(fleet))
        .route("/api/health", get(health))
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
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Before any route: the `Host` must be this collector's (DNS rebinding: a page on another
/// site whose name an attacker points at this address would otherwise read the API with the
/// browser's help when no token is set), and a request has no body (the API only reads).
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("?"));
    if let Some(host) = host {
        if !host_allowed(host, &app.hosts) {
            return ApiError(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host {host:?} is not a name of this collector: use its IP address or \
                     localhost, or start it with --http-host NAME"
                ),
            )
            .into_response();
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    if declared {
        // Not read: the connection closes after this answer.
        let mut r = ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "requests carry no body here".into(),
        )
        .into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    next.run(req).await
}

/// An IP address (any: a page cannot rebind a literal address), `localhost` or a name under
/// it, or one of `names`; with or without a port.
pub fn host_allowed(host: &str, names: &[String]) -> bool {
    if let Some(v6) = host.strip_prefix('[') {
        return v6
            .split_once(']')
            .is_some_and(|(a, _)| a.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
        Some(_) => return false,
        None => host,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || names.contains(&name)
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
    /// Devices: a part of the id, any case.
    q: Option<String>,
    site: Option<String>,
    sort: Option<String>,
    offset: Option<u64>,
    /// Series: the top devices by bytes, the fleet and the others.
    top: Option<u32>,
    /// Flows: the owner's process (command), service, a LAN device's MAC.
    process: Option<String>,
    service: Option<String>,
    mac: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Default range of the API's windows when neither `from` nor `to` is given: the last day.
pub const DEFAULT_RANGE_MS: i64 = 24 * 3_600_000;

/// The query string, or a JSON 400 saying what is wrong with it.
fn params(q: Result<Query<Params>, QueryRejection>) -> Result<Params, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::bad(e.body_text()))
}

/// `[from, to)` from the parameters: both milliseconds since the epoch (0 or more), from
/// before to; an absent `to` is open-ended, an absent `from` is `default_ms` before now (or
/// before `to` if that is earlier).
fn range_of(from: Option<i64>, to: Option<i64>, default_ms: i64) -> Result<Range, ApiError> {
    let to_or_now = to.unwrap_or(i64::MAX).min(now_ms());
    let r = Range {
        from: from.unwrap_or_else(|| to_or_now.saturating_sub(default_ms).max(0)),
        to: to.unwrap_or(i64::MAX),
    };
    if r.from < 0 || r.to < 0 {
        return Err(ApiError::bad(
            "from and to are milliseconds since the Unix epoch: 0 or more",
        ));
    }
    if r.from >= r.to {
        return Err(ApiError::bad("from must be before to"));
    }
    Ok(r)
}

impl Params {
    fn range(&self) -> Result<Range, ApiError> {
        range_of(self.from, self.to, DEFAULT_RANGE_MS)
    }

    fn device(&self) -> Option<String> {
        nonempty(&self.device)
    }

    fn limit(&self, default: u32) -> u32 {
        self.limit.unwrap_or(default).clamp(1, 10_000)
    }

    fn site(&self) -> Option<String> {
        nonempty(&self.site)
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

/// A MAC address as stored (`aa:bb:cc:dd:ee:ff`), from `:`, `-` or no separators, any case.
pub fn mac(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|c| !matches!(c, ':' | '-')).collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(
        (0..6)
            .map(|i| &hex[2 * i..2 * i + 2])
            .collect::<Vec<_>>()
            .join(":"),
    )
}

#[derive(Serialize)]
struct DevicesAnswer {
    now_ms: i64,
    range: Range,
    devices: Vec<devices::Device>,
}

/// Devices as asked (`q`, `site`, `sort`, `limit`, `offset`); the header `X-Total-Count` says
/// how many matched before `offset` and `limit`.
async fn devices(
    State(app): State<Arc<App>>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(q)?;
    let range = p.range()?;
    let now = now_ms();
    let listing = devices::Listing {
        q: nonempty(&p.q),
        site: p.site(),
        sort: match nonempty(&p.sort) {
            Some(s) => s
                .parse()
                .map_err(|e: api::Error| ApiError::bad(e.to_string()))?,
            None => devices::Sort::default(),
        },
        limit: p.limit.map(|l| l as usize),
        offset: p.offset.unwrap_or(0).min(usize::MAX as u64) as usize,
    };
    let device = p.device();
    let all = app
        .read(move |c| devices::devices(c, range, now, device.as_deref()))
        .await?;
    let (matching, devices) = listing.apply(all);
    let mut r = Json(DevicesAnswer {
        now_ms: now,
        range,
        devices,
    })
    .into_response();
    r.headers_mut()
        .insert("x-total-count", HeaderValue::from(matching));
    Ok(r)
}

async fn fleet(
    State(app): State<Arc<App>>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<fleet::Fleet>, ApiError> {
    let p = params(q)?;
    let range = p.range()?;
    let now = now_ms();
    let site = p.site();
    let all = app
        .read(move |c| devices::devices(c, range, now, None))
        .await?;
    let mine: Vec<_> = all
        .into_iter()
        .filter(|d| site.as_ref().is_none_or(|s| &d.site == s))
        .collect();
    Ok(Json(fleet::fleet(&mine)))
}

/// Default series range when none is given.
const DEFAULT_SERIES_MS: i64 = 15 * 60 * 1000;

/// The series range: the last 15 minutes up to now, or up to `to`.
fn series_range(p: &Params) -> Result<Range, ApiError> {
    let to = Some(p.to.unwrap_or_else(now_ms));
    range_of(p.from, to, DEFAULT_SERIES_MS)
}

fn step(p: &Params) -> Result<i64, ApiError> {
    let step = p.step.unwrap_or(0);
    if step < 0 {
        return Err(ApiError::bad(
            "step is a bucket width in ms: 0 (automatic) or more",
        ));
    }
    Ok(step)
}

async fn series(
    State(app): State<Arc<App>>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<series::Series>, ApiError> {
    let p = params(q)?;
    let range = series_range(&p)?;
    let top = match p.top {
        Some(n) if n == 0 || n as usize > series::MAX_TOP => {
            return Err(ApiError::bad(format!(
                "top is a number of devices: 1 to {}",
                series::MAX_TOP
            )))
        }
        n => n.map(|n| n as usize),
    };
    let query = series::SeriesQuery {
        step_ms: step(&p)?,
        device: p.device(),
        site: p.site(),
        top,
    };
    Ok(Json(
        app.read(move |c| series::series(c, range, &query)).await?,
    ))
}

/// One device's health over time: `device` is required and names one device.
async fn health(
    State(app): State<Arc<App>>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<health::DeviceHealth>, ApiError> {
    let p = params(q)?;
    let range = series_range(&p)?;
    let step = step(&p)?;
    let Some(name) = p.device() else {
        return Err(ApiError::bad("device is required: site/device"));
    };
    let now = now_ms();
    let answer = app
        .read(move |c| {
            let found = devices::devices(c, Range::ALL, now, Some(&name))?;
            match found.as_slice() {
                [d] => health::health(c, (&d.site, &d.device), range, step, (d.gaps, d.boots))
                    .map(Some),
                [] => Ok(None),
                _ => Err(api::Error::Bad(format!(
                    "{name:?} names a device in several sites: ask for site/device"
                ))),
            }
        })
        .await?;
    answer
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no such device (site/device)".into()))
}

async fn talkers(
    State(app): State<Arc<App>>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Vec<talkers::Talker>>, ApiError> {
    let p = params(q)?;
    let (range, device, limit) = (p.range()?, p.device(), p.limit(10));
    Ok(Json(
        app.read(move |c| talkers::top_talkers(c, range, device.as_deref(), limit))
            .await?,
    ))
}

async fn conversations(
    State(app): State<Arc<App>>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<Vec<conversations::Conversation>>, ApiError> {
    let p = params(q)?;
    let (range, device, limit) = (p.range()?, p.device(), p.limit(10));
    Ok(Json(
        app.read(move |c| conversations::top_conversations(c, range, device.as_deref(), limit))
            .await?,
    ))
}

async fn flows(
    State(app): State<Arc<App>>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<api::flows::Flows>, ApiError> {
    let p = params(q)?;
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
        process: nonempty(&p.process),
        service: nonempty(&p.service),
        mac: match nonempty(&p.mac) {
            Some(m) => Some(mac(&m).ok_or_else(|| {
                ApiError::bad(format!(
                    "mac {m:?} is not six hex bytes (aa:bb:cc:dd:ee:ff)"
                ))
            })?),
            None => None,
        },
        limit: p.limit(100),
    };
    Ok(Json(
        app.read(move |c| api::flows::flows(c, range, &filter))
            .await?,
    ))
}

async fn rtt(
    State(app): State<Arc<App>>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<rtt::RttDistribution>, ApiError> {
    let p = params(q)?;
    let (range, device) = (p.range()?, p.device());
    Ok(Json(
        app.read(move |c| rtt::rtt(c, range, device.as_deref()))
            .await?,
    ))
}

/// What connections did: destinations by failed connects, resets or retransmit rate (`sort`),
/// totals per outcome, and a series over the range (up to now) by `step`.
async fn tcp_health(
    State(app): State<Arc<App>>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<tcp::TcpAnswer>, ApiError> {
    let p = params(q)?;
    let range = p.range()?;
    let series_range = Range {
        from: range.from,
        to: range.to.min(now_ms()).max(range.from + 1),
    };
    let query = tcp::TcpQuery {
        device: p.device(),
        limit: p.limit(20),
        sort: match nonempty(&p.sort) {
            Some(s) => s
                .parse()
                .map_err(|e: api::Error| ApiError::bad(e.to_string()))?,
            None => tcp::Sort::default(),
        },
        step_ms: step(&p)?,
    };
    Ok(Json(
        app.read(move |c| tcp::tcp(c, range, series_range, &query))
            .await?,
    ))
}

/// What name lookups did: names and resolvers by errors, latency or queries (`sort`), totals
/// with the response codes and the latency distribution, and a series over the range (up to
/// now) by `step`; `device` and `site` narrow it.
async fn dns_lookups(
    State(app): State<Arc<App>>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<dns::DnsAnswer>, ApiError> {
    let p = params(q)?;
    let range = p.range()?;
    let series_range = Range {
        from: range.from,
        to: range.to.min(now_ms()).max(range.from + 1),
    };
    let query = dns::DnsQuery {
        device: p.device(),
        site: p.site(),
        limit: p.limit(20),
        sort: match nonempty(&p.sort) {
            Some(s) => s
                .parse()
                .map_err(|e: api::Error| ApiError::bad(e.to_string()))?,
            None => dns::Sort::default(),
        },
        step_ms: step(&p)?,
    };
    Ok(Json(
        app.read(move |c| dns::dns(c, range, series_range, &query))
            .await?,
    ))
}

/// Who sent it: bytes and flows by process, by service and by LAN device (with its vendor,
/// DHCP name and top destinations); `device` and `site` narrow it.
async fn owners_of(
    State(app): State<Arc<App>>,
    q: Result<Query<Params>, QueryRejection>,
) -> Result<Json<owners::OwnersAnswer>, ApiError> {
    let p = params(q)?;
    let query = owners::OwnersQuery {
        device: p.device(),
        site: p.site(),
        limit: p.limit(20),
    };
    let range = p.range()?;
    Ok(Json(
        app.read(move |c| owners::owners(c, range, &query)).await?,
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
    store_errors: u64,
    backpressure: u64,
    queued_bytes: u64,
    rates: crate::rate::Rates,
    stored: stored::Stored,
}

async fn ingest(State(app): State<Arc<App>>) -> Result<Json<IngestAnswer>, ApiError> {
    let stored = app.read(stored::stored).await?;
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
        store_errors: s.store_errors.load(Relaxed),
        backpressure: s.backpressure.load(Relaxed),
        queued_bytes: s.queued_kib.load(Relaxed) * 1024,
        rates: app.rates.rates(),
        stored,
    }))
}

async fn prometheus(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let now = now_ms();
    let (devices, tcp, dns, services) = app
        .read(move |c| {
            Ok((
                devices::devices(c, Range::ALL, now, None)?,
                tcp::device_totals(c)?,
                dns::device_totals(c)?,
                owners::services_now(c)?,
            ))
        })
        .await?;
    let body = metrics::render(
        &app.stats,
        &app.rates.rates(),
        &devices,
        &tcp,
        &dns,
        &services,
    );
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
    fn hosts() {
        let names = vec!["flows.example.net".to_string()];
        for ok in [
            "127.0.0.1:8080",
            "10.1.2.3",
            "[::1]:8080",
            "[fd00::5]",
            "localhost:8080",
            "LocalHost.",
            "dash.localhost",
            "flows.example.net:8080",
            "FLOWS.example.net.",
        ] {
            assert!(host_allowed(ok, &names), "{ok}");
        }
        for bad in [
            "evil.example.com:8080",
            "example.net",
            "127.0.0.1.evil.com",
            "[::1",
            "localhost:80x",
            "flows.example.net.evil.com",
            "",
        ] {
            assert!(!host_allowed(bad, &names), "{bad}");
        }
    }

    #[test]
    fn macs_in_any_spelling() {
        assert_eq!(
            mac("00-1B-63-AA-0F-FF").as_deref(),
            Some("00:1b:63:aa:0f:ff")
        );
        assert_eq!(mac("001b63aa0fff").as_deref(), Some("00:1b:63:aa:0f:ff"));
        assert_eq!(mac("00:1b:63:aa:0f"), None);
        assert_eq!(mac("zz:1b:63:aa:0f:ff"), None);
    }

    #[test]
    fn token_compare() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }
}
