//! `/api/tokens`: API tokens for scripts (`Authorization: Bearer …`). A token is
//! shown once, at creation; only its SHA-256 is stored.

use crate::auth::{digest, new_secret};
use crate::error::ErrorBody;
use crate::session::require_admin;
use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use storage::{on, Db, LastId};

#[derive(Tags)]
enum ApiTags {
    /// Tokens for scripts.
    Tokens,
}

/// A token to create.
#[derive(Debug, Object)]
pub struct NewToken {
    /// What it is for.
    #[oai(validator(min_length = 1, max_length = 128))]
    pub name: String,
}

/// A created token: the only time its secret is shown.
#[derive(Debug, Object)]
pub struct CreatedToken {
    /// Id (to revoke it).
    pub id: i64,
    /// Name.
    pub name: String,
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
}

#[derive(ApiResponse)]
enum CreateResponse {
    /// Created; acts with the creating admin's identity.
    #[oai(status = 201)]
    Created(Json<CreatedToken>),
    /// Only admins create tokens.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum RevokeResponse {
    /// Revoked.
    #[oai(status = 204)]
    Revoked,
    /// Only admins revoke tokens.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No live token has this id.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The database is unavailable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// The tokens endpoints.
pub struct TokensApi {
    /// Where tokens live.
    pub db: Db,
}

#[OpenApi(tag = "ApiTags::Tokens")]
impl TokensApi {
    /// Create an API token (admin).
    #[oai(path = "/tokens", method = "post", operation_id = "create_token")]
    async fn create(&self, req: &Request, body: Json<NewToken>) -> CreateResponse {
        let user = match require_admin(req) {
            Ok(u) => u.clone(),
            Err(e) => return CreateResponse::Forbidden(Json(e)),
        };
        let token = format!("rm_{}", new_secret());
        let done = on!(&self.db, |p| {
            sqlx::query(
            "INSERT INTO api_tokens (user_id, name, token_sha256, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(user.id)
        .bind(&body.name)
        .bind(digest(&token))
        .bind(chrono::Utc::now().naive_utc())
        .execute(p)
        .await
        .map(|d| d.last_id())
        });
        match done {
            Ok(id) => CreateResponse::Created(Json(CreatedToken {
                id,
                name: body.name.clone(),
                token,
            })),
            Err(_) => CreateResponse::Unavailable(Json(ErrorBody::new(
                "unavailable",
                "the database is unavailable",
            ))),
        }
    }

    /// Revoke an API token (admin).
    #[oai(path = "/tokens/:id", method = "delete", operation_id = "revoke_token")]
    async fn revoke(&self, req: &Request, id: Path<i64>) -> RevokeResponse {
        if let Err(e) = require_admin(req) {
            return RevokeResponse::Forbidden(Json(e));
        }
        match on!(&self.db, |p| sqlx::query(
            "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(chrono::Utc::now().naive_utc())
        .bind(id.0)
        .execute(p)
        .await
        .map(|d| d.rows_affected()))
        {
            Ok(1) => RevokeResponse::Revoked,
            Ok(_) => RevokeResponse::NotFound(Json(ErrorBody::new(
                "not_found",
                format!("no live token with id {}", id.0),
            ))),
            Err(_) => RevokeResponse::Unavailable(Json(ErrorBody::new(
                "unavailable",
                "the database is unavailable",
            ))),
        }
    }
}
