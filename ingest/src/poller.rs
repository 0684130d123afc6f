//! One poll of one machine: an HTTP GET with connect and total timeouts, a body
//! size limit and limited redirects, turned into exactly one outcome — a parsed
//! sample or a failure with its SPEC §1 reason code. Never panics on input.

use proto_events::payload::{parse_status, PayloadError, StatusSample};
use proto_events::FailureReason;
use std::time::Duration;

/// Limits of the shared HTTP client.
#[derive(Debug, Clone, Copy)]
pub struct PollLimits {
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed for the whole request, body included.
    pub total_timeout: Duration,
    /// Largest accepted body.
    pub body_limit_bytes: usize,
}

/// Builds the one pooled client every poll shares (keep-alive, rustls, at most 3 redirects).
pub fn build_client(limits: &PollLimits) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(limits.connect_timeout)
        .timeout(limits.total_timeout)
        .redirect(reqwest::redirect::Policy::limited(3))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .user_agent(concat!(
            "resource-monitor-ingest/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
}

/// How a poll ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PollOutcome {
    /// A payload with at least one usable metric.
    Sampled(StatusSample),
    /// A failure with its reason code and a short detail.
    Failed(FailureReason, String),
}

/// At most this many bytes of an invalid body are kept as the failure detail.
pub const DETAIL_BODY_BYTES: usize = 512;

fn classify(e: &reqwest::Error) -> FailureReason {
    if e.is_timeout() {
        FailureReason::Timeout
    } else {
        // Refused, reset, DNS, TLS, closed before a response, too many redirects:
        // the machine could not be talked to.
        FailureReason::Connect
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s.chars().take(300).collect()
}

/// Polls `url` once.
pub async fn poll(client: &reqwest::Client, url: &str, limits: &PollLimits) -> PollOutcome {
    let mut response = match client
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return PollOutcome::Failed(classify(&e), error_chain(&e)),
    };
    let status = response.status();
    if !status.is_success() {
        return PollOutcome::Failed(
            FailureReason::HttpStatus,
            format!("HTTP {}", status.as_u16()),
        );
    }
    if response
        .content_length()
        .is_some_and(|len| len > limits.body_limit_bytes as u64)
    {
        return PollOutcome::Failed(
            FailureReason::BodyTooLarge,
            format!(
                "content-length {} exceeds {} bytes",
                response.content_length().unwrap_or(0),
                limits.body_limit_bytes
            ),
        );
    }
    let mut body: Vec<u8> = Vec::with_capacity(256);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limits.body_limit_bytes {
                    return PollOutcome::Failed(
                        FailureReason::BodyTooLarge,
                        format!("body exceeds {} bytes", limits.body_limit_bytes),
                    );
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return PollOutcome::Failed(classify(&e), error_chain(&e)),
        }
    }
    match parse_status(&body) {
        Ok(sample) => PollOutcome::Sampled(sample),
        Err(e) => {
            let reason = match e {
                PayloadError::InvalidJson(_) => FailureReason::InvalidJson,
                PayloadError::InvalidPayload(_) => FailureReason::InvalidPayload,
            };
            let head = &body[..body.len().min(DETAIL_BODY_BYTES)];
            PollOutcome::Failed(reason, String::from_utf8_lossy(head).into_owned())
        }
    }
}
