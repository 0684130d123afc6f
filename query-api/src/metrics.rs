//! `/metrics` of query-api in the Prometheus text format: requests by route class
//! and status, request latency, waiting long-polls. Metric names live here.

use poem::{Endpoint, IntoResponse, Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Instant;

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `api`, `longpoll`, `page` or `other` (bounded cardinality: no raw paths).
    pub route: String,
    /// HTTP status code.
    pub status: String,
}

/// query-api metrics (cheap to clone).
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    /// Requests by route class and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency (long-polls excluded), seconds.
    pub latency_seconds: Histogram,
    /// Long-polls waiting right now.
    pub waiting_longpolls: Gauge,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            requests: Family::default(),
            latency_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            waiting_longpolls: Gauge::default(),
        }
    }
}

impl ApiMetrics {
    /// The text exposition.
    pub fn render(&self) -> String {
        let mut r = Registry::with_prefix("query_api");
        r.register(
            "requests",
            "HTTP requests by route class and status",
            self.requests.clone(),
        );
        r.register(
            "request_latency_seconds",
            "Request latency, long-polls excluded",
            self.latency_seconds.clone(),
        );
        r.register(
            "waiting_longpolls",
            "Long-polls of incident changes waiting now",
            self.waiting_longpolls.clone(),
        );
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

fn route_class(path: &str) -> &'static str {
    if path == "/api/incidents/changes" {
        "longpoll"
    } else if path.starts_with("/api/") {
        "api"
    } else if path == "/" || path == "/login" || path.starts_with("/static/") {
        "page"
    } else {
        "other"
    }
}

/// Middleware: counts and times every request.
pub async fn observe<E: Endpoint>(
    next: E,
    req: Request,
    metrics: Arc<ApiMetrics>,
) -> poem::Result<Response> {
    let class = route_class(req.uri().path());
    let started = Instant::now();
    let resp = next.call(req).await?.into_response();
    if class != "longpoll" {
        metrics
            .latency_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route: class.to_owned(),
            status: resp.status().as_u16().to_string(),
        })
        .inc();
    Ok(resp)
}
