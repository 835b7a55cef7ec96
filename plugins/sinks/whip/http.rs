//! The WHIP exchanges over HTTP (RFC 9725), on the crate's small blocking client: POST the offer
//! and read what the server answers (201 with the SDP answer, the session's `Location`, its
//! `ETag` and ICE servers in `Link` headers; or why not, and when to try again), DELETE the
//! session. Each request runs on a short-lived thread of its own so the node's event loop never
//! blocks; a session the server created after the node stopped waiting is deleted there too.
//! The parsing (`Link`, `Retry-After`, `Location`) is pure and tested here.

use std::time::Duration;

use crate::client::{self, Options};
use crate::plugins::sinks::webrtc::IceServer;

/// How long a WHIP server may take to answer; answers are made after ICE gathering, which
/// takes a few hundred milliseconds on a real server.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a `Retry-After` is honoured; a server asking for longer is asked again then.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// How much of an error answer's text goes into the node's error.
const MAX_ERROR_TEXT: usize = 200;

/// A session the server created.
#[derive(Clone, Debug, PartialEq)]
pub struct Created {
    /// The session's URL (`Location`, resolved against the endpoint's URL).
    pub location: String,
    pub etag: Option<String>,
    /// The SDP answer.
    pub answer: String,
    /// STUN/TURN servers from `Link: <...>; rel="ice-server"` headers.
    pub ice_servers: Vec<IceServer>,
}

/// Why a POST did not create a session.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    pub error: String,
    /// The server's `Retry-After` (a 503 or 429), if it gave one in seconds.
    pub retry_after: Option<Duration>,
    /// Worth trying again soon (unreachable, 5xx, 429), rather than after the longest backoff
    /// (a 4xx or an answer that is no WHIP answer: someone must fix the URL or the server).
    pub transient: bool,
}

/// POSTs `offer` to the WHIP endpoint `url`, with `Authorization: Bearer token` if given.
pub async fn post_offer(url: &str, token: Option<&str>, offer: String) -> Result<Created, Refused> {
    let (url, token) = (url.to_string(), token.map(str::to_string));
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = post_blocking(&url, token.as_deref(), &offer);
        if let Err(Ok(created)) = tx.send(result) {
            // Nobody waits any more (the node stopped meanwhile): the session must not linger.
            if let Err(e) = delete_blocking(&created.location, token.as_deref()) {
                tracing::info!("whip_sink: a session created after the node stopped: {e}");
            }
        }
    });
    rx.await.unwrap_or_else(|_| {
        Err(Refused {
            error: "the WHIP request's thread ended without an answer".into(),
            retry_after: None,
            transient: true,
        })
    })
}

/// DELETEs the session at `location`; the error, if it failed (it is only logged: the server
/// ends the session by itself when the media stops).
pub async fn delete(location: &str, token: Option<&str>) -> Result<(), String> {
    let (location, token) = (location.to_string(), token.map(str::to_string));
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(delete_blocking(&location, token.as_deref()));
    });
    rx.await
        .unwrap_or_else(|_| Err("the DELETE's thread ended".into()))
}

fn authorization(token: Option<&str>) -> Option<String> {
    token.map(|t| format!("Bearer {t}"))
}

fn delete_blocking(location: &str, token: Option<&str>) -> Result<(), String> {
    let auth = authorization(token);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let options = Options {
        read_timeout: Duration::from_secs(3),
        head_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    match client::request_with("DELETE", location, &headers, None, &options) {
        Ok(r) if (200..300).contains(&r.status) => Ok(()),
        Ok(r) => Err(format!("DELETE {location} answered {}", r.status)),
        Err(e) => Err(format!("DELETE {location} failed: {e}")),
    }
}

fn post_blocking(url: &str, token: Option<&str>, offer: &str) -> Result<Created, Refused> {
    let auth = authorization(token);
    let mut headers = vec![("Accept", "application/sdp")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let options = Options {
        read_timeout: ANSWER_TIMEOUT,
        head_timeout: ANSWER_TIMEOUT,
        ..Default::default()
    };
    let response = client::request_with(
        "POST",
        url,
        &headers,
        Some(("application/sdp", offer.as_bytes())),
        &options,
    )
    .map_err(|e| Refused {
        error: format!("cannot reach the WHIP server at {}: {e}", origin(url)),
        retry_after: None,
        transient: true,
    })?;
    let status = response.status;
    let content_type = response.header("content-type").unwrap_or("").to_string();
    let location = response.header("location").map(str::to_string);
    let etag = response.header("etag").map(str::to_string);
    let retry_after = response.header("retry-after").and_then(parse_retry_after);
    let links: Vec<String> = response
        .headers
        .iter()
        .filter(|(name, _)| name == "link")
        .map(|(_, value)| value.clone())
        .collect();
    let body = response.text().unwrap_or_default();
    answer(
        url,
        Answer {
            status,
            content_type: &content_type,
            location: location.as_deref(),
            etag,
            retry_after,
            links: &links,
            body,
        },
    )
}

/// What a server answered to a POST, as read.
struct Answer<'a> {
    status: u16,
    content_type: &'a str,
    location: Option<&'a str>,
    etag: Option<String>,
    retry_after: Option<Duration>,
    links: &'a [String],
    body: String,
}

/// `http://host:port` of a URL: what errors name, since a WHIP URL's path may hold a stream key
/// and errors are shown to every viewer of `/api/graph`.
fn origin(url: &str) -> &str {
    match url.find("://").map(|i| i + 3) {
        Some(start) => url[start..]
            .find(['/', '?', '#'])
            .map_or(url, |i| &url[..start + i]),
        None => url,
    }
}

/// What an answer means: a session, or why not in words that say what to fix.
fn answer(full_url: &str, a: Answer) -> Result<Created, Refused> {
    let url = origin(full_url);
    let refused = |error: String, transient: bool| Refused {
        error,
        retry_after: a.retry_after,
        transient,
    };
    let is_sdp = a.content_type.starts_with("application/sdp");
    if a.status == 201 && is_sdp {
        let location = a.location.ok_or_else(|| {
            refused(
                format!("the WHIP server at {url} answered 201 without a Location header"),
                false,
            )
        })?;
        return Ok(Created {
            location: resolve(full_url, location),
            etag: a.etag,
            answer: a.body,
            ice_servers: a.links.iter().flat_map(|l| parse_links(l)).collect(),
        });
    }
    let what = if a.content_type.is_empty() {
        "no content type".to_string()
    } else {
        format!("'{}'", a.content_type)
    };
    if a.content_type.starts_with("text/html") {
        return Err(refused(
            format!(
                "{url} answered {} with an HTML page, not an SDP answer: is it a WHIP endpoint?",
                a.status
            ),
            false,
        ));
    }
    let text = short_text(&a.body);
    let said = if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    };
    match a.status {
        200..=299 => Err(refused(
            format!(
                "{url} answered {} with {what} instead of 201 with an SDP answer: is it a WHIP endpoint?",
                a.status
            ),
            false,
        )),
        429 | 500..=599 => Err(refused(
            format!("the WHIP server at {url} answered {}{said}", a.status),
            true,
        )),
        401 | 403 => Err(refused(
            format!(
                "the WHIP server at {url} refused the token ({}){said}: check token_file/token_env",
                a.status
            ),
            false,
        )),
        _ => Err(refused(
            format!("the WHIP server at {url} refused the offer ({}){said}", a.status),
            false,
        )),
    }
}

/// The first line of an error answer's text, shortened, without control characters.
fn short_text(body: &str) -> String {
    let line = body.trim().lines().next().unwrap_or("");
    let mut text: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR_TEXT)
        .collect();
    if line.chars().count() > MAX_ERROR_TEXT {
        text.push('…');
    }
    text
}

/// `Retry-After` in seconds (the HTTP-date form is not read: the backoff applies then).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// A `Location` resolved against the URL it answered: absolute as is, `/path` on the same
/// server, a relative path beside the endpoint.
pub fn resolve(base: &str, location: &str) -> String {
    let location = location.trim();
    if location.contains("://") {
        return location.to_string();
    }
    let origin = origin(base);
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    let path = base[origin.len()..].split(['?', '#']).next().unwrap_or("");
    let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
    format!("{origin}{dir}{location}")
}

/// The ICE servers in one `Link` header value (RFC 9725 4.6: `<stun:host>; rel="ice-server"`,
/// TURN with `username` and `credential`); other links are skipped.
pub fn parse_links(value: &str) -> Vec<IceServer> {
    split_outside_quotes(value, ',')
        .into_iter()
        .filter_map(|link| {
            let link = link.trim();
            let (target, params) = link.strip_prefix('<')?.split_once('>')?;
            let mut rel = None;
            let (mut username, mut credential) = (None, None);
            for param in split_outside_quotes(params, ';') {
                let Some((name, value)) = param.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"').to_string();
                match name.trim().to_ascii_lowercase().as_str() {
                    "rel" => rel = Some(value),
                    "username" => username = Some(value),
                    "credential" => credential = Some(value),
                    _ => {}
                }
            }
            let is_ice = rel.is_some_and(|r| r.split_whitespace().any(|r| r == "ice-server"));
            let scheme_ok = ["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|s| target.starts_with(s));
            (is_ice && scheme_ok).then(|| IceServer {
                urls: vec![target.to_string()],
                username,
                credential,
            })
        })
        .collect()
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut angled) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angled = true,
            '>' if !quoted => angled = false,
            c if c == sep && !quoted && !angled => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://media:8889/cam/whip";

    fn reply(
        status: u16,
        content_type: &str,
        location: Option<&str>,
        body: &str,
    ) -> Answer<'static> {
        Answer {
            status,
            content_type: Box::leak(content_type.to_string().into_boxed_str()),
            location: location.map(|l| &*Box::leak(l.to_string().into_boxed_str())),
            etag: Some("\"e1\"".into()),
            retry_after: None,
            links: &[],
            body: body.into(),
        }
    }

    #[test]
    fn a_201_with_sdp_is_a_session_at_its_resolved_location() {
        let created = answer(
            URL,
            reply(201, "application/sdp", Some("/cam/whip/s1"), "v=0"),
        )
        .unwrap();
        assert_eq!(created.location, "http://media:8889/cam/whip/s1");
        assert_eq!(created.etag.as_deref(), Some("\"e1\""));
        assert_eq!(created.answer, "v=0");
        let err = answer(URL, reply(201, "application/sdp", None, "v=0")).unwrap_err();
        assert!(err.error.contains("without a Location"), "{}", err.error);
    }

    #[test]
    fn other_answers_say_what_to_fix_and_whether_to_retry_soon() {
        let html = answer(URL, reply(200, "text/html; charset=utf-8", None, "<html>")).unwrap_err();
        assert!(
            html.error.contains("HTML page, not an SDP answer"),
            "{}",
            html.error
        );
        assert!(!html.transient);
        let not_found =
            answer(URL, reply(404, "text/plain", None, "no such path\nmore")).unwrap_err();
        assert_eq!(
            not_found.error,
            "the WHIP server at http://media:8889 refused the offer (404): no such path"
        );
        assert!(!not_found.transient);
        let busy = Answer {
            retry_after: parse_retry_after(" 7 "),
            ..reply(503, "", None, "")
        };
        let busy = answer(URL, busy).unwrap_err();
        assert!(busy.transient);
        assert_eq!(busy.retry_after, Some(Duration::from_secs(7)));
        assert!(answer(URL, reply(429, "", None, "")).unwrap_err().transient);
        let auth = answer(URL, reply(401, "", None, "")).unwrap_err();
        assert!(
            auth.error.contains("refused the token (401)"),
            "{}",
            auth.error
        );
        let json = answer(URL, reply(200, "application/json", None, "{}")).unwrap_err();
        assert!(
            json.error.contains("'application/json' instead of 201"),
            "{}",
            json.error
        );
    }

    #[test]
    fn retry_after_in_seconds_is_read_and_capped() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn locations_resolve_like_a_browser_would() {
        assert_eq!(resolve(URL, "http://other/x"), "http://other/x");
        assert_eq!(resolve(URL, "/s/1"), "http://media:8889/s/1");
        assert_eq!(resolve(URL, "s1"), "http://media:8889/cam/s1");
        assert_eq!(resolve("http://media:8889", "s1"), "http://media:8889/s1");
        assert_eq!(resolve("http://m/a/b?x=/y", "s"), "http://m/a/s");
        assert_eq!(resolve("http://m?x=/y", "s"), "http://m/s");
        assert_eq!(origin("http://m:1/a?b"), "http://m:1");
        assert_eq!(origin("http://m:1?b=/c"), "http://m:1");
    }

    #[test]
    fn ice_servers_come_from_links_with_rel_ice_server() {
        let links = parse_links(
            "<stun:stun.example.net>; rel=\"ice-server\", \
             <turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"u\"; \
             credential=\"p,w;d\"; credential-type=\"password\", \
             </other>; rel=\"next\", <http://x>; rel=\"ice-server\"",
        );
        assert_eq!(
            links,
            [
                IceServer {
                    urls: vec!["stun:stun.example.net".into()],
                    username: None,
                    credential: None
                },
                IceServer {
                    urls: vec!["turn:turn.example.net?transport=udp".into()],
                    username: Some("u".into()),
                    credential: Some("p,w;d".into())
                },
            ]
        );
        assert!(parse_links("garbage, <unterminated").is_empty());
    }
}
