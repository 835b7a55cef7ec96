//! What the core offers plugins for their HTTP routes: the current graph (`Live`, an extractor
//! that loads the published view without a lock) with name resolution by capability, JSON
//! errors, query parameters, bounded request bodies, write timeouts for endless bodies and
//! no-cache headers. A plugin's routes need
//! nothing else from the server.

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponseBuilder};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

/// An endless body: a server viewer slot, and its connection cut when its client stops taking it
/// (see `stall`).
pub use super::direct::{direct, Direct, DirectBody, DirectWriter};
pub use super::error::ApiError;
pub use super::stall::{endless_body, CutWhenStalled};
/// Upgrades to a WebSocket whose client frames are capped (see `ws_limit`).
pub use super::ws_limit::start as websocket;
use crate::graph::view::{GraphView, Lookup, Published};
use crate::node::Capability;

/// A request's query parameters.
pub type Query = web::Query<HashMap<String, String>>;

/// The graph as it was when the request came: an immutable view.
pub struct Live(Arc<GraphView>);

impl Deref for Live {
    type Target = GraphView;
    fn deref(&self) -> &GraphView {
        &self.0
    }
}

impl FromRequest for Live {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.app_data::<web::Data<Published>>()
                .map(|p| Live(p.load_full()))
                .ok_or_else(|| {
                    ApiError::new(
                        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "the graph is not published to this server",
                    )
                }),
        )
    }
}

impl Live {
    /// The capability `C` for a request naming `name` (a camera, a node id, or `None` for the
    /// default camera), with its camera; a 404 that says what is missing otherwise. `missing`
    /// words the error for a camera without it, e.g. "camera 'x' has no mjpeg_sink".
    pub fn find<C: Capability>(
        &self,
        name: Option<&str>,
        missing: impl FnOnce(&str) -> String,
    ) -> Result<(String, C), ApiError> {
        self.0.find::<C>(name).map_err(|e| match e {
            Lookup::Missing { camera, .. } => ApiError::not_found(missing(&camera)),
            other => ApiError::not_found(other.to_string()),
        })
    }

    /// `name`, or the default camera; 404 naming the cameras there are.
    pub fn camera_named(&self, name: Option<&str>) -> Result<String, ApiError> {
        self.0
            .camera(name)
            .map_err(|e| ApiError::not_found(e.to_string()))
    }
}

/// A query parameter outside its range or not a number.
#[derive(Debug, Clone, thiserror::Error)]
#[error("'{name}' must be a number {range} (got '{got}')")]
pub struct BadParam {
    name: String,
    range: String,
    got: String,
}

impl From<BadParam> for ApiError {
    fn from(e: BadParam) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// Parses an optional numeric query parameter within a range.
pub fn param<T>(
    query: &HashMap<String, String>,
    name: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<Option<T>, BadParam>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = query.get(name) else {
        return Ok(None);
    };
    match raw.parse::<T>() {
        Ok(v) if range.contains(&v) => Ok(Some(v)),
        _ => Err(BadParam {
            name: name.to_string(),
            range: format!("{}..={}", range.start(), range.end()),
            got: raw.clone(),
        }),
    }
}

/// How long a request body may take to arrive once its head has: a client that declares a body
/// and sends it slowly, or never, is answered 408 then, not held.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads a request body of at most `limit` bytes within `BODY_TIMEOUT`: 413 for a larger one
/// (told by `Content-Length` before reading, or found while reading), 408 for a late one.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ))
        })
}

/// Headers that keep browsers and proxies from caching live pictures.
pub fn no_cache(r: &mut HttpResponseBuilder) -> &mut HttpResponseBuilder {
    r.insert_header((header::CACHE_CONTROL, "no-cache, no-store, must-revalidate"))
        .insert_header((header::PRAGMA, "no-cache"))
        .insert_header((header::EXPIRES, "0"))
}
