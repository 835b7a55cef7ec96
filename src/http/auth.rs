//! Tokens and roles (`server.auth`): the secrets, read at start and again on every reload, the rule that a server
//! reachable from elsewhere needs them, how a request presents one (`Authorization: Bearer`,
//! `?token=`, or the cookie `POST /api/session` sets for the viewer page) and which role it
//! carries. Secrets are compared in constant time and never logged.

use std::net::SocketAddr;

use actix_web::dev::ServiceRequest;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::face::read_body;
use super::ApiError;
use crate::config::{Auth, Role, SecretError, TokenConfig, TokenSource};

/// The cookie the viewer page's session carries.
pub const COOKIE: &str = "camgraph_token";

/// A token shorter than this is accepted with a warning.
const SHORT_TOKEN: usize = 16;

/// Why the tokens could not be read, or why the server may not start without them.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("server.auth: token '{name}': {source}")]
    Secret { name: String, source: SecretError },
    #[error("server.auth: token '{name}' may hold only visible ASCII characters other than '\"', ',', ';' and '\\' (it travels in headers and a cookie)")]
    Characters { name: String },
    #[error("server.auth: two tokens (e.g. '{0}') have the same secret")]
    Duplicate(String),
    #[error(
        "camgraph would listen on {0}, which is not a loopback address, without `server.auth`: \
         anyone who can reach it could watch every camera and control camgraph. Add tokens \
         (server.auth.tokens) or write `auth: none` to allow this on purpose"
    )]
    Required(SocketAddr),
}

/// One token, read.
struct Token {
    name: String,
    secret: Vec<u8>,
    role: Role,
}

/// The tokens a server accepts.
pub struct Tokens(Vec<Token>);

/// Who may call a server: everyone (loopback without `auth`, or `auth: none`), or token holders.
pub enum Access {
    Open,
    Tokens(Tokens),
}

/// The server's `Access`, replaced whole when a reload reads the tokens again.
pub type LiveAccess = arc_swap::ArcSwap<Access>;

impl Access {
    /// Reads the secrets and applies the rule for `listen`: a server reachable from elsewhere
    /// needs tokens unless the file says `auth: none` (then a warning at every start).
    pub fn new(auth: Option<&Auth>, listen: SocketAddr) -> Result<Access, AuthError> {
        match auth {
            None if listen.ip().is_loopback() => Ok(Access::Open),
            None => Err(AuthError::Required(listen)),
            Some(Auth::None) => {
                if !listen.ip().is_loopback() {
                    tracing::warn!(
                        "server.auth is 'none' and camgraph listens on {listen}: anyone who can \
                         reach it may watch every camera and control camgraph"
                    );
                }
                Ok(Access::Open)
            }
            Some(Auth::Tokens(tokens)) => Tokens::read(tokens).map(Access::Tokens),
        }
    }
}

impl Tokens {
    fn read(configs: &[TokenConfig]) -> Result<Tokens, AuthError> {
        let mut tokens: Vec<Token> = Vec::new();
        for c in configs {
            let name = c.name.clone();
            if let TokenSource::Literal(_) = c.secret {
                tracing::warn!(
                    token = %name,
                    "server.auth: this token is written in the configuration file; prefer \
                     token_file or token_env (files get shared)"
                );
            }
            let secret = c.secret.read().map_err(|source| AuthError::Secret {
                name: name.clone(),
                source,
            })?;
            if !secret
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'\\'))
            {
                return Err(AuthError::Characters { name });
            }
            if secret.len() < SHORT_TOKEN {
                tracing::warn!(
                    token = %name,
                    "server.auth: this token has fewer than {SHORT_TOKEN} characters: anyone \
                     may guess it (make one with `openssl rand -hex 32`)"
                );
            }
            if tokens.iter().any(|t| t.secret == secret.as_bytes()) {
                return Err(AuthError::Duplicate(name));
            }
            tokens.push(Token {
                name,
                secret: secret.as_bytes().to_vec(),
                role: c.role,
            });
        }
        Ok(Tokens(tokens))
    }

    /// The role of `presented` and its token's name, if it is one of the tokens. Every token is
    /// compared, each in constant time, so the time taken tells nothing about which one is near.
    pub fn role_of(&self, presented: &str) -> Option<(Role, &str)> {
        let mut found = None;
        for token in &self.0 {
            if bool::from(token.secret.as_slice().ct_eq(presented.as_bytes())) {
                found = Some((token.role, token.name.as_str()));
            }
        }
        found
    }
}

/// The token a request presents: `Authorization: Bearer`, else `?token=`, else the cookie.
pub fn presented(req: &ServiceRequest) -> Option<String> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    bearer
        .or_else(|| {
            web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
                .ok()
                .and_then(|q| q.get("token").cloned())
        })
        .or_else(|| {
            req.headers()
                .get_all(header::COOKIE)
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    (name == COOKIE).then(|| value.to_string())
                })
        })
}

/// The `Set-Cookie` value of the session cookie: HttpOnly (the page's scripts never see it),
/// SameSite=Strict (no other site's page makes the browser send it).
fn session_cookie(value: &str, secure: bool, max_age: Option<u32>) -> String {
    let mut cookie = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        cookie.push_str("; Secure");
    }
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    cookie
}

/// `POST /api/session` and `DELETE /api/session`: the viewer page trades a token for an HttpOnly
/// cookie (so that `<img>` and WebSocket requests carry it), and drops it.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(SESSION, web::post().to(open_session))
        .route(SESSION, web::delete().to(close_session));
}

/// The session route's path; it needs no token (it takes one).
pub const SESSION: &str = "/api/session";

/// A session request is `{"token": "..."}`.
const MAX_SESSION_BODY: usize = 4096;

#[derive(Deserialize)]
struct SessionRequest {
    token: String,
}

async fn open_session(
    access: web::Data<LiveAccess>,
    secure: web::Data<Secure>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload, MAX_SESSION_BODY).await?;
    let body: SessionRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"token\": \"...\"}}: {e}")))?;
    let access = access.load();
    let Access::Tokens(tokens) = &**access else {
        return Ok(HttpResponse::Ok().json(json!({ "status": "open", "role": "control" })));
    };
    let Some((role, _)) = tokens.role_of(body.token.trim()) else {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "unknown token",
        ));
    };
    Ok(HttpResponse::Ok()
        .insert_header((
            header::SET_COOKIE,
            session_cookie(body.token.trim(), secure.0, None),
        ))
        .json(json!({ "status": "ok", "role": role.as_str() })))
}

async fn close_session(secure: web::Data<Secure>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::SET_COOKIE, session_cookie("", secure.0, Some(0))))
        .json(json!({ "status": "closed" }))
}

/// Whether the server speaks HTTPS (cookies are then `Secure`).
pub struct Secure(pub bool);

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, secret: &str, role: Role) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            secret: TokenSource::Literal(secret.into()),
            role,
        }
    }

    #[test]
    fn roles_by_token_and_nothing_for_a_near_miss() {
        let tokens = Tokens::read(&[
            token("a", "view-token-0123456789", Role::View),
            token("b", "control-token-0123456789", Role::Control),
        ])
        .unwrap();
        assert_eq!(
            tokens.role_of("view-token-0123456789"),
            Some((Role::View, "a"))
        );
        assert_eq!(
            tokens.role_of("control-token-0123456789").map(|r| r.0),
            Some(Role::Control)
        );
        assert_eq!(tokens.role_of("view-token-012345678"), None);
        assert_eq!(tokens.role_of(""), None);
    }

    #[test]
    fn off_loopback_tokens_or_none_on_purpose() {
        let lan: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert!(matches!(Access::new(None, lo), Ok(Access::Open)));
        let err = Access::new(None, lan).err().unwrap().to_string();
        assert!(err.contains("not a loopback address"), "{err}");
        assert!(matches!(
            Access::new(Some(&Auth::None), lan),
            Ok(Access::Open)
        ));
    }

    #[test]
    fn unreadable_or_odd_secrets_are_refused_clearly() {
        let missing = TokenConfig {
            name: "x".into(),
            secret: TokenSource::File("/no/such.token".into()),
            role: Role::View,
        };
        let err = Tokens::read(&[missing]).err().unwrap().to_string();
        assert!(
            err.contains("token 'x': cannot read token_file /no/such.token"),
            "{err}"
        );
        let err = Tokens::read(&[token("y", "has space inside", Role::View)])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("visible ASCII"), "{err}");
        let unset = TokenConfig {
            name: "z".into(),
            secret: TokenSource::Env("CAMGRAPH_TEST_UNSET_VARIABLE".into()),
            role: Role::View,
        };
        let err = Tokens::read(&[unset]).err().unwrap().to_string();
        assert!(
            err.contains("CAMGRAPH_TEST_UNSET_VARIABLE is not set"),
            "{err}"
        );
    }
}
