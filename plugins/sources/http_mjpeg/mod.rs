//! Pulls MJPEG over HTTP: an IP camera, or another camgraph (`http://host:8080/api/camera/stream/x`).
//! Frames are passed on as JPEG, without re-encoding. The connection is closed while nobody
//! watches and opened again on demand; a broken connection is an error the camera retries.

use std::io::BufRead;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{Captured, FrameSource};
use crate::client;
use crate::frame::PixelFormat;
use crate::mjpeg::PartReader;

/// A camera that sends nothing for this long is considered gone.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

pub struct HttpMjpeg {
    url: String,
    parts: Option<PartReader<Box<dyn BufRead + Send>>>,
}

/// Checks the URL's form; `Err` says what is wrong.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Err(format!(
            "'{url}': https is not supported; use an http:// URL"
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("'{url}' is not an http:// URL"))?;
    let host = rest.split(['/', '?']).next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err(format!("'{url}': expected http://host[:port]/path"));
    }
    Ok(())
}

impl HttpMjpeg {
    /// Connects once, so that a wrong URL is reported at start, then lets go until frames are
    /// wanted (an open but unread connection would only fill up with stale frames).
    pub fn open(url: &str) -> Result<Self, String> {
        check_url(url)?;
        let mut source = Self {
            url: url.to_string(),
            parts: None,
        };
        source.connect()?;
        source.parts = None;
        Ok(source)
    }

    fn connect(&mut self) -> Result<(), String> {
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
        .map_err(|e| format!("{url}: {e}"))?;
        if response.status != 200 {
            return Err(format!("{url}: HTTP status {}", response.status));
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
            .ok_or_else(|| format!("{url}: not an MJPEG stream (Content-Type '{content_type}')"))?;
        self.parts = Some(PartReader::new(response.into_body(), &boundary));
        Ok(())
    }
}

impl FrameSource for HttpMjpeg {
    fn next_frame(&mut self, _seq: u64) -> Result<Captured, String> {
        if self.parts.is_none() {
            self.connect()?;
        }
        let url = &self.url;
        let part = match self.parts.as_mut().map(|p| p.next_part()) {
            Some(Ok(Some(part))) => part,
            Some(Ok(None)) => {
                self.parts = None;
                return Err(format!("{url}: the stream ended"));
            }
            Some(Err(e)) => {
                self.parts = None;
                return Err(format!("{url}: {e}"));
            }
            None => unreachable!("connected above"),
        };
        let header = turbojpeg::read_header(&part.data)
            .map_err(|e| format!("{url}: a part is not a JPEG: {e}"))?;
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
        assert!(check_url("https://cam/x")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(check_url("http:///x").is_err());
        assert!(check_url("rtsp://cam").is_err());
    }

    #[test]
    fn a_refused_connection_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = HttpMjpeg::open(&format!("http://127.0.0.1:{port}/stream"))
            .err()
            .unwrap();
        assert!(
            err.starts_with(&format!("http://127.0.0.1:{port}/stream: ")),
            "{err}"
        );
    }
}
