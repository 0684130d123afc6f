//! `/api/session` (login, who am I, logout) and the authentication middleware
//! every request passes through.

use crate::auth::{self, CurrentUser, LoginError, LoginLimiter, SessionPolicy, SESSION_COOKIE};
use crate::error::ErrorBody;
use poem::http::{Method, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use storage::Db;

#[derive(Tags)]
enum ApiTags {
    /// Logging in and out.
    Session,
}

/// Login form.
#[derive(Debug, Object)]
pub struct Credentials {
    /// User name.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub username: String,
    /// Password.
    #[oai(validator(min_length = 1, max_length = 1024))]
    pub password: String,
}

/// The current user.
#[derive(Debug, Object)]
pub struct SessionInfo {
    /// User name.
    pub username: String,
    /// `admin` or `viewer`.
    pub role: String,
    /// Send it back as `X-CSRF-Token` on every state-changing request.
    pub csrf_token: String,
}

#[derive(ApiResponse)]
enum LoginResponse {
    /// Logged in; the session cookie is set.
    #[oai(status = 200)]
    Ok(Json<SessionInfo>, #[oai(header = "Set-Cookie")] String),
    /// Unknown user or wrong password (indistinguishable on purpose).
    #[oai(status = 401)]
    BadCredentials(Json<ErrorBody>),
    /// Too many attempts for this user or address; try again later.
    #[oai(status = 429)]
    TooMany(Json<ErrorBody>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum WhoAmIResponse {
    /// The logged-in user.
    #[oai(status = 200)]
    Ok(Json<SessionInfo>),
    /// Not logged in, or the session expired or was revoked.
    #[oai(status = 401)]
    Unauthenticated(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum LogoutResponse {
    /// Logged out; the session is revoked and the cookie cleared.
    #[oai(status = 204)]
    Done(#[oai(header = "Set-Cookie")] String),
}

/// Session state shared by the endpoints and the middleware.
#[derive(Clone)]
pub struct SessionApi {
    /// Users and sessions live here.
    pub db: Db,
    /// Lifetimes.
    pub policy: SessionPolicy,
    /// Login rate limit.
    pub limiter: LoginLimiter,
}

fn cookie_value(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get_all(poem::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|header| {
            header.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then(|| v.to_owned())
            })
        })
}

fn session_cookie(policy: &SessionPolicy, value: &str, max_age_s: u64) -> String {
    let secure = if policy.secure_cookie { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{secure}")
}

fn info(user: &CurrentUser) -> SessionInfo {
    SessionInfo {
        username: user.username.clone(),
        role: user.role.as_str().to_owned(),
        csrf_token: user.csrf_token.clone().unwrap_or_default(),
    }
}

#[OpenApi(tag = "ApiTags::Session")]
impl SessionApi {
    /// Log in: checks the password and sets a fresh session cookie.
    #[oai(path = "/session", method = "post", operation_id = "login")]
    async fn login(&self, req: &Request, body: Json<Credentials>) -> LoginResponse {
        let addr = req.remote_addr().as_socket_addr().map(|a| a.ip());
        match auth::login(
            &self.db,
            &self.limiter,
            &self.policy,
            &body.username,
            &body.password,
            addr,
        )
        .await
        {
            Ok(s) => LoginResponse::Ok(
                Json(info(&s.user)),
                session_cookie(&self.policy, &s.session_id, self.policy.absolute.as_secs()),
            ),
            Err(LoginError::BadCredentials) => LoginResponse::BadCredentials(Json(ErrorBody::new(
                "bad_credentials",
                "unknown user or wrong password",
            ))),
            Err(LoginError::RateLimited) => LoginResponse::TooMany(Json(ErrorBody::new(
                "rate_limited",
                "too many login attempts; wait a few minutes",
            ))),
            Err(LoginError::Unavailable) => LoginResponse::Unavailable(Json(ErrorBody::new(
                "unavailable",
                "the database is unavailable",
            ))),
        }
    }

    /// The current user, role and CSRF token.
    #[oai(path = "/session", method = "get", operation_id = "whoami")]
    async fn whoami(&self, req: &Request) -> WhoAmIResponse {
        match req.extensions().get::<CurrentUser>() {
            Some(u) => WhoAmIResponse::Ok(Json(info(u))),
            None => WhoAmIResponse::Unauthenticated(Json(ErrorBody::new(
                "unauthenticated",
                "log in first",
            ))),
        }
    }

    /// Log out: revokes the session and clears the cookie.
    #[oai(path = "/session", method = "delete", operation_id = "logout")]
    async fn logout(&self, req: &Request) -> LogoutResponse {
        if let Some(id) = cookie_value(req, SESSION_COOKIE) {
            if let Err(e) = auth::revoke_session(&self.db, &id).await {
                tracing::error!(error = %e, "revoking a session failed");
            }
        }
        LogoutResponse::Done(session_cookie(&self.policy, "", 0))
    }
}

fn json_error(status: StatusCode, code: &str, reason: &str) -> Response {
    let body = serde_json::json!({"error": code, "reason": reason});
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}

/// Paths reachable without a session.
fn is_public(method: &Method, path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/api/openapi.json"
    ) || path == "/api/docs"
        || path.starts_with("/api/docs/")
        || (path == "/api/session" && (method == Method::POST || method == Method::DELETE))
}

/// The authentication middleware: resolves the session cookie or bearer token into
/// a [`CurrentUser`] extension; API calls without one get a 401 JSON; state-changing
/// requests made with a session need its CSRF token in `X-CSRF-Token`.
pub async fn authenticate<E: Endpoint>(
    next: E,
    mut req: Request,
    state: SessionApi,
) -> poem::Result<Response> {
    let bearer = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let user = if let Some(token) = bearer {
        auth::token_user(&state.db, token.trim()).await
    } else if let Some(id) = cookie_value(&req, SESSION_COOKIE).filter(|v| !v.is_empty()) {
        auth::session_user(&state.db, &state.policy, &id).await
    } else {
        Ok(None)
    };
    let user = match user {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "resolving the session failed");
            return Ok(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unavailable",
            ));
        }
    };
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if !is_public(&method, &path) && path.starts_with("/api/") {
        let Some(user) = &user else {
            return Ok(json_error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "log in first (POST /api/session) or send a bearer token",
            ));
        };
        let changes_state = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        if changes_state {
            if let Some(expected) = &user.csrf_token {
                let sent = req
                    .headers()
                    .get("x-csrf-token")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if sent != expected {
                    return Ok(json_error(
                        StatusCode::FORBIDDEN,
                        "csrf",
                        "missing or wrong X-CSRF-Token header",
                    ));
                }
            }
        }
    }
    if let Some(user) = user {
        req.extensions_mut().insert(user);
    }
    Ok(next.call(req).await?.into_response())
}

/// 403 unless the request's user is an admin.
pub fn require_admin(req: &Request) -> Result<&CurrentUser, ErrorBody> {
    match req.extensions().get::<CurrentUser>() {
        Some(u) if u.role == auth::Role::Admin => Ok(u),
        Some(_) => Err(ErrorBody::new("forbidden", "this needs the admin role")),
        None => Err(ErrorBody::new("unauthenticated", "log in first")),
    }
}
