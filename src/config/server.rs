//! The `server:` section: where camgraph listens, who may call it (tokens and their roles), TLS,
//! which origins and host names a browser may use, and which camera sources the API may add.
//!
//! ```yaml
//! server:
//!   listen: 0.0.0.0:8080
//!   auth:
//!     tokens:
//!       - { name: laptop, token_file: /etc/camgraph/laptop.token, role: control }
//!       - { name: grafana, token_env: CAMGRAPH_SCRAPE_TOKEN, role: view }
//!   tls: { cert: /etc/camgraph/cert.pem, key: /etc/camgraph/key.pem }
//!   hosts: [robot.local]
//!   api_sources: [test, /dev/video*, "http://*", "https://*", "rtsp://*", /srv/clips/*]
//!   max_cameras: 32
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// `server:` settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port of the HTTP server. Default `127.0.0.1:8080` (loopback only).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Origins allowed to call the API from a browser page served elsewhere (CORS), e.g.
    /// `http://robot.local:5173`, or `*` for any. Default: none (the server's own pages need
    /// none; a development server on `http://localhost:5173` must be listed too).
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Who may call camgraph: `{ tokens: [...] }`, or `none` to let anyone who can reach it do
    /// anything (warned at every start). Default: not set, which is allowed only when `listen`
    /// is a loopback address.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Serve HTTPS with this certificate and key (PEM files). Default: plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Host names clients may use to reach camgraph (the `Host` header), besides IP addresses
    /// and `localhost`, e.g. `robot.local`; `*` accepts any (behind a proxy that checks it).
    /// Anything else is refused, so that a web page cannot reach camgraph by DNS rebinding.
    /// Default: none.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The camera sources `POST /api/camera/cameras/{name}?source=...` may add: exact values, or
    /// prefixes ending in `*`. Default: `test`, `/dev/video*`, `http://*`, `https://*`,
    /// `rtsp://*`; local files and folders only when listed (e.g. `/srv/clips/*`).
    #[serde(default)]
    pub api_sources: ApiSources,
    /// The most cameras (nodes without inputs), those of the file and those added through the
    /// API together: each costs a capture thread and frame memory. Default 32.
    #[serde(default = "default_max_cameras")]
    pub max_cameras: usize,
    /// Most endless streams (MJPEG viewers) at once, all cameras together; one more gets a 503.
    /// Each `mjpeg_sink` has its own `max_viewers` too. Default 500.
    #[serde(default = "default_max_viewers")]
    pub max_viewers: usize,
}

fn default_max_cameras() -> usize {
    32
}

fn default_max_viewers() -> usize {
    500
}

/// Why camera `name` cannot be camera number `n`, if it cannot; `None` if it fits.
pub fn over_max_cameras(name: &str, n: usize, max: usize) -> Option<String> {
    (n > max).then(|| format!("camera '{name}' would be camera {n}: server.max_cameras is {max}"))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            cors_origins: Vec::new(),
            auth: None,
            tls: None,
            hosts: Vec::new(),
            api_sources: ApiSources::default(),
            max_cameras: default_max_cameras(),
            max_viewers: default_max_viewers(),
        }
    }
}

/// `server.auth`: tokens, or `none` written on purpose.
#[derive(Clone, Debug, PartialEq)]
pub enum Auth {
    /// `auth: none`: anyone who can reach the server may do anything.
    None,
    /// Requests need one of these tokens (at least one, names unique).
    Tokens(Vec<TokenConfig>),
}

/// What a token lets its holder do.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Watch: streams, snapshots, WebRTC, stats, the cameras list, the graph, `/metrics`.
    View,
    /// Everything `view` does, plus start/stop, adding and removing cameras, reload and disk
    /// snapshots.
    Control,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::View => "view",
            Role::Control => "control",
        }
    }
}

/// One token of `server.auth.tokens`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(try_from = "RawToken")]
pub struct TokenConfig {
    /// Who holds it, for the log (the token itself is never logged).
    pub name: String,
    pub secret: TokenSource,
    pub role: Role,
}

/// Where a token's secret is read, once at start.
#[derive(Clone, PartialEq)]
pub enum TokenSource {
    /// `token_file`: the file's content, surrounding whitespace removed.
    File(PathBuf),
    /// `token_env`: an environment variable.
    Env(String),
    /// `token`: written in the file itself (warned at start: config files get shared).
    Literal(String),
}

impl fmt::Debug for TokenSource {
    /// Never shows a literal token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::File(p) => write!(f, "File({})", p.display()),
            TokenSource::Env(v) => write!(f, "Env({v})"),
            TokenSource::Literal(_) => f.write_str("Literal(..)"),
        }
    }
}

impl TokenSource {
    /// The secret, surrounding whitespace removed; an unreadable file, an unset variable or an
    /// empty secret is an error naming where it was looked for (never what it holds).
    pub fn read(&self) -> Result<String, SecretError> {
        let (secret, what) = match self {
            TokenSource::File(path) => (
                std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.display().to_string(),
                    source,
                })?,
                format!("token_file {}", path.display()),
            ),
            TokenSource::Env(var) => (
                std::env::var(var).map_err(|_| SecretError::Env(var.clone()))?,
                format!("environment variable {var}"),
            ),
            TokenSource::Literal(token) => (token.clone(), "token".to_string()),
        };
        let secret = secret.trim();
        if secret.is_empty() {
            return Err(SecretError::Empty(what));
        }
        Ok(secret.to_string())
    }
}

/// Why a token's secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read token_file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("environment variable {0} is not set")]
    Env(String),
    #[error("{0} is empty")]
    Empty(String),
}

/// A token entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    token: Option<String>,
    role: Role,
}

impl TryFrom<RawToken> for TokenConfig {
    type Error = String;
    fn try_from(raw: RawToken) -> Result<Self, String> {
        let secret = match (raw.token_file, raw.token_env, raw.token) {
            (Some(path), None, None) => TokenSource::File(path),
            (None, Some(var), None) => TokenSource::Env(var),
            (None, None, Some(token)) if token.trim().is_empty() => {
                return Err(format!("token '{}': 'token' is empty", raw.name))
            }
            (None, None, Some(token)) => TokenSource::Literal(token),
            _ => {
                return Err(format!(
                    "token '{}': give exactly one of 'token_file', 'token_env' or 'token'",
                    raw.name
                ))
            }
        };
        Ok(TokenConfig {
            name: raw.name,
            secret,
            role: raw.role,
        })
    }
}

/// `auth: { tokens: [...] }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    tokens: Vec<TokenConfig>,
}

impl<'de> Deserialize<'de> for Auth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AuthVisitor;
        impl<'de> Visitor<'de> for AuthVisitor {
            type Value = Auth;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("'none' or a mapping with 'tokens'")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Auth, E> {
                match v {
                    "none" => Ok(Auth::None),
                    other => Err(E::custom(format!(
                        "expected 'none' or {{ tokens: [...] }} (got '{other}')"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Auth, A::Error> {
                let raw = RawTokens::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if raw.tokens.is_empty() {
                    return Err(de::Error::custom(
                        "'tokens' is empty: list at least one, or write 'auth: none'",
                    ));
                }
                let mut names = BTreeSet::new();
                if let Some(twice) = raw.tokens.iter().find(|t| !names.insert(&t.name)) {
                    return Err(de::Error::custom(format!(
                        "two tokens are named '{}'",
                        twice.name
                    )));
                }
                Ok(Auth::Tokens(raw.tokens))
            }
        }
        d.deserialize_any(AuthVisitor)
    }
}

/// `server.tls`: PEM files.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `server.api_sources`: which `source` values a camera added through the API may have.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct ApiSources(Vec<String>);

impl Default for ApiSources {
    fn default() -> Self {
        Self(
            ["test", "/dev/video*", "http://*", "https://*", "rtsp://*"]
                .map(String::from)
                .to_vec(),
        )
    }
}

impl ApiSources {
    pub fn new(patterns: Vec<String>) -> Self {
        Self(patterns)
    }

    /// Whether `source` is listed: equal to an entry, or starting with an entry's text before
    /// its final `*` without any `..` segment after it (a listed folder does not open its
    /// parents).
    pub fn allows(&self, source: &str) -> bool {
        self.0
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => source
                    .strip_prefix(prefix)
                    .is_some_and(|rest| !rest.split(['/', '\\']).any(|s| s == "..")),
                None => pattern == source,
            })
    }

    /// The entries, for error messages.
    pub fn patterns(&self) -> &[String] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(yaml: &str) -> Result<ServerConfig, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn auth_is_tokens_or_none_on_purpose() {
        let s = server(
            "auth:\n  tokens:\n    - { name: laptop, token_file: /t, role: control }\n    - { name: g, token_env: T, role: view }\n",
        )
        .unwrap();
        let Some(Auth::Tokens(tokens)) = s.auth else {
            panic!("tokens expected")
        };
        assert_eq!(tokens[0].secret, TokenSource::File("/t".into()));
        assert_eq!(tokens[1].role, Role::View);
        assert_eq!(server("auth: none\n").unwrap().auth, Some(Auth::None));
        assert_eq!(server("{}").unwrap().auth, None);
    }

    #[test]
    fn bad_auth_says_what_is_wrong() {
        let e = server("auth: nobody\n").unwrap_err();
        assert!(e.contains("expected 'none'"), "{e}");
        let e = server("auth: { tokens: [] }\n").unwrap_err();
        assert!(e.contains("'tokens' is empty"), "{e}");
        let e = server("auth: { tokens: [{ name: a, role: view }] }\n").unwrap_err();
        assert!(e.contains("exactly one of"), "{e}");
        let e = server("auth: { tokens: [{ name: a, token: x, token_env: Y, role: view }] }\n")
            .unwrap_err();
        assert!(e.contains("exactly one of"), "{e}");
        let e = server("auth: { tokens: [{ name: a, token: x, role: admin }] }\n").unwrap_err();
        assert!(e.contains("unknown variant"), "{e}");
        let e = server(
            "auth: { tokens: [{ name: a, token: x, role: view }, { name: a, token: y, role: view }] }\n",
        )
        .unwrap_err();
        assert!(e.contains("two tokens are named 'a'"), "{e}");
    }

    #[test]
    fn a_literal_token_is_never_shown() {
        let s = server("auth: { tokens: [{ name: a, token: s3cret, role: view }] }\n").unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn api_sources_default_and_prefixes() {
        let d = ApiSources::default();
        for ok in ["test", "/dev/video0", "http://cam/x.mjpg", "rtsp://cam/1"] {
            assert!(d.allows(ok), "{ok}");
        }
        for refused in ["/etc", "/home/me/pictures", "0", "file:///etc", "testx"] {
            assert!(!d.allows(refused), "{refused}");
        }
        let listed = ApiSources::new(vec!["/srv/clips/*".into()]);
        assert!(listed.allows("/srv/clips/a.mjpeg"));
        assert!(!listed.allows("/srv/clips/../../etc"));
        assert!(!listed.allows("/srv/clipsx"));
    }
}
