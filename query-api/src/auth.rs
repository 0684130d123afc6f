//! Our own authentication: argon2id passwords, server-side sessions (a random
//! 256-bit id in an `HttpOnly; SameSite=Lax` cookie, stored only as its SHA-256),
//! absolute and idle expiry, CSRF tokens, API bearer tokens, roles, and a login
//! rate limit per user and per address. Unknown user and wrong password look the
//! same, in body and in timing (a dummy hash is verified for unknown users).

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{Duration as ChronoDuration, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use storage::{on, Db, LastId};

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Machines, rules, users, tokens.
    Admin,
    /// Read only.
    Viewer,
}

impl Role {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    /// Parses `admin` or `viewer`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser {
    /// User id.
    pub id: i64,
    /// User name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// The session's CSRF token (`None` for bearer-token requests, which need none).
    pub csrf_token: Option<String>,
}

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    /// A session ends this long after login, whatever happens.
    pub absolute: Duration,
    /// A session ends after this long without a request.
    pub idle: Duration,
    /// Mark the cookie `Secure` (behind HTTPS).
    pub secure_cookie: bool,
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "monitor_session";

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    hex(&buf)
}

/// A new random 256-bit secret, hex (session ids, CSRF and API tokens).
pub fn new_secret() -> String {
    random_hex(32)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a secret, hex: what is stored for session ids and API tokens.
pub fn digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Hashes a password with argon2id on the blocking pool.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
    })
    .await?
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"not a password anyone has", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Verifies on the blocking pool; an unknown user is checked against a dummy hash
/// so the answer takes as long as for a known user.
async fn verify_password(password: String, stored: Option<String>) -> bool {
    let known = stored.is_some();
    let stored = stored.unwrap_or_else(|| dummy_hash().to_owned());
    let ok = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    ok && known
}

/// Why a login failed.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Unknown user or wrong password: deliberately indistinguishable.
    BadCredentials,
    /// Too many recent attempts for this user or address.
    RateLimited,
    /// The database failed.
    Unavailable,
}

/// Sliding-window limiter of login attempts per key (user name, address).
#[derive(Clone)]
pub struct LoginLimiter {
    attempts: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
    max: usize,
    window: Duration,
}

impl LoginLimiter {
    /// At most `max` attempts per key within `window`.
    pub fn new(max: usize, window: Duration) -> Self {
        LoginLimiter {
            attempts: Arc::new(Mutex::new(HashMap::new())),
            max,
            window,
        }
    }

    /// Records an attempt for every key; `false` if any key is over the limit.
    fn allow(&self, keys: &[String]) -> bool {
        let now = Instant::now();
        let Ok(mut map) = self.attempts.lock() else {
            return false;
        };
        if map.len() > 100_000 {
            map.retain(|_, v| {
                v.last()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
        }
        let mut ok = true;
        for k in keys {
            let v = map.entry(k.clone()).or_default();
            v.retain(|t| now.duration_since(*t) < self.window);
            if v.len() >= self.max {
                ok = false;
            }
            v.push(now);
        }
        ok
    }
}

/// A new session: the cookie value (secret) and its CSRF token.
#[derive(Debug)]
pub struct NewSession {
    /// Goes in the cookie; stored only as its digest.
    pub session_id: String,
    /// Sent back in `X-CSRF-Token` on state-changing requests.
    pub csrf_token: String,
    /// The user.
    pub user: CurrentUser,
}

/// Checks credentials and opens a fresh session (the id rotates at every login).
pub async fn login(
    db: &Db,
    limiter: &LoginLimiter,
    policy: &SessionPolicy,
    username: &str,
    password: &str,
    addr: Option<IpAddr>,
) -> Result<NewSession, LoginError> {
    let mut keys = vec![format!("user:{}", username.to_lowercase())];
    if let Some(a) = addr {
        keys.push(format!("addr:{a}"));
    }
    if !limiter.allow(&keys) {
        return Err(LoginError::RateLimited);
    }
    let row: Option<(i64, String, String)> = on!(db, |p| sqlx::query_as(
        "SELECT id, password_hash, role FROM users WHERE username = ?"
    )
    .bind(username)
    .fetch_optional(p)
    .await)
    .map_err(|_| LoginError::Unavailable)?;
    let stored = row.as_ref().map(|(_, hash, _)| hash.clone());
    if !verify_password(password.to_owned(), stored).await {
        return Err(LoginError::BadCredentials);
    }
    let (id, _, role) = row.ok_or(LoginError::BadCredentials)?;
    let role = Role::parse(&role).ok_or(LoginError::Unavailable)?;
    let session_id = random_hex(32);
    let csrf_token = random_hex(32);
    let now = Utc::now();
    let expires =
        now + ChronoDuration::from_std(policy.absolute).unwrap_or(ChronoDuration::hours(12));
    on!(db, |p| sqlx::query("INSERT INTO sessions (id_sha256, user_id, csrf_token, created_at, last_seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(digest(&session_id))
        .bind(id)
        .bind(&csrf_token)
        .bind(now.naive_utc())
        .bind(now.naive_utc())
        .bind(expires.naive_utc())
        .execute(p)
        .await
        .map(|_| ()))
        .map_err(|_| LoginError::Unavailable)?;
    Ok(NewSession {
        session_id,
        csrf_token: csrf_token.clone(),
        user: CurrentUser {
            id,
            username: username.to_owned(),
            role,
            csrf_token: Some(csrf_token),
        },
    })
}

/// The user behind a session cookie, if the session is live (not revoked, not past
/// its absolute or idle expiry). Touches `last_seen_at`.
pub async fn session_user(
    db: &Db,
    policy: &SessionPolicy,
    session_id: &str,
) -> Result<Option<CurrentUser>, sqlx::Error> {
    let now = Utc::now().naive_utc();
    let idle_cutoff =
        now - ChronoDuration::from_std(policy.idle).unwrap_or(ChronoDuration::hours(1));
    let key = digest(session_id);
    let row: Option<(i64, String, String, String)> = on!(db, |p| {
        sqlx::query_as(
        "SELECT u.id, u.username, u.role, s.csrf_token FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.id_sha256 = ? AND s.revoked_at IS NULL AND s.expires_at > ? AND s.last_seen_at > ?",
    )
    .bind(&key)
    .bind(now)
    .bind(idle_cutoff)
    .fetch_optional(p)
    .await
    })?;
    let Some((id, username, role, csrf_token)) = row else {
        return Ok(None);
    };
    on!(db, |p| sqlx::query(
        "UPDATE sessions SET last_seen_at = ? WHERE id_sha256 = ?"
    )
    .bind(now)
    .bind(&key)
    .execute(p)
    .await
    .map(|_| ()))?;
    Ok(Some(CurrentUser {
        id,
        username,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        csrf_token: Some(csrf_token),
    }))
}

/// The user behind an API bearer token, if it is live.
pub async fn token_user(db: &Db, token: &str) -> Result<Option<CurrentUser>, sqlx::Error> {
    let row: Option<(i64, String, String)> = on!(db, |p| sqlx::query_as(
        "SELECT u.id, u.username, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_sha256 = ? AND t.revoked_at IS NULL",
    )
    .bind(digest(token))
    .fetch_optional(p)
    .await)?;
    Ok(row.map(|(id, username, role)| CurrentUser {
        id,
        username,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        csrf_token: None,
    }))
}

/// Revokes a session (logout).
pub async fn revoke_session(db: &Db, session_id: &str) -> Result<(), sqlx::Error> {
    on!(db, |p| sqlx::query(
        "UPDATE sessions SET revoked_at = ? WHERE id_sha256 = ? AND revoked_at IS NULL"
    )
    .bind(Utc::now().naive_utc())
    .bind(digest(session_id))
    .execute(p)
    .await
    .map(|_| ()))
}

/// Why a user could not be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Name rules: 1–64 of `[A-Za-z0-9._@-]`.
    #[error("invalid username {0:?}: use 1 to 64 letters, digits, '.', '_', '@' or '-'")]
    BadName(String),
    /// At least 12 characters.
    #[error("the password must have at least 12 characters")]
    WeakPassword,
    /// Taken.
    #[error("user {0:?} already exists")]
    Exists(String),
    /// No such user.
    #[error("no user {0:?}")]
    NotFound(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn check_name(name: &str) -> Result<(), UserError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(UserError::BadName(name.to_owned()))
    }
}

/// Creates a user.
pub async fn create_user(
    db: &Db,
    username: &str,
    password: &str,
    role: Role,
) -> Result<i64, UserError> {
    check_name(username)?;
    if password.chars().count() < 12 {
        return Err(UserError::WeakPassword);
    }
    let hash = hash_password(password.to_owned()).await?;
    let done = on!(db, |p| sqlx::query(
        "INSERT INTO users (username, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(username)
    .bind(&hash)
    .bind(role.as_str())
    .bind(Utc::now().naive_utc())
    .execute(p)
    .await
    .map(|r| r.last_id()));
    match done {
        Ok(id) => Ok(id),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(UserError::Exists(username.to_owned()))
        }
        Err(e) => Err(UserError::Other(e.into())),
    }
}

/// Sets a user's password and revokes their sessions.
pub async fn set_password(db: &Db, username: &str, password: &str) -> Result<(), UserError> {
    if password.chars().count() < 12 {
        return Err(UserError::WeakPassword);
    }
    let hash = hash_password(password.to_owned()).await?;
    let changed = on!(db, |p| sqlx::query(
        "UPDATE users SET password_hash = ? WHERE username = ?"
    )
    .bind(&hash)
    .bind(username)
    .execute(p)
    .await
    .map(|d| d.rows_affected()))
    .map_err(anyhow::Error::from)?;
    if changed == 0 {
        return Err(UserError::NotFound(username.to_owned()));
    }
    on!(db, |p| sqlx::query(
        "UPDATE sessions SET revoked_at = ? \
         WHERE user_id = (SELECT id FROM users WHERE username = ?) AND revoked_at IS NULL"
    )
    .bind(Utc::now().naive_utc())
    .bind(username)
    .execute(p)
    .await
    .map(|_| ()))
    .map_err(anyhow::Error::from)?;
    Ok(())
}

/// Deletes a user with their sessions and tokens.
pub async fn delete_user(db: &Db, username: &str) -> Result<(), UserError> {
    let found = on!(db, |p| async {
        let mut tx = p.begin().await?;
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(id) = id else {
            return Ok::<bool, sqlx::Error>(false);
        };
        for sql in [
            "DELETE FROM sessions WHERE user_id = ?",
            "DELETE FROM api_tokens WHERE user_id = ?",
            "DELETE FROM users WHERE id = ?",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
    .await)
    .map_err(anyhow::Error::from)?;
    if !found {
        return Err(UserError::NotFound(username.to_owned()));
    }
    Ok(())
}

/// `(username, role)` of every user.
pub async fn list_users(db: &Db) -> Result<Vec<(String, String)>, sqlx::Error> {
    on!(db, |p| sqlx::query_as(
        "SELECT username, role FROM users ORDER BY username"
    )
    .fetch_all(p)
    .await)
}
