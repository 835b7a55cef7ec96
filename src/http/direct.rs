//! Endless bodies written straight to the client's socket. actix-http copies every chunk of a
//! body into the connection's write buffer before writing that buffer; for a stream of large
//! shared frames sent to hundreds of viewers, that copy and the several writes per frame are most
//! of the server's own work. A `DirectWriter` sends each chunk from the caller's (shared) bytes
//! with one vectored write on the plain TCP socket, in the HTTP/1.1 chunked framing that actix
//! announced for a streamed body. actix still writes the response head before it and the final
//! zero-size chunk after it: its body for the response (`DirectBody`) only starts the writer and
//! ends when the writer does.
//!
//! Order on the wire: a body is first polled right after actix has put the response head in its
//! buffer, and in the same turn actix writes that buffer to the socket; the writer is started by
//! that first poll as a task of the same single-threaded worker, so it runs only after that
//! write. What this cannot order is HTTP pipelining (a client sending a request before the
//! previous answer has arrived): if an earlier answer on the connection is still in actix's
//! buffer, it could come after the writer's first chunk. Browsers, ffmpeg and curl do not
//! pipeline; README says so.

use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::http::Version;
use actix_web::HttpRequest;
use bytes::Bytes;
use futures_util::Stream;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;

use super::stall::ConnFd;

/// The most parts one chunk may have.
const MAX_PARTS: usize = 6;

/// Sends chunks of a response body on the client's socket; see the module's doc.
pub struct DirectWriter {
    socket: AsyncFd<socket2::Socket>,
    timeout: Duration,
}

impl DirectWriter {
    /// Sends `parts` (at most 6, not all empty) as one chunk of the body: one vectored write,
    /// more only when the socket takes part of it. Fails when the client has gone; when the
    /// client takes nothing for the timeout, its connection is reset and this fails too.
    pub async fn send(&self, parts: &[&[u8]]) -> io::Result<()> {
        self.send_from(parts, 0).await
    }

    /// One write of the chunk of `parts` without waiting: `None` when the socket took all of it,
    /// else how many of its bytes it took (0 when it is full), for `send_from` to finish. A
    /// thread other than the writer's may call it.
    pub fn try_send(&self, parts: &[&[u8]]) -> io::Result<Option<usize>> {
        let mut size_line = [0u8; 18];
        let (pieces, count, total) = chunk(parts, &mut size_line)?;
        let mut slices = [IoSlice::new(&[]); MAX_PARTS + 2];
        let n = remaining(&pieces[..count], 0, &mut slices);
        match self.socket.get_ref().send_vectored(&slices[..n]) {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            Ok(sent) if sent == total => Ok(None),
            Ok(sent) => Ok(Some(sent)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Some(0)),
            Err(e) => Err(e),
        }
    }

    /// Sends what is left of the chunk of `parts` after its first `written` bytes, waiting for
    /// room as `send` does.
    pub async fn send_from(&self, parts: &[&[u8]], mut written: usize) -> io::Result<()> {
        let mut size_line = [0u8; 18];
        let (pieces, count, total) = chunk(parts, &mut size_line)?;
        let pieces = &pieces[..count];
        while written < total {
            let ready = tokio::time::timeout(self.timeout, self.socket.writable()).await;
            let mut guard = match ready {
                Ok(guard) => guard?,
                Err(_) => {
                    tracing::info!(
                        "a client took nothing for {} ms: its connection is cut",
                        self.timeout.as_millis()
                    );
                    let socket = self.socket.get_ref();
                    // Linger 0: a reset, so the unsent bytes are dropped rather than kept.
                    let _ = socket.set_linger(Some(Duration::ZERO));
                    let _ = socket.shutdown(std::net::Shutdown::Both);
                    return Err(io::ErrorKind::TimedOut.into());
                }
            };
            let mut slices = [IoSlice::new(&[]); MAX_PARTS + 2];
            let n = remaining(pieces, written, &mut slices);
            match guard.try_io(|s| s.get_ref().send_vectored(&slices[..n])) {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(sent)) => written += sent,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
impl DirectWriter {
    /// A writer on one end of a loopback TCP connection, and the other end for the test to read
    /// (blocking; the test sets it as it needs). Both ends ask for `buffer` bytes of socket
    /// buffer, so that a test can fill them. Returns once the socket is known to be writable, as
    /// a served connection's is by its body's first write.
    pub async fn loopback(buffer: usize) -> (DirectWriter, std::net::TcpStream) {
        use socket2::{Domain, Socket, Type};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
        let client = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a client socket");
        client.set_recv_buffer_size(buffer).expect("SO_RCVBUF");
        client
            .connect(&listener.local_addr().expect("its address").into())
            .expect("connect on loopback");
        let (server, _) = listener.accept().expect("accept on loopback");
        let server = Socket::from(server);
        server.set_send_buffer_size(buffer).expect("SO_SNDBUF");
        server.set_nonblocking(true).expect("non-blocking");
        // SAFETY: the Socket owns its descriptor and keeps it open until the AsyncFd drops it.
        let socket = unsafe { AsyncFd::register_with_interest(server, Interest::WRITABLE) }
            .expect("registered");
        // The readiness stays known (the guard is dropped without clearing it).
        drop(socket.writable().await.expect("writable"));
        let writer = DirectWriter {
            socket,
            timeout: Duration::from_secs(10),
        };
        (writer, client.into())
    }
}

/// The pieces of the chunk of `parts` (size line, parts, CRLF), how many, and its length in bytes.
type Chunk<'a> = ([&'a [u8]; MAX_PARTS + 2], usize, usize);

fn chunk<'a>(parts: &[&'a [u8]], size_line: &'a mut [u8; 18]) -> io::Result<Chunk<'a>> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len == 0 || parts.len() > MAX_PARTS {
        // An empty chunk would end the body (it is the terminator's form).
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a chunk of 1 to 6 non-empty parts",
        ));
    }
    let size_line = chunk_size_line(len, size_line);
    let mut pieces: [&[u8]; MAX_PARTS + 2] = [&[]; MAX_PARTS + 2];
    pieces[0] = size_line;
    pieces[1..=parts.len()].copy_from_slice(parts);
    pieces[parts.len() + 1] = b"\r\n";
    Ok((pieces, parts.len() + 2, size_line.len() + len + 2))
}

/// `len` in hex and CRLF, the head of a chunk.
fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, digit) in buf[..digits].iter_mut().enumerate() {
        let nibble = (len >> (4 * (digits - 1 - i))) & 0xF;
        *digit = b"0123456789abcdef"[nibble];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    &buf[..digits + 2]
}

/// The parts of `pieces` after the first `skip` bytes, as slices in `out`; how many.
fn remaining<'a>(pieces: &[&'a [u8]], mut skip: usize, out: &mut [IoSlice<'a>]) -> usize {
    let mut n = 0;
    for piece in pieces {
        if skip >= piece.len() {
            skip -= piece.len();
            continue;
        }
        out[n] = IoSlice::new(&piece[skip..]);
        skip = 0;
        n += 1;
    }
    n
}

/// The body actix sends for a response written by a `DirectWriter`: nothing of its own; it
/// starts the writer when first polled and ends when the writer ends (actix then writes the last,
/// empty chunk). Dropped (the client went away), it stops the writer.
pub struct DirectBody {
    start: Option<Box<dyn FnOnce() -> JoinHandle<()>>>,
    writer: Option<JoinHandle<()>>,
}

impl Stream for DirectBody {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(start) = self.start.take() {
            self.writer = Some(start());
        }
        match self.writer.as_mut().map(|w| Pin::new(w).poll(cx)) {
            Some(Poll::Pending) => Poll::Pending,
            _ => Poll::Ready(None),
        }
    }
}

impl Drop for DirectBody {
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            writer.abort();
        }
    }
}

/// The client's socket, for a body written by a `DirectWriter`.
pub struct Direct {
    socket: socket2::Socket,
    timeout: Duration,
}

/// The socket of `req`'s connection for a body written straight to it (cut off when the client
/// takes nothing for `timeout`), if the request came on a plain TCP connection in HTTP/1.1;
/// `None` otherwise (TLS, HTTP/1.0, a socket not known), for the caller to send its body the
/// usual way.
pub fn direct(req: &HttpRequest, timeout: Duration) -> Option<Direct> {
    let conn = req.conn_data::<ConnFd>()?;
    if conn.tls || req.version() != Version::HTTP_11 {
        return None;
    }
    // SAFETY: the descriptor belongs to the connection this request is being handled on, which
    // is open while its handler runs; it is duplicated at once, so the writer owns a descriptor
    // of its own whatever happens to the connection later.
    let borrowed = unsafe { BorrowedFd::borrow_raw(conn.fd) };
    let socket = socket2::Socket::from(borrowed.try_clone_to_owned().ok()?);
    Some(Direct { socket, timeout })
}

impl Direct {
    /// The response's body: `write` sends the chunks through a `DirectWriter`.
    pub fn body<F, Fut>(self, write: F) -> DirectBody
    where
        F: FnOnce(DirectWriter) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let Direct { socket, timeout } = self;
        DirectBody {
            start: Some(Box::new(move || {
                actix_rt::spawn(async move {
                    // Registered with the worker's reactor inside the task (the runtime is there).
                    // SAFETY: the Socket owns its descriptor (a duplicate of the connection's) and
                    // keeps it open and unchanged until the AsyncFd, which owns the Socket, drops.
                    let registered =
                        unsafe { AsyncFd::register_with_interest(socket, Interest::WRITABLE) };
                    if let Ok(socket) = registered {
                        write(DirectWriter { socket, timeout }).await;
                    }
                })
            })),
            writer: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_hex_lines() {
        let mut buf = [0u8; 18];
        assert_eq!(chunk_size_line(1, &mut buf), b"1\r\n");
        assert_eq!(chunk_size_line(15, &mut buf), b"f\r\n");
        assert_eq!(chunk_size_line(16, &mut buf), b"10\r\n");
        assert_eq!(chunk_size_line(58_052, &mut buf), b"e2c4\r\n");
        assert_eq!(
            chunk_size_line(usize::MAX, &mut buf),
            b"ffffffffffffffff\r\n"
        );
    }

    #[test]
    fn a_partial_write_resumes_where_it_stopped() {
        let pieces: [&[u8]; 3] = [b"ab", b"cde", b"f"];
        let mut out = [IoSlice::new(&[]); 4];
        let all = |skip, out: &mut [IoSlice<'_>]| {
            let n = remaining(&pieces, skip, out);
            out[..n]
                .iter()
                .flat_map(|s| s.to_vec())
                .collect::<Vec<u8>>()
        };
        assert_eq!(all(0, &mut out), b"abcdef");
        assert_eq!(all(1, &mut out), b"bcdef");
        assert_eq!(all(2, &mut out), b"cdef");
        assert_eq!(all(4, &mut out), b"ef");
        assert_eq!(all(5, &mut out), b"f");
        assert_eq!(remaining(&pieces, 6, &mut out), 0);
    }
}
