//! The one gate every request passes before its route (`/healthz` excepted): the `Host` header
//! must name this server (no DNS rebinding); a state-changing request (POST, DELETE, PATCH, PUT)
//! or a WebSocket upgrade must come from an allowed origin (the CORS origins or the server's own)
//! and carry no form or plain-text body (what another site's page can send without asking);
//! and with `server.auth` tokens, a token with the role the route needs. Each refusal is a JSON
//! error, counted in `camgraph_http_refused_total{reason}`.
//!
//! Roles follow the method, so no route is named here: GET, HEAD and OPTIONS need `view`, every
//! other method `control`, except the routes node types declare as only watching
//! (`NodeConfig::WATCH_ROUTES`, e.g. opening a WHEP session), which need `view`.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse, ResponseError};

use super::auth::{self, Access, LiveAccess};
use super::cors::CorsPolicy;
use super::ApiError;
use crate::config::Role;
use crate::metrics::{Metrics, RefusedReason};
use crate::registry::Registry;

/// What the gate checks requests against.
pub struct Gate {
    pub access: web::Data<LiveAccess>,
    pub cors: web::Data<CorsPolicy>,
    /// `server.hosts`, lower case.
    pub hosts: Vec<String>,
    /// Whether the server speaks HTTPS (its own origin is then `https://`).
    pub tls: bool,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
}

/// Always open: liveness probes carry no token and may use any host name.
const OPEN: &str = "/healthz";

impl Gate {
    /// Why `req` may not reach its route, if it may not.
    fn refuse(&self, req: &ServiceRequest) -> Option<(RefusedReason, ApiError)> {
        let host = req
            .headers()
            .get(header::HOST)
            .map(|h| h.to_str().unwrap_or("\u{fffd}"));
        if let Some(host) = host {
            if !self.names_us(host) {
                return Some((
                    RefusedReason::Host,
                    ApiError::bad_request(format!(
                        "Host '{host}' does not name this server: use its IP address, or list \
                         the name in server.hosts"
                    )),
                ));
            }
        }
        let method = req.method();
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        let upgrade = req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if !safe || upgrade {
            if let Some(refusal) = self.cross_site(req, host, upgrade) {
                return Some(refusal);
            }
        }
        let access = self.access.load();
        let Access::Tokens(tokens) = &**access else {
            return None;
        };
        if req.path() == auth::SESSION {
            return None;
        }
        let needed = if safe || self.registry.watches(method, req.path()) {
            Role::View
        } else {
            Role::Control
        };
        let Some(token) = auth::presented(req) else {
            return Some((
                RefusedReason::Unauthenticated,
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "this server needs a token: send 'Authorization: Bearer TOKEN', add \
                     '?token=TOKEN', or open a session with POST /api/session",
                ),
            ));
        };
        match tokens.role_of(&token) {
            None => Some((
                RefusedReason::Unauthenticated,
                ApiError::new(StatusCode::UNAUTHORIZED, "unknown token"),
            )),
            Some((role, name)) if role < needed => Some((
                RefusedReason::Role,
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "token '{name}' has role '{}'; {} {} needs '{}'",
                        role.as_str(),
                        method,
                        req.path(),
                        needed.as_str()
                    ),
                ),
            )),
            Some(_) => None,
        }
    }

    /// A state-changing request or WebSocket upgrade another site's page may have sent.
    fn cross_site(
        &self,
        req: &ServiceRequest,
        host: Option<&str>,
        upgrade: bool,
    ) -> Option<(RefusedReason, ApiError)> {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("\u{fffd}");
            let scheme = if self.tls { "https" } else { "http" };
            let own = host.is_some_and(|h| origin.eq_ignore_ascii_case(&format!("{scheme}://{h}")));
            if !own && !self.cors.allows(origin) {
                return Some((
                    RefusedReason::Origin,
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!(
                            "origin '{origin}' may not {}: list it in server.cors_origins",
                            if upgrade {
                                "open this WebSocket"
                            } else {
                                "change anything here"
                            }
                        ),
                    ),
                ));
            }
        }
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|essence| {
                matches!(
                    essence.as_str(),
                    "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
                )
            });
        form.then(|| {
            (
                RefusedReason::ContentType,
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "state-changing routes take no form or plain-text body (any web page can \
                     send one): send no body, or the type the route takes (JSON as \
                     'application/json', an SDP offer as 'application/sdp')",
                ),
            )
        })
    }

    /// Whether a `Host` header names this server: an IP address, `localhost`, or a name in
    /// `server.hosts` (any name with `*`), with or without a port.
    fn names_us(&self, host: &str) -> bool {
        let name = if let Some(rest) = host.strip_prefix('[') {
            match rest.split_once(']') {
                Some((ip, "")) => ip,
                Some((ip, port)) if port.strip_prefix(':').is_some_and(is_port) => ip,
                _ => return false,
            }
        } else {
            match host.rsplit_once(':') {
                Some((name, port)) if is_port(port) => name,
                Some(_) => return false,
                None => host,
            }
        };
        let name = name.to_ascii_lowercase();
        name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || self.hosts.iter().any(|h| h == "*" || *h == name)
    }
}

fn is_port(s: &str) -> bool {
    s.parse::<u16>().is_ok()
}

/// What a browser asking for a page without a (known) token gets: a form that opens a session.
const SIGN_IN_HTML: &str = include_str!("../../web/signin.html");

/// Whether `req` is a browser loading a page (it then gets `SIGN_IN_HTML` rather than JSON).
fn wants_page(req: &ServiceRequest) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"))
}

/// The middleware: refuses what `Gate::refuse` finds, passes the rest on.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let refusal = match req.app_data::<web::Data<Gate>>() {
        Some(gate) if req.path() != OPEN => gate.refuse(&req).inspect(|(reason, _)| {
            gate.metrics.refused(*reason);
        }),
        _ => None,
    };
    match refusal {
        None => Ok(next.call(req).await?.map_into_left_body()),
        Some((reason, error)) => {
            tracing::debug!(
                reason = reason.as_str(),
                path = req.path(),
                "refused: {error}"
            );
            let mut res = if error.status == StatusCode::UNAUTHORIZED && wants_page(&req) {
                HttpResponse::Unauthorized()
                    .content_type("text/html; charset=utf-8")
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .body(SIGN_IN_HTML)
            } else {
                error.error_response()
            };
            if error.status == StatusCode::UNAUTHORIZED {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"camgraph\""),
                );
            }
            Ok(req.into_response(res).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(hosts: &[&str]) -> Gate {
        Gate {
            access: web::Data::new(LiveAccess::from_pointee(Access::Open)),
            cors: web::Data::new(CorsPolicy::new(&[])),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            tls: false,
            registry: Arc::new(Registry::default()),
            metrics: Metrics::new(),
        }
    }

    #[test]
    fn host_names_this_server_or_is_refused() {
        let g = gate(&["robot.local"]);
        for ok in [
            "127.0.0.1:8080",
            "192.168.1.20",
            "[::1]:8080",
            "localhost:8080",
            "Robot.Local:8080",
        ] {
            assert!(g.names_us(ok), "{ok}");
        }
        for refused in [
            "evil.example:8080",
            "robot.local.evil.example",
            "[::1",
            "[::1]x",
            "localhost:x",
            "",
        ] {
            assert!(!g.names_us(refused), "{refused}");
        }
        assert!(gate(&["*"]).names_us("anything.example"));
    }
}
