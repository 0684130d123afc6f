//! The JSON error body every endpoint returns with a 4xx or 5xx status.

use poem_openapi::Object;

/// `{"error": "not_found", "reason": "no incident \"x\""}`
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// A stable machine-readable code.
    pub error: String,
    /// What went wrong, for a person.
    pub reason: String,
}

impl ErrorBody {
    /// An error with `code` and `reason`.
    pub fn new(code: &str, reason: impl Into<String>) -> Self {
        ErrorBody {
            error: code.to_owned(),
            reason: reason.into(),
        }
    }
}
