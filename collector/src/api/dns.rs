//! `/api/dns`: what name lookups did (issue 21's DNS block): the range's totals (queries,
//! responses per code, unanswered queries, latency and its distribution), the names asked and
//! the resolvers asked, each by errors, latency or queries, and errors, unanswered queries and
//! latency over time.
//!
//! Totals, the distribution and the series read the windows' own DNS figures (`summaries`:
//! one row per window, the latency histogram `dns_hist`); only names and resolvers read flow
//! records. Message counts scale by `sample_every`; latency samples do not. A record carries
//! the name of its flow's latest query in the window, so a name's counts are those of the
//! records that ended on it: exact for clients that use a port per query (most stub
//! resolvers), an approximation for a flow that asks several names in one window.

use super::series::window_buckets;
use super::{device_filter, flows::flows_in_range, rtt, Error, Range, Reader};
use super::{Result, Row};
use serde::Serialize;

/// Responses per response code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rcodes {
    pub noerror: u64,
    pub nxdomain: u64,
    pub servfail: u64,
    pub refused: u64,
    /// Every other code (FORMERR, NOTIMP, …).
    pub other: u64,
}

impl Rcodes {
    fn read(r: &dyn Row) -> Result<Rcodes> {
        Ok(Rcodes {
            noerror: r.total("noerror")?,
            nxdomain: r.total("nxdomain")?,
            servfail: r.total("servfail")?,
            refused: r.total("refused")?,
            other: r.total("other")?,
        })
    }

    /// Responses whose code is not NOERROR.
    pub fn errors(&self) -> u64 {
        self.nxdomain + self.servfail + self.refused + self.other
    }
}

/// Query → response latency, µs, over the samples taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub min_us: Option<u64>,
    /// The mean of every sample.
    pub avg_us: Option<u64>,
    pub max_us: Option<u64>,
}

impl Latency {
    /// From `lat_n` (samples), `lat_sum` (their sum), `lat_min`, `lat_max`.
    fn read(r: &dyn Row) -> Result<Latency> {
        let samples = r.total("lat_n")?;
        let sum = r.opt_f64("lat_sum")?.unwrap_or(0.0);
        let some = samples > 0;
        Ok(Latency {
            samples,
            min_us: r.opt_f64("lat_min")?.filter(|_| some).map(super::total),
            avg_us: some.then(|| super::total(sum / samples as f64)),
            max_us: r.opt_f64("lat_max")?.filter(|_| some).map(super::total),
        })
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// What a set of lookups did: the figures totals, names and resolvers share.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub queries: u64,
    pub responses: u64,
    pub rcodes: Rcodes,
    /// Responses with a code other than NOERROR.
    pub errors: u64,
    /// Queries that got no response.
    pub unanswered: u64,
    /// errors / responses; None without responses.
    pub error_rate: Option<f64>,
    /// unanswered / queries; None without queries.
    pub unanswered_rate: Option<f64>,
    pub latency: Latency,
}

impl Figures {
    fn read(r: &dyn Row) -> Result<Figures> {
        let rcodes = Rcodes::read(r)?;
        let (queries, responses) = (r.total("queries")?, r.total("responses")?);
        let unanswered = r.total("unanswered")?;
        Ok(Figures {
            queries,
            responses,
            errors: rcodes.errors(),
            error_rate: ratio(rcodes.errors(), responses),
            unanswered_rate: ratio(unanswered, queries),
            rcodes,
            unanswered,
            latency: Latency::read(r)?,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// Windows that carried DNS, and the devices that sent them.
    pub windows: u64,
    pub devices: u64,
    #[serde(flatten)]
    pub figures: Figures,
    /// The agents' own counts: port-53 payloads their parser rejected (counted as traffic,
    /// without DNS fields), and pending queries pushed out by newer ones (the bound hit; each
    /// also counts as unanswered).
    pub malformed: u64,
    pub evicted: u64,
}

/// One name asked (with its query type) over the range.
#[derive(Debug, Clone, Serialize)]
pub struct Name {
    pub name: String,
    pub qtype: u16,
    /// `A`, `AAAA`, … or `TYPE<n>`.
    pub qtype_name: String,
    #[serde(flatten)]
    pub figures: Figures,
    /// Resolvers asked, devices that asked.
    pub resolvers: u64,
    pub devices: u64,
}

/// One resolver (responder address and port) over the range.
#[derive(Debug, Clone, Serialize)]
pub struct Resolver {
    pub addr: String,
    pub port: u16,
    #[serde(flatten)]
    pub figures: Figures,
    /// Distinct names asked of it, devices that asked it.
    pub names: u64,
    pub devices: u64,
}

/// Per bucket of window starts; None where no window with DNS started.
#[derive(Debug, Clone, Serialize)]
pub struct DnsSeries {
    pub step_ms: i64,
    pub t: Vec<i64>,
    pub queries: Vec<Option<u64>>,
    pub errors: Vec<Option<u64>>,
    pub nxdomain: Vec<Option<u64>>,
    pub servfail: Vec<Option<u64>>,
    pub unanswered: Vec<Option<u64>>,
    pub error_rate: Vec<Option<f64>>,
    pub unanswered_rate: Vec<Option<f64>>,
    pub latency_avg_us: Vec<Option<u64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DnsAnswer {
    pub range: Range,
    pub totals: Totals,
    /// The windows' latency histograms added up, with p50/p90/p99.
    pub latency: rtt::Histogram,
    pub names: Vec<Name>,
    pub resolvers: Vec<Resolver>,
    pub series: DnsSeries,
}

/// How names and resolvers are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Error responses plus unanswered queries, then queries.
    #[default]
    Errors,
    /// The mean latency, then queries.
    Latency,
    /// Queries, then errors.
    Queries,
}

impl std::str::FromStr for Sort {
    type Err = Error;

    fn from_str(s: &str) -> Result<Sort> {
        super::choose(
            "sort",
            s,
            &[
                ("errors", Sort::Errors),
                ("latency", Sort::Latency),
                ("queries", Sort::Queries),
            ],
        )
    }
}

impl Sort {
    fn order_by(self) -> &'static str {
        match self {
            Sort::Errors => "bad DESC, queries DESC, lat_avg DESC",
            Sort::Latency => "lat_avg DESC, queries DESC",
            Sort::Queries => "queries DESC, bad DESC",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DnsQuery {
    pub device: Option<String>,
    pub site: Option<String>,
    pub limit: u32,
    pub sort: Sort,
    /// Series bucket width wanted (0: automatic).
    pub step_ms: i64,
}

/// The windows' DNS figures, summed (names as [`Figures::read`] reads them).
const WINDOW_SUMS: &str = "COUNT(dns_queries) AS windows,
    SUM(CAST(dns_queries AS DOUBLE PRECISION) * sample_every) AS queries,
    SUM(CAST(dns_responses AS DOUBLE PRECISION) * sample_every) AS responses,
    SUM(CAST(dns_noerror AS DOUBLE PRECISION) * sample_every) AS noerror,
    SUM(CAST(dns_nxdomain AS DOUBLE PRECISION) * sample_every) AS nxdomain,
    SUM(CAST(dns_servfail AS DOUBLE PRECISION) * sample_every) AS servfail,
    SUM(CAST(dns_refused AS DOUBLE PRECISION) * sample_every) AS refused,
    SUM(CAST(dns_other AS DOUBLE PRECISION) * sample_every) AS other,
    SUM(CAST(dns_unanswered AS DOUBLE PRECISION) * sample_every) AS unanswered,
    SUM(CAST(dns_lat_samples AS DOUBLE PRECISION)) AS lat_n,
    SUM(CAST(dns_lat_sum_us AS DOUBLE PRECISION)) AS lat_sum,
    MIN(CAST(dns_lat_min_us AS DOUBLE PRECISION)) AS lat_min,
    MAX(CAST(dns_lat_max_us AS DOUBLE PRECISION)) AS lat_max,
    SUM(CAST(dns_malformed AS DOUBLE PRECISION)) AS malformed,
    SUM(CAST(dns_evicted AS DOUBLE PRECISION)) AS evicted";

/// `$4`: the site (NULL: all).
fn site_filter(prefix: &str) -> String {
    format!("(CAST($4 AS TEXT) IS NULL OR {prefix}site = $4)")
}

/// Windows with DNS starting in `[$1, $2)` of the device `$3` and site `$4` (NULL: all).
fn windows_where() -> String {
    format!(
        "FROM summaries WHERE window_start_ms >= $1 AND window_start_ms < $2 AND {} AND {}
           AND dns_queries IS NOT NULL",
        device_filter("", 3),
        site_filter("")
    )
}

/// The answer over `range`; the series covers `series_range` (the range, up to now).
pub fn dns(
    db: &mut dyn Reader,
    range: Range,
    series_range: Range,
    q: &DnsQuery,
) -> Result<DnsAnswer> {
    let (device, site) = (q.device.as_deref(), q.site.as_deref());
    let params = [
        range.from.into(),
        range.to.into(),
        device.into(),
        site.into(),
    ];
    let totals = db.one(
        &format!(
            "SELECT {WINDOW_SUMS}, COUNT(DISTINCT site || '/' || device) AS devices {}",
            windows_where()
        ),
        &params,
        |r| {
            Ok(Totals {
                windows: r.u64("windows")?,
                devices: r.u64("devices")?,
                figures: Figures::read(r)?,
                malformed: r.total("malformed")?,
                evicted: r.total("evicted")?,
            })
        },
    )?;
    Ok(DnsAnswer {
        range,
        totals,
        latency: rtt::histogram(db, "dns_hist", range, device, site)?,
        names: names(db, range, q)?,
        resolvers: resolvers(db, range, q)?,
        series: series(db, series_range, q)?,
    })
}

/// The flow records' DNS blocks summed (names as [`Figures::read`] reads them), and `bad`
/// (errors + unanswered) and `lat_avg` (-1 without samples) to order by.
fn record_sums() -> String {
    let scaled = |col: &str, name: &str| {
        format!("SUM(CAST(f.{col} AS DOUBLE PRECISION) * s.sample_every) AS {name}")
    };
    [
        scaled("dns_queries", "queries"),
        scaled("dns_responses", "responses"),
        scaled("dns_noerror", "noerror"),
        scaled("dns_nxdomain", "nxdomain"),
        scaled("dns_servfail", "servfail"),
        scaled("dns_refused", "refused"),
        scaled("dns_other", "other"),
        scaled("dns_unanswered", "unanswered"),
        "SUM((CAST(f.dns_nxdomain AS DOUBLE PRECISION) + f.dns_servfail + f.dns_refused
              + f.dns_other + f.dns_unanswered) * s.sample_every) AS bad"
            .into(),
        "SUM(CAST(f.dns_lat_samples AS DOUBLE PRECISION)) AS lat_n".into(),
        "SUM(CAST(f.dns_lat_avg_us AS DOUBLE PRECISION) * f.dns_lat_samples) AS lat_sum".into(),
        "MIN(CAST(f.dns_lat_min_us AS DOUBLE PRECISION)) AS lat_min".into(),
        "MAX(CAST(f.dns_lat_max_us AS DOUBLE PRECISION)) AS lat_max".into(),
        "COALESCE(SUM(CAST(f.dns_lat_avg_us AS DOUBLE PRECISION) * f.dns_lat_samples)
                  / NULLIF(SUM(CAST(f.dns_lat_samples AS DOUBLE PRECISION)), 0), -1) AS lat_avg"
            .into(),
        "COUNT(DISTINCT s.site || '/' || s.device) AS devices".into(),
    ]
    .join(",\n")
}

fn record_params<'a>(range: Range, q: &'a DnsQuery) -> [super::Param<'a>; 5] {
    [
        range.from.into(),
        range.to.into(),
        q.device.as_deref().into(),
        q.site.as_deref().into(),
        i64::from(q.limit).into(),
    ]
}

/// The flow records with DNS blocks (and `also`) grouped by `keys` (selected as `select`,
/// with their [`record_sums`]), ordered as asked and then by `then`, the first `limit`.
fn ranked<T>(
    db: &mut dyn Reader,
    range: Range,
    q: &DnsQuery,
    [select, also, keys, then]: [&str; 4],
    read: impl FnMut(&dyn Row) -> Result<T>,
) -> Result<Vec<T>> {
    let sql = format!(
        "SELECT {select}, {}
         FROM {} AND {} AND f.dns_queries IS NOT NULL{also}
         GROUP BY {keys}
         ORDER BY {}, {then}
         LIMIT $5",
        record_sums(),
        flows_in_range(db.dialect()),
        site_filter("s."),
        q.sort.order_by(),
    );
    db.rows(&sql, &record_params(range, q), read)
}

fn names(db: &mut dyn Reader, range: Range, q: &DnsQuery) -> Result<Vec<Name>> {
    let sql = [
        "f.dns_name AS name, f.dns_qtype AS qtype,
            COUNT(DISTINCT f.dst || ' ' || f.dst_port) AS resolvers",
        " AND f.dns_name IS NOT NULL",
        "f.dns_name, f.dns_qtype",
        "name, qtype",
    ];
    ranked(db, range, q, sql, |r| {
        let qtype = r.i64("qtype")?.clamp(0, 65_535) as u16;
        Ok(Name {
            name: r.text("name")?,
            qtype,
            qtype_name: qtype_name(qtype),
            figures: Figures::read(r)?,
            resolvers: r.u64("resolvers")?,
            devices: r.u64("devices")?,
        })
    })
}

fn resolvers(db: &mut dyn Reader, range: Range, q: &DnsQuery) -> Result<Vec<Resolver>> {
    let sql = [
        "f.dst AS addr, f.dst_port AS port, COUNT(DISTINCT f.dns_name) AS names",
        "",
        "f.dst, f.dst_port",
        "addr, port",
    ];
    ranked(db, range, q, sql, |r| {
        Ok(Resolver {
            addr: r.text("addr")?,
            port: r.i64("port")?.clamp(0, 65_535) as u16,
            figures: Figures::read(r)?,
            names: r.u64("names")?,
            devices: r.u64("devices")?,
        })
    })
}

fn series(db: &mut dyn Reader, range: Range, q: &DnsQuery) -> Result<DnsSeries> {
    let filters = [q.device.as_deref().into(), q.site.as_deref().into()];
    let (b, rows) = window_buckets(
        db,
        range,
        q.step_ms,
        &windows_where(),
        &filters,
        WINDOW_SUMS,
        Figures::read,
    )?;
    let mut s = DnsSeries {
        step_ms: b.step as i64,
        t: b.starts(),
        queries: vec![None; b.n],
        errors: vec![None; b.n],
        nxdomain: vec![None; b.n],
        servfail: vec![None; b.n],
        unanswered: vec![None; b.n],
        error_rate: vec![None; b.n],
        unanswered_rate: vec![None; b.n],
        latency_avg_us: vec![None; b.n],
    };
    for (i, f) in rows {
        s.queries[i] = Some(f.queries);
        s.errors[i] = Some(f.errors);
        s.nxdomain[i] = Some(f.rcodes.nxdomain);
        s.servfail[i] = Some(f.rcodes.servfail);
        s.unanswered[i] = Some(f.unanswered);
        s.error_rate[i] = f.error_rate;
        s.unanswered_rate[i] = f.unanswered_rate;
        s.latency_avg_us[i] = f.latency.avg_us;
    }
    Ok(s)
}

/// A query type's mnemonic (RFC 1035 and later), `TYPE<n>` (RFC 3597) for the rest.
pub fn qtype_name(t: u16) -> String {
    let name = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        43 => "DS",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        _ => return format!("TYPE{t}"),
    };
    name.to_string()
}

/// A device's running DNS sums (for `/metrics`).
#[derive(Debug, Clone)]
pub struct DeviceDns {
    pub site: String,
    pub device: String,
    pub queries: u64,
    pub responses: u64,
    pub rcodes: Rcodes,
    pub unanswered: u64,
    pub latency_samples: u64,
}

/// Every device that sent a window with DNS, from the running totals.
pub fn device_totals(db: &mut dyn Reader) -> Result<Vec<DeviceDns>> {
    db.rows(
        "SELECT site, device, dns_queries AS queries, dns_responses AS responses,
                dns_noerror AS noerror, dns_nxdomain AS nxdomain, dns_servfail AS servfail,
                dns_refused AS refused, dns_other AS other, dns_unanswered AS unanswered,
                dns_lat_samples AS lat_n
         FROM device_totals WHERE dns_windows > 0 ORDER BY site, device",
        &[],
        |r| {
            Ok(DeviceDns {
                site: r.text("site")?,
                device: r.text("device")?,
                queries: r.total("queries")?,
                responses: r.total("responses")?,
                rcodes: Rcodes::read(r)?,
                unanswered: r.total("unanswered")?,
                latency_samples: r.total("lat_n")?,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_types_by_mnemonic_and_sorts_by_name() {
        assert_eq!(qtype_name(1), "A");
        assert_eq!(qtype_name(28), "AAAA");
        assert_eq!(qtype_name(65), "HTTPS");
        assert_eq!(qtype_name(0), "TYPE0");
        assert_eq!(qtype_name(4242), "TYPE4242");
        assert_eq!("latency".parse::<Sort>().unwrap(), Sort::Latency);
        assert!("slowest".parse::<Sort>().is_err());
    }
}
