//! CORS for clients served from another origin (a Vite dev server, a robot dashboard): origins from
//! `server.cors_origins`, by default loopback development origins only.

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

    pub fn allows(&self, origin: &str) -> bool {
        if self.origins.is_empty() {
            return is_loopback_origin(origin);
        }
        self.origins.iter().any(|o| o == "*" || o == origin)
    }
}

fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    // Split without indexing: the header is the client's, and may be cut anywhere.
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((ip, "")) => (format!("[{ip}]"), None),
            Some((ip, after)) => match after.strip_prefix(':') {
                Some(port) => (format!("[{ip}]"), Some(port)),
                None => return false,
            },
            None => return false,
        },
        None => match rest.split_once(':') {
            Some((name, port)) => (name.to_string(), Some(port)),
            None => (rest.to_string(), None),
        },
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]") && port_ok
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
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Location, X-Timestamp"),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_allows_loopback_dev_origins_only() {
        let p = CorsPolicy::new(&[]);
        assert!(p.allows("http://localhost:5173"));
        assert!(p.allows("http://127.0.0.1:3000"));
        assert!(p.allows("http://[::1]:8080"));
        assert!(!p.allows("http://localhost.evil.com"));
        assert!(!p.allows("http://192.168.1.2:5173"));
    }

    #[test]
    fn malformed_origins_are_refused_not_panicked_on() {
        let p = CorsPolicy::new(&[]);
        for bad in [
            "http://[",
            "http://[::1",
            "https://[]:x",
            "http://",
            "http://localhost:",
            "http://localhost:x",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
        assert!(p.allows("http://localhost"));
        assert!(p.allows("http://[::1]"));
    }

    #[test]
    fn configured_origins_and_star() {
        let p = CorsPolicy::new(&["http://robot.local:5173/".into()]);
        assert!(p.allows("http://robot.local:5173"));
        assert!(!p.allows("http://localhost:5173"));
        assert!(CorsPolicy::new(&["*".into()]).allows("http://anything"));
    }
}
