//! A small blocking HTTP/1.1 client (plain `http://` only, one request per connection). The tests,
//! the benchmark and pull sources use it to read camgraph's and IP cameras' streams as any client
//! would, chunked transfer encoding included.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A response whose body is read as it arrives.
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    body: Box<dyn BufRead + Send>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as it streams.
    pub fn into_body(self) -> Box<dyn BufRead + Send> {
        self.body
    }

    pub fn bytes(mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.body.read_to_end(&mut out)?;
        Ok(out)
    }

    pub fn text(self) -> io::Result<String> {
        String::from_utf8(self.bytes()?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// `GET url`.
pub fn get(url: &str) -> io::Result<Response> {
    request("GET", url, &[], None)
}

/// How a request is made.
#[derive(Clone, Debug)]
pub struct Options {
    /// A read that waits longer than this fails. Default 10 s.
    pub read_timeout: Duration,
    /// The socket's receive buffer, for clients that must feel back-pressure early (a slow
    /// viewer in a test). Default: the system's.
    pub recv_buffer: Option<usize>,
    /// The whole response head must arrive within this, however slowly it trickles. Default 10 s.
    pub head_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            read_timeout: Duration::from_secs(10),
            recv_buffer: None,
            head_timeout: Duration::from_secs(10),
        }
    }
}

/// A stream that fails with `TimedOut` once its deadline (if set) has passed: a peer that
/// trickles bytes cannot hold a reader longer than that.
pub struct Deadline<R> {
    inner: R,
    until: Option<Instant>,
    allowed: Duration,
    /// What must arrive in time, for the error: "the response head", "a frame".
    what: &'static str,
}

impl<R> Deadline<R> {
    /// `inner`, with a deadline `allowed` from now.
    pub fn new(inner: R, allowed: Duration, what: &'static str) -> Self {
        Self {
            inner,
            until: Some(Instant::now() + allowed),
            allowed,
            what,
        }
    }

    /// A new deadline, `allowed` from now.
    pub fn restart(&mut self) {
        self.until = Some(Instant::now() + self.allowed);
    }

    /// No deadline until the next `restart`.
    pub fn clear(&mut self) {
        self.until = None;
    }

    fn check(&self) -> io::Result<()> {
        match self.until {
            Some(until) if Instant::now() > until => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} did not arrive in full within {} s",
                    self.what,
                    self.allowed.as_secs_f64()
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl<R: Read> Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        self.inner.read(buf)
    }
}

impl<R: BufRead> BufRead for Deadline<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.check()?;
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n)
    }
}

/// Sends a request; `body` is `(content type, bytes)`. Reads time out after 10 s of silence.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> io::Result<Response> {
    request_with(method, url, headers, body, &Options::default())
}

/// As `request`, with `options`.
pub fn request_with(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
    options: &Options,
) -> io::Result<Response> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("only http:// URLs are supported: {url}"),
        )
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no address for {authority}"),
        )
    })?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    if let Some(size) = options.recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
    let mut stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(options.read_timeout))?;
    stream.set_nodelay(true)?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some((content_type, bytes)) = body {
        head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            bytes.len()
        ));
    } else if method != "GET" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if let Some((_, bytes)) = body {
        stream.write_all(bytes)?;
    }
    let stream = Deadline::new(stream, options.head_timeout, "the response head");
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let (status, headers) = read_head(&mut reader)?;
    reader.get_mut().clear();
    Ok(with_body(reader, status, headers))
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The longest line of a response head or an MJPEG part's head that is read.
pub const MAX_LINE: usize = 8 << 10;
/// The most header lines of a response head or an MJPEG part's head.
pub const MAX_HEADERS: usize = 100;

/// Reads a line into `line` (cleared first), up to `MAX_LINE` bytes: a peer that sends a line
/// without end gets an error instead of our memory. 0 at the end of the stream.
pub fn read_line_limited(reader: &mut impl BufRead, line: &mut String) -> io::Result<usize> {
    line.clear();
    let n = reader.take(MAX_LINE as u64).read_line(line)?;
    if n == MAX_LINE && !line.ends_with('\n') {
        return Err(bad(format!("a line longer than {} KiB", MAX_LINE >> 10)));
    }
    Ok(n)
}

/// The error for a head with more than `MAX_HEADERS` lines.
pub fn too_many_headers() -> io::Error {
    bad(format!("more than {MAX_HEADERS} header lines"))
}

/// Reads a response from any byte stream (a TLS stream in the tests, a TCP socket here).
pub fn read_response<R: Read + Send + 'static>(mut reader: BufReader<R>) -> io::Result<Response> {
    let (status, headers) = read_head(&mut reader)?;
    Ok(with_body(reader, status, headers))
}

/// The status and the headers (names in lower case).
type Head = (u16, Vec<(String, String)>);

fn read_head<R: Read>(reader: &mut BufReader<R>) -> io::Result<Head> {
    let mut line = String::new();
    read_line_limited(reader, &mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("not an HTTP status line: {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        if read_line_limited(reader, &mut line)? == 0 {
            return Err(bad("connection closed inside the headers".into()));
        }
        if headers.len() == MAX_HEADERS {
            return Err(too_many_headers());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

/// The response whose head was read, its body read from `reader` as it arrives.
fn with_body<R: Read + Send + 'static>(
    reader: BufReader<R>,
    status: u16,
    headers: Vec<(String, String)>,
) -> Response {
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body: Box<dyn BufRead + Send> =
        if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            Box::new(BufReader::with_capacity(
                64 * 1024,
                Chunked {
                    inner: reader,
                    left: 0,
                    done: false,
                },
            ))
        } else if let Some(len) = find("content-length").and_then(|v| v.parse::<u64>().ok()) {
            Box::new(reader.take(len))
        } else {
            Box::new(reader)
        };
    Response {
        status,
        headers,
        body,
    }
}

/// Decodes `Transfer-Encoding: chunked`.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            if read_line_limited(&mut self.inner, &mut line)? == 0 {
                return Ok(0);
            }
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(size, 16)
                .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside a chunk",
            ));
        }
        self.left -= n;
        if self.left == 0 {
            let mut crlf = [0; 2];
            self.inner.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_status_line_or_header_block_is_refused_without_buffering_it() {
        let line = io::repeat(b'a').take(64 << 20);
        let err = read_response(BufReader::new(line)).err().unwrap();
        assert_eq!(err.to_string(), "a line longer than 8 KiB");
        let many = format!("HTTP/1.1 200 OK\r\n{}", "X-Many: 1\r\n".repeat(10_000));
        let err = read_response(BufReader::new(io::Cursor::new(many)))
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "more than 100 header lines");
    }

    #[test]
    fn a_response_head_that_trickles_is_cut_off_at_its_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            for b in b"HTTP/1.1 200 OK\r\nX-Slow: ".iter().chain(&[b'a'; 10_000]) {
                if conn.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let options = Options {
            head_timeout: Duration::from_millis(500),
            ..Default::default()
        };
        let started = Instant::now();
        let err = request_with("GET", &url, &[], None, &options)
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert_eq!(
            err.to_string(),
            "the response head did not arrive in full within 0.5 s"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        let mut out = String::new();
        Chunked {
            inner: &wire[..],
            left: 0,
            done: false,
        }
        .read_to_string(&mut out)
        .unwrap();
        assert_eq!(out, "hello, world");
    }
}
