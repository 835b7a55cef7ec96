//! A viewer's JPEGs over a WebSocket (`GET /api/camera/ws[/{name}]`, the stream's `quality`,
//! `fps`, `width` and `height`): one socket per viewer, so a page of many cameras is not held to
//! the browser's six HTTP/1.1 connections per host. Each frame is one binary message: a 24-byte
//! little-endian header, then the JPEG.
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | header length (24) |
//! | 4..12 | capture time, Unix milliseconds (f64) |
//! | 12..14, 14..16 | width, height of this JPEG |
//! | 16..20 | frame number (low 32 bits) |
//! | 20 | scale the size was divided by (1, 2, 4; 0: it follows an adaptive ladder) |
//! | 21..24 | zero |
//!
//! Latest frame wins: the client sends the text `ack` for each frame it has shown, and the server
//! keeps at most `WINDOW` frames unacknowledged; newer frames replace the one waiting (counted as
//! dropped, reason `behind`). A camera that goes away closes the socket (1000, with the reason).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, AsyncContext, StreamHandler};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytes::{BufMut, Bytes, BytesMut};

use super::api::{wanted, MjpegStreams, OpenStream};
use super::viewer::{ViewerFrames, ViewerMetrics};
use crate::frame::EncodedFrame;
use crate::http::face::{websocket, ApiError, Live, Query};

/// Frames a client may have unacknowledged.
const WINDOW: u32 = 2;
/// Length of the header before each JPEG.
pub const HEADER_LEN: usize = 24;
const PING_EVERY: Duration = Duration::from_secs(10);
const SILENCE_LIMIT: Duration = Duration::from_secs(30);

pub(super) async fn open_default(
    live: Live,
    req: HttpRequest,
    query: Query,
    stream: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    open(live, None, req, query, stream).await
}

pub(super) async fn open_named(
    live: Live,
    path: web::Path<String>,
    req: HttpRequest,
    query: Query,
    stream: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    open(live, Some(&path), req, query, stream).await
}

async fn open(
    live: Live,
    name: Option<&str>,
    req: HttpRequest,
    query: Query,
    stream: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let wanted = wanted(&query, &["token"])?;
    let (camera, MjpegStreams { open, .. }) = live.find(name, |camera| {
        format!("camera '{camera}' has no mjpeg_sink")
    })?;
    let frames = open
        .send(OpenStream(wanted))
        .await
        .map_err(ApiError::from)?
        .map_err(ApiError::from)?;
    let metrics = frames.metrics();
    let session = FrameSocket {
        camera,
        frames: Some(frames),
        metrics,
        in_flight: 0,
        waiting: None,
        last_seen: Instant::now(),
    };
    websocket(session, &req, stream, MAX_FRAME_BYTES)
}

/// The largest frame a client may send: it only ever sends `ack`.
const MAX_FRAME_BYTES: usize = 1024;

/// The header of one frame (see the table above).
pub fn header(frame: &EncodedFrame, scale: Option<u8>) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let ms = frame
        .captured_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0;
    h[0..4].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    h[4..12].copy_from_slice(&ms.to_le_bytes());
    h[12..14].copy_from_slice(&(frame.width.min(u16::MAX as u32) as u16).to_le_bytes());
    h[14..16].copy_from_slice(&(frame.height.min(u16::MAX as u32) as u16).to_le_bytes());
    h[16..20].copy_from_slice(&(frame.seq as u32).to_le_bytes());
    h[20] = scale.unwrap_or(0);
    h
}

type Item = (Arc<EncodedFrame>, Option<u8>);

/// One viewer's socket.
struct FrameSocket {
    camera: String,
    /// Taken when the actor starts and turned into its stream.
    frames: Option<ViewerFrames>,
    metrics: ViewerMetrics,
    in_flight: u32,
    /// The newest frame while the client has `WINDOW` unacknowledged.
    waiting: Option<Item>,
    last_seen: Instant,
}

impl FrameSocket {
    fn send(&mut self, (frame, scale): Item, ctx: &mut ws::WebsocketContext<Self>) {
        // The WebSocket codec copies the payload into its frame anyway: one buffer for both.
        let mut message = BytesMut::with_capacity(HEADER_LEN + frame.data.len());
        message.put_slice(&header(&frame, scale));
        message.put_slice(&frame.data);
        ctx.binary(Bytes::from(message));
        self.metrics.sent(&frame);
        self.in_flight += 1;
    }
}

impl Actor for FrameSocket {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(frames) = self.frames.take() {
            ctx.add_stream(futures_util::stream::unfold(frames, |mut f| async move {
                let frame = f.next().await?;
                let scale = f.scale();
                Some(((frame, scale), f))
            }));
        }
        ctx.run_interval(PING_EVERY, |act, ctx| {
            if act.last_seen.elapsed() > SILENCE_LIMIT {
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
    }
}

impl StreamHandler<Item> for FrameSocket {
    fn handle(&mut self, item: Item, ctx: &mut Self::Context) {
        if self.in_flight < WINDOW {
            self.send(item, ctx);
        } else if self.waiting.replace(item).is_some() {
            self.metrics.dropped_behind.inc();
        }
    }

    /// The camera's stream ended: it was removed or changed.
    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::Normal,
            description: Some(format!("camera '{}' stream ended", self.camera)),
        }));
        ctx.stop();
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for FrameSocket {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) if text.trim() == "ack" => {
                self.in_flight = self.in_flight.saturating_sub(1);
                if let Some(item) = self.waiting.take() {
                    self.send(item, ctx);
                }
            }
            Ok(ws::Message::Text(text)) => ctx.text(
                serde_json::json!({
                    "type": "error",
                    "error": format!("unknown message '{text}' (send 'ack' after each frame shown)"),
                })
                .to_string(),
            ),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("WebSocket protocol error: {e}");
                ctx.stop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Codec;

    #[test]
    fn the_header_says_time_size_number_and_scale() {
        let frame = EncodedFrame {
            camera: "cam".into(),
            seq: (1 << 32) + 7,
            captured_at: std::time::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_500),
            codec: Codec::Jpeg,
            keyframe: true,
            width: 640,
            height: 360,
            data: Bytes::from_static(b"jpeg"),
            behind: 0,
        };
        let h = header(&frame, Some(2));
        assert_eq!(u32::from_le_bytes(h[0..4].try_into().unwrap()), 24);
        let ms = f64::from_le_bytes(h[4..12].try_into().unwrap());
        assert!((ms - 1_700_000_000_123.5).abs() < 1e-3, "{ms}");
        assert_eq!(u16::from_le_bytes([h[12], h[13]]), 640);
        assert_eq!(u16::from_le_bytes([h[14], h[15]]), 360);
        assert_eq!(u32::from_le_bytes(h[16..20].try_into().unwrap()), 7);
        assert_eq!(h[20], 2);
    }
}
