//! `/metrics` in the Prometheus text format: polls by outcome and reason, poll
//! latency and schedule lag histograms, skipped polls, producer queue depth,
//! delivered, failed and dropped events. Metric names live here and only here.

use crate::app::IngestStats;
use prometheus_client::registry::Registry;

/// Renders every ingest metric in the Prometheus text format.
pub fn render(stats: &IngestStats) -> String {
    let mut r = Registry::with_prefix("ingest");
    let s = &stats.scheduler;
    r.register("polls", "Polls started", s.polls.clone());
    r.register(
        "poll_failures",
        "Polls that failed, any reason",
        s.failures.clone(),
    );
    r.register(
        "polls_by_outcome",
        "Polls by outcome and SPEC reason code",
        s.polls_by_outcome.clone(),
    );
    r.register(
        "polls_skipped",
        "Grid instants skipped (no slot within one interval, or behind a slow poll)",
        s.skipped.clone(),
    );
    r.register(
        "poll_latency_seconds",
        "Poll latency",
        s.latency_seconds.clone(),
    );
    r.register(
        "schedule_lag_seconds",
        "Start of a poll minus its grid instant",
        s.lag_seconds.clone(),
    );
    let p = &stats.publisher;
    r.register(
        "events_delivered",
        "Events acknowledged by the broker",
        p.delivered.clone(),
    );
    r.register(
        "events_failed",
        "Events that failed permanently",
        p.failed.clone(),
    );
    r.register(
        "events_dropped",
        "Events dropped, oldest first, because the publish buffer was full",
        p.dropped.clone(),
    );
    r.register(
        "producer_queue_depth",
        "Events buffered or in flight to the broker",
        p.buffered.clone(),
    );
    let mut out = String::new();
    // Encoding into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}
