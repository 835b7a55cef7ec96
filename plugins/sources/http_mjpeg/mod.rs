//! Pulls MJPEG over HTTP: an IP camera, or another camgraph (`http://host:8080/api/camera/stream/x`).
//! Frames are passed on as JPEG, without re-encoding. The connection is closed while nobody
//! watches and opened again on demand; a broken connection is an error the camera retries.

use std::io::BufRead;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use thiserror::Error;

use super::kinds::{check_size, no_checks, Open, SourceKind};
use super::{Captured, FrameSource, SourceError};
use crate::node::FieldIssue;

/// `source: http://host/path`: an IP camera's MJPEG stream, pulled as a client.
pub const KIND: SourceKind = SourceKind {
    name: "HTTP MJPEG",
    claims: |s| s.starts_with("http://") || s.starts_with("https://"),
    validate: |c, issues| {
        if let Err(e) = check_url(c.source.trim()) {
            issues.push(FieldIssue::new("source", e.to_string()));
        }
        check_size(c, issues);
    },
    validate_added: no_checks,
    open: Open::Frames(|c| Ok(Box::new(HttpMjpeg::open(c.source.trim())?))),
    codecs: &[],
    takes_noise: false,
};
use crate::client::{self, Deadline};
use crate::frame::PixelFormat;
use crate::mjpeg::PartReader;

/// A camera that sends nothing for this long is considered gone.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// A frame that has not arrived in full this long after it was asked for is an error: a camera
/// that trickles bytes cannot hold the capture thread (nor a removed camera's thread) longer.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// What is wrong with a source URL's form.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("'{0}': https is not supported; use an http:// URL")]
    Https(String),
    #[error("'{0}' is not an http:// URL")]
    NotHttp(String),
    #[error("'{0}': expected http://host[:port]/path")]
    NoHost(String),
}

/// What failed while pulling MJPEG from `url`.
#[derive(Debug, Error)]
pub enum HttpMjpegError {
    #[error(transparent)]
    Url(#[from] UrlError),
    /// Connecting or sending the request failed (refused, timed out, ...).
    #[error("{url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: not an MJPEG stream (Content-Type '{content_type}')")]
    NotMjpeg { url: String, content_type: String },
    #[error("{url}: the stream ended")]
    Ended { url: String },
    #[error("{url}: {source}")]
    Read { url: String, source: std::io::Error },
    #[error("{url}: a part is not a JPEG: {source}")]
    NotJpeg {
        url: String,
        source: turbojpeg::Error,
    },
}

pub struct HttpMjpeg {
    url: String,
    parts: Option<PartReader<Deadline<Box<dyn BufRead + Send>>>>,
}

/// Checks the URL's form; `Err` says what is wrong.
pub fn check_url(url: &str) -> Result<(), UrlError> {
    if url.starts_with("https://") {
        return Err(UrlError::Https(url.into()));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| UrlError::NotHttp(url.into()))?;
    let host = rest.split(['/', '?']).next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err(UrlError::NoHost(url.into()));
    }
    Ok(())
}

impl HttpMjpeg {
    /// Connects once, so that a wrong URL is reported at start, then lets go until frames are
    /// wanted (an open but unread connection would only fill up with stale frames).
    pub fn open(url: &str) -> Result<Self, HttpMjpegError> {
        check_url(url)?;
        let mut source = Self {
            url: url.to_string(),
            parts: None,
        };
        source.connect()?;
        source.parts = None;
        Ok(source)
    }

    fn connect(&mut self) -> Result<(), HttpMjpegError> {
        let url = &self.url;
        let response = client::request_with(
            "GET",
            url,
            &[],
            None,
            &client::Options {
                read_timeout: READ_TIMEOUT,
                ..Default::default()
            },
        )
        .map_err(|source| HttpMjpegError::Connect {
            url: url.clone(),
            source,
        })?;
        if response.status != 200 {
            return Err(HttpMjpegError::Status {
                url: url.clone(),
                status: response.status,
            });
        }
        let content_type = response
            .header("content-type")
            .unwrap_or_default()
            .to_string();
        let boundary = content_type
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))
            .map(|b| b.trim_matches('"').to_string())
            .filter(|_| content_type.starts_with("multipart/"))
            .ok_or_else(|| HttpMjpegError::NotMjpeg {
                url: url.clone(),
                content_type: content_type.clone(),
            })?;
        let body = Deadline::new(response.into_body(), FRAME_TIMEOUT, "a frame");
        self.parts = Some(PartReader::new(body, &boundary));
        Ok(())
    }
}

impl FrameSource for HttpMjpeg {
    fn next_frame(&mut self, _seq: u64) -> Result<Captured, SourceError> {
        if self.parts.is_none() {
            self.connect()?;
        }
        let url = &self.url;
        let part = match self.parts.as_mut().map(|p| {
            p.get_mut().restart();
            p.next_part()
        }) {
            Some(Ok(Some(part))) => part,
            Some(Ok(None)) => {
                self.parts = None;
                return Err(HttpMjpegError::Ended { url: url.clone() }.into());
            }
            Some(Err(source)) => {
                self.parts = None;
                return Err(HttpMjpegError::Read {
                    url: url.clone(),
                    source,
                }
                .into());
            }
            None => unreachable!("connected above"),
        };
        let header =
            turbojpeg::read_header(&part.data).map_err(|source| HttpMjpegError::NotJpeg {
                url: url.clone(),
                source,
            })?;
        Ok(Captured {
            captured_at: SystemTime::now(),
            width: header.width as u32,
            height: header.height as u32,
            format: PixelFormat::Jpeg,
            data: Bytes::from(part.data),
        })
    }

    fn pause(&mut self) {
        self.parts = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_host() {
        assert!(check_url("http://127.0.0.1:8080/api/camera/stream/front").is_ok());
        assert_eq!(
            check_url("https://cam/x"),
            Err(UrlError::Https("https://cam/x".into()))
        );
        assert!(check_url("https://cam/x")
            .unwrap_err()
            .to_string()
            .contains("https is not supported"));
        assert_eq!(
            check_url("http:///x"),
            Err(UrlError::NoHost("http:///x".into()))
        );
        assert_eq!(
            check_url("rtsp://cam"),
            Err(UrlError::NotHttp("rtsp://cam".into()))
        );
    }

    #[test]
    fn a_refused_connection_is_a_clear_error() {
        let port = crate::testing::closed_port();
        let err = HttpMjpeg::open(&format!("http://127.0.0.1:{port}/stream"))
            .err()
            .unwrap();
        assert!(
            matches!(&err, HttpMjpegError::Connect { source, .. }
                if source.kind() == std::io::ErrorKind::ConnectionRefused),
            "{err:?}"
        );
        let err = err.to_string();
        assert!(
            err.starts_with(&format!("http://127.0.0.1:{port}/stream: ")),
            "{err}"
        );
    }
}
