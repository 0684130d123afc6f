//! The dashboard's pages and static files, compiled into the binary (vanilla JS,
//! no build step). `/` needs a session (else a redirect to `/login`); every page
//! is sent with a strict Content-Security-Policy (scripts only from this origin).

use crate::auth::CurrentUser;
use poem::http::{header, StatusCode};
use poem::{handler, Request, Response};

const INDEX: &str = include_str!("../assets/index.html");
const LOGIN: &str = include_str!("../assets/login.html");
const APP_JS: &str = include_str!("../assets/app.js");
const LOGIN_JS: &str = include_str!("../assets/login.js");
const APP_CSS: &str = include_str!("../assets/app.css");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

fn page(body: &'static str, content_type: &str) -> Response {
    Response::builder()
        .content_type(content_type)
        .header("content-security-policy", CSP)
        .header("x-content-type-options", "nosniff")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
}

/// `/`: the dashboard, or a redirect to the login form.
#[handler]
pub fn index(req: &Request) -> Response {
    if req.extensions().get::<CurrentUser>().is_none() {
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, "/login")
            .finish();
    }
    page(INDEX, "text/html; charset=utf-8")
}

/// `/login`: the login form.
#[handler]
pub fn login() -> Response {
    page(LOGIN, "text/html; charset=utf-8")
}

/// `/static/app.js`.
#[handler]
pub fn app_js() -> Response {
    page(APP_JS, "text/javascript; charset=utf-8")
}

/// `/static/login.js`.
#[handler]
pub fn login_js() -> Response {
    page(LOGIN_JS, "text/javascript; charset=utf-8")
}

/// `/static/app.css`.
#[handler]
pub fn app_css() -> Response {
    page(APP_CSS, "text/css; charset=utf-8")
}
