//! CORS for clients served from another origin (a Vite dev server, a robot dashboard): origins from
//! `server.cors_origins` only; by default none (the server's own pages need no CORS).

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse};

pub struct CorsPolicy {
    origins: Vec<String>,
}

impl CorsPolicy {
    pub fn new(origins: &[String]) -> Self {
        Self {
            origins: origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
        }
    }

    /// Whether a page served from `origin` may call the API. Only the origins listed (or `*`):
    /// by default none, since any local page (any program's, any port) could otherwise read it.
    pub fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == "*" || o == origin)
    }
}

pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let allowed = match (&origin, req.app_data::<web::Data<CorsPolicy>>()) {
        (Some(o), Some(policy)) if policy.allows(o) => HeaderValue::from_str(o).ok(),
        _ => None,
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut res = if preflight {
        let mut r = HttpResponse::NoContent();
        if allowed.is_some() {
            r.insert_header((
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "GET, POST, DELETE, PATCH, OPTIONS",
            ));
            let asked = req
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned();
            r.insert_header((
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                asked.unwrap_or(HeaderValue::from_static("content-type")),
            ));
            r.insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"));
        }
        req.into_response(r.finish()).map_into_right_body()
    } else {
        next.call(req).await?.map_into_left_body()
    };
    if let Some(origin) = allowed {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        // Every header of ours a page may need to read, whichever route sent it.
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Location, ETag, X-Timestamp, X-Frame-Size, X-Variant"),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_no_other_origin_is_allowed_loopback_included() {
        let p = CorsPolicy::new(&[]);
        for origin in [
            "http://localhost:5173",
            "http://127.0.0.1:3000",
            "http://[::1]:8080",
            "http://localhost",
            "http://[",
            "http://192.168.1.2:5173",
        ] {
            assert!(!p.allows(origin), "{origin}");
        }
    }

    #[test]
    fn configured_origins_and_star() {
        let p = CorsPolicy::new(&["http://robot.local:5173/".into()]);
        assert!(p.allows("http://robot.local:5173"));
        assert!(!p.allows("http://localhost:5173"));
        assert!(CorsPolicy::new(&["*".into()]).allows("http://anything"));
    }
}
