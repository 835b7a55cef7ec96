//! A small blocking HTTP/1.1 client (plain `http://` only, one request per connection). The tests,
//! the benchmark and pull sources use it to read camgraph's and IP cameras' streams as any client
//! would, chunked transfer encoding included. `WebSocket` is the client side of RFC 6455 over the
//! same kind of connection, for the tests and the soak bench (frames as they are, no extensions).

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

/// An `http://` URL's authority (`host:port`) and path (with its query; `/` when there is none).
fn split_url(url: &str) -> io::Result<(&str, &str)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("only http:// URLs are supported: {url}"),
        )
    })?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

/// As `request`, with `options`.
pub fn request_with(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
    options: &Options,
) -> io::Result<Response> {
    let (authority, path) = split_url(url)?;
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

/// WebSocket opcodes (RFC 6455 5.2).
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// A client WebSocket: the handshake, then whole frames sent (masked, as a client must) and
/// received (FIN and opcode as the server sent them).
pub struct WebSocket {
    stream: BufReader<TcpStream>,
    /// Changes per frame; the mask only has to be unpredictable to intermediaries, not secret.
    mask_seed: u32,
}

impl WebSocket {
    /// Opens `ws_url` (`http://host:port/path?query`, as for `request`) with extra `headers`;
    /// fails unless the server answers 101.
    pub fn connect(url: &str, headers: &[(&str, &str)]) -> io::Result<WebSocket> {
        let (authority, path) = split_url(url)?;
        let mut stream = TcpStream::connect(authority)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.split_whitespace().nth(1) != Some("101") {
            return Err(bad(format!(
                "WebSocket upgrade refused: {}",
                line.trim_end()
            )));
        }
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(bad("connection closed inside the headers".into()));
            }
            if line.trim_end().is_empty() {
                break;
            }
        }
        Ok(WebSocket {
            stream: reader,
            mask_seed: 0x9e37_79b9,
        })
    }

    /// Sends one frame with FIN set.
    pub fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let frame = self.encode(0x80 | (opcode & 0x0f), payload);
        self.stream.get_mut().write_all(&frame)
    }

    /// Sends `bytes` as they are, after the handshake (for tests of malformed frames).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.get_mut().write_all(bytes)
    }

    /// The frame header and masked payload a client sends; `first` is FIN, RSV and opcode.
    pub fn encode(&mut self, first: u8, payload: &[u8]) -> Vec<u8> {
        self.mask_seed = self
            .mask_seed
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let mask = self.mask_seed.to_be_bytes();
        let mut frame = vec![first];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    /// The next frame: (FIN, opcode, payload). A frame over 16 MiB is refused unread.
    pub fn read_frame(&mut self) -> io::Result<(bool, u8, Vec<u8>)> {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head)?;
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b)?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b)?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        if len > 16 << 20 {
            return Err(bad(format!("a {len}-byte WebSocket frame")));
        }
        let mut mask = None;
        if head[1] & 0x80 != 0 {
            let mut m = [0u8; 4];
            self.stream.read_exact(&mut m)?;
            mask = Some(m);
        }
        let mut payload = vec![0; len as usize];
        self.stream.read_exact(&mut payload)?;
        if let Some(m) = mask {
            payload
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b ^= m[i % 4]);
        }
        Ok((head[0] & 0x80 != 0, head[0] & 0x0f, payload))
    }

    /// The next text message, answering pings and skipping pongs on the way; `None` once the
    /// server closed.
    pub fn read_text(&mut self) -> io::Result<Option<String>> {
        loop {
            match self.read_frame()? {
                (_, opcode::TEXT, payload) => {
                    return String::from_utf8(payload)
                        .map(Some)
                        .map_err(|e| bad(format!("text frame not UTF-8: {e}")))
                }
                (_, opcode::PING, payload) => self.send(opcode::PONG, &payload)?,
                (_, opcode::CLOSE, _) => return Ok(None),
                _ => {}
            }
        }
    }

    /// Sends a close frame (code 1000) and waits for the server's close, or for the connection to
    /// end.
    pub fn close(mut self) -> io::Result<()> {
        self.send(opcode::CLOSE, &1000u16.to_be_bytes())?;
        loop {
            match self.read_frame() {
                Ok((_, opcode::CLOSE, _)) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// The socket, to set timeouts or shut it down.
    pub fn socket(&self) -> &TcpStream {
        self.stream.get_ref()
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
