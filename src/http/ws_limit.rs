//! A cap on the WebSocket frames a client may send, for every WebSocket route (`start`). actix's
//! codec checks a frame's size only once the whole frame has arrived, so a frame that declares
//! 2^62 bytes would be buffered for as long as the client sends. `FrameLimit` reads the frame
//! headers as the bytes pass by (the bytes themselves go through untouched) and fails the stream
//! as soon as a header declares more than the limit: the session then ends, and its response body
//! ends with an error (`cut_if_over`), which makes actix drop the connection instead of draining
//! it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::{Actor, StreamHandler};
use actix_web::error::PayloadError;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// Upgrades `req` to a WebSocket served by `actor`, closing the connection as soon as the client
/// declares a frame over `max_frame` bytes.
pub fn start<A>(
    actor: A,
    req: &HttpRequest,
    stream: web::Payload,
    max_frame: usize,
) -> Result<HttpResponse, actix_web::Error>
where
    A: Actor<Context = ws::WebsocketContext<A>>
        + StreamHandler<Result<ws::Message, ws::ProtocolError>>,
{
    let over = Arc::new(AtomicBool::new(false));
    let frames = FrameLimit::new(max_frame as u64).apply(stream, over.clone());
    let mut response = ws::handshake(req)?;
    let body = ws::WebsocketContext::create(actor, frames);
    Ok(response.streaming(body.chain(cut_if_over(over))))
}

/// Tracks where frame headers fall in a client's byte stream.
#[derive(Debug)]
struct FrameLimit {
    max: u64,
    /// The bytes of the header being read (at most 14).
    header: Vec<u8>,
    /// Payload bytes of the current frame still to pass.
    payload_left: u64,
}

impl FrameLimit {
    fn new(max: u64) -> Self {
        Self {
            max,
            header: Vec::with_capacity(14),
            payload_left: 0,
        }
    }

    /// Follows `chunk`; `Err` with the declared size of the first frame over the limit.
    fn check(&mut self, mut chunk: &[u8]) -> Result<(), u64> {
        while !chunk.is_empty() {
            if self.payload_left > 0 {
                let n = chunk
                    .len()
                    .min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                self.payload_left -= n as u64;
                chunk = &chunk[n..];
                continue;
            }
            self.header.push(chunk[0]);
            chunk = &chunk[1..];
            if let Some((length, header_len)) = declared_length(&self.header) {
                if length > self.max {
                    return Err(length);
                }
                if self.header.len() == header_len {
                    self.payload_left = length;
                    self.header.clear();
                }
            }
        }
        Ok(())
    }

    /// `stream` with this limit applied; `over` is set when a frame broke it.
    fn apply<S>(
        mut self,
        stream: S,
        over: Arc<AtomicBool>,
    ) -> impl Stream<Item = Result<Bytes, PayloadError>>
    where
        S: Stream<Item = Result<Bytes, PayloadError>>,
    {
        stream.map(move |chunk| {
            let bytes = chunk?;
            match self.check(&bytes) {
                Ok(()) => Ok(bytes),
                Err(length) => {
                    tracing::debug!(length, max = self.max, "WebSocket frame too large: closing");
                    over.store(true, Ordering::Relaxed);
                    Err(PayloadError::Overflow)
                }
            }
        })
    }
}

/// The end of a session's response body: nothing, or an error if a frame broke the limit (so
/// that the connection is dropped rather than drained for as long as the client sends).
fn cut_if_over(over: Arc<AtomicBool>) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    futures_util::stream::once(async move { over.load(Ordering::Relaxed) }).filter_map(|over| {
        futures_util::future::ready(over.then(|| {
            Err(actix_web::error::ErrorPayloadTooLarge(
                "WebSocket frame over the limit",
            ))
        }))
    })
}

/// The payload length a frame header declares (RFC 6455 §5.2) and the header's full length
/// (masking key included), as soon as the length bytes are in; `None` before.
fn declared_length(h: &[u8]) -> Option<(u64, usize)> {
    let second = *h.get(1)?;
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    let length = match extended {
        0 => u64::from(second & 0x7f),
        2 => u64::from(u16::from_be_bytes([*h.get(2)?, *h.get(3)?])),
        _ => u64::from_be_bytes(h.get(2..10)?.try_into().ok()?),
    };
    Some((length, 2 + extended + mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize, ext: u8) -> Vec<u8> {
        let mut f = vec![0x81];
        match ext {
            0 => f.push(0x80 | len as u8),
            2 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[9, 9, 9, 9]);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn frames_within_the_limit_pass_in_any_split() {
        let mut bytes = frame(5, 0);
        bytes.extend(frame(300, 2));
        bytes.extend(frame(1000, 8));
        bytes.extend(frame(0, 0));
        for split in [1, 3, 7, 64, bytes.len()] {
            let mut limit = FrameLimit::new(1000);
            for chunk in bytes.chunks(split) {
                assert_eq!(limit.check(chunk), Ok(()), "split {split}");
            }
            assert!(limit.header.is_empty() && limit.payload_left == 0);
        }
    }

    #[test]
    fn a_header_over_the_limit_fails_before_its_payload() {
        let mut head = vec![0x81, 0x80 | 127];
        head.extend_from_slice(&(1u64 << 62).to_be_bytes());
        let mut limit = FrameLimit::new(65536);
        assert_eq!(limit.check(&frame(10, 0)), Ok(()));
        assert_eq!(limit.check(&head[..5]), Ok(()));
        assert_eq!(limit.check(&head[5..]), Err(1 << 62));
        assert_eq!(FrameLimit::new(100).check(&frame(101, 2)[..4]), Err(101));
    }
}
