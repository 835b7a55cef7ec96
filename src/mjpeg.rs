//! The MJPEG wire format in one place: `multipart/x-mixed-replace` parts as camgraph writes them,
//! and a reader for such streams (tests, the benchmark and pull sources use it).

use std::io::{self, BufRead, Read};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::fmt::{self, Write as _};

use bytes::{BufMut, BytesMut};

pub const BOUNDARY: &str = "frame";
pub const CONTENT_TYPE: &str = "multipart/x-mixed-replace; boundary=frame";
/// What ends every part, after the JPEG bytes.
pub const PART_END: &[u8] = b"\r\n";

/// How a stream's parts are laid out on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Each part's headers (with `Content-Length` and `X-Timestamp`) just before its JPEG: what
    /// ffmpeg, curl-based tools and `PartReader` read.
    Classic,
    /// "Advance headers": right after each JPEG come the part's end and the next part's boundary
    /// and headers, so a browser (which shows a part only once the next one has begun) shows each
    /// frame as soon as it arrives. The next part's length and capture time are not known yet, so
    /// its headers are `Content-Type` only; the capture time travels inside the JPEG, as a comment
    /// segment right after its start marker (`timestamp_segment`).
    Advance,
}

/// The advance form's part start: boundary and the headers known before the frame.
pub const ADVANCE_HEADER: &[u8] = b"--frame\r\nContent-Type: image/jpeg\r\n\r\n";
/// The advance form's part end: the part end and the next part's start.
pub const ADVANCE_END: &[u8] = b"\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\n";

/// Writes a JPEG comment segment (`FF FE`) carrying `X-Timestamp: <capture time>` to `buf`, to go
/// right after a JPEG's start marker (`FF D8`): decoders skip comments, so the picture is
/// unchanged. Writes into the caller's buffer, so a viewer's parts allocate nothing.
pub fn write_timestamp_segment(buf: &mut BytesMut, captured_at: SystemTime) {
    let start = buf.len();
    buf.put_slice(&[0xFF, 0xFE, 0, 0]);
    // A BytesMut grows as needed: writing to it cannot fail.
    let _ = write!(buf, "X-Timestamp: {}", Stamp(captured_at));
    // The length counts itself (2 bytes) and the text; a timestamp is a few dozen bytes.
    let len = (buf.len() - start - 2) as u16;
    buf[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// The capture time a JPEG carries in a `timestamp_segment` right after its start marker.
pub fn jpeg_timestamp(jpeg: &[u8]) -> Option<SystemTime> {
    let [0xFF, 0xD8, 0xFF, 0xFE, hi, lo, ..] = *jpeg else {
        return None;
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let text = std::str::from_utf8(jpeg.get(6..4 + len)?).ok()?;
    parse_timestamp(text.strip_prefix("X-Timestamp: ")?)
}

/// Unix seconds with microseconds, as in `X-Timestamp: 1700000000.123456`.
pub fn format_timestamp(t: SystemTime) -> String {
    Stamp(t).to_string()
}

/// A capture time as `X-Timestamp` writes it, for `write!` without an allocation.
struct Stamp(SystemTime);

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        write!(f, "{}.{:06}", d.as_secs(), d.subsec_micros())
    }
}

pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let (secs, micros) = s.trim().split_once('.').unwrap_or((s.trim(), "0"));
    let secs: u64 = secs.parse().ok()?;
    let micros: u32 = format!("{micros:0<6}").get(..6)?.parse().ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, micros * 1000))
}

/// Writes the headers of one part, boundary included, to `buf`.
pub fn write_part_header(buf: &mut BytesMut, len: usize, captured_at: SystemTime) {
    // A BytesMut grows as needed: writing to it cannot fail.
    let _ = write!(
        buf,
        "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\nX-Timestamp: {}\r\n\r\n",
        Stamp(captured_at)
    );
}

/// The largest part a `PartReader` accepts: several times an 8K JPEG at usual quality, so that
/// a stream announcing an absurd `Content-Length` is refused before anything is allocated.
pub const MAX_PART_BYTES: u64 = 32 << 20;

/// A part whose `Content-Length` is over `MAX_PART_BYTES`; carried inside the `io::Error`
/// (`InvalidData`) that `PartReader::next_part` returns, so that callers can tell it apart.
#[derive(Debug, thiserror::Error)]
#[error("a part of {length} bytes is larger than the limit of {} MiB", MAX_PART_BYTES >> 20)]
pub struct PartTooLarge {
    pub length: u64,
}

impl PartTooLarge {
    /// The `PartTooLarge` inside `e`, if that is what `e` is.
    pub fn find(e: &io::Error) -> Option<&PartTooLarge> {
        e.get_ref()?.downcast_ref()
    }
}

/// One part read back.
#[derive(Debug, Clone)]
pub struct Part {
    pub content_type: Option<String>,
    pub timestamp: Option<SystemTime>,
    pub data: Vec<u8>,
}

/// Reads parts from a multipart stream with the given boundary.
pub struct PartReader<R> {
    reader: R,
    delimiter: String,
    line: String,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: BufRead> PartReader<R> {
    pub fn new(reader: R, boundary: &str) -> Self {
        Self {
            reader,
            delimiter: format!("--{}", boundary.trim_start_matches("--")),
            line: String::new(),
        }
    }

    /// The stream being read.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.reader
    }

    fn read_line(&mut self) -> io::Result<Option<&str>> {
        if crate::client::read_line_limited(&mut self.reader, &mut self.line)? == 0 {
            return Ok(None);
        }
        Ok(Some(self.line.trim_end_matches(['\r', '\n'])))
    }

    /// The next part; `None` at the end of the stream.
    pub fn next_part(&mut self) -> io::Result<Option<Part>> {
        loop {
            let delimiter = self.delimiter.clone();
            match self.read_line()? {
                None => return Ok(None),
                Some(l) if l == format!("{delimiter}--") => return Ok(None),
                Some(l) if l == delimiter => break,
                Some(_) => continue, // preamble or the blank line after a part
            }
        }
        let (mut length, mut content_type, mut timestamp) = (None, None, None);
        for lines in 0.. {
            if lines == crate::client::MAX_HEADERS {
                return Err(crate::client::too_many_headers());
            }
            let Some(line) = self.read_line()? else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside part headers",
                ));
            };
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(invalid(format!("malformed part header line: {line:?}")));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    length = Some(
                        value
                            .parse::<u64>()
                            .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?,
                    )
                }
                "content-type" => content_type = Some(value.to_string()),
                "x-timestamp" => timestamp = parse_timestamp(value),
                _ => {}
            }
        }
        let length = length.ok_or_else(|| invalid("part without Content-Length".into()))?;
        if length > MAX_PART_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                PartTooLarge { length },
            ));
        }
        // Held as it arrives, never allocated from the declared length: a part that declares
        // more than it sends ends the stream with an error, not the process.
        let mut data = Vec::new();
        let got = (&mut self.reader).take(length).read_to_end(&mut data)? as u64;
        if got < length {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream ended inside a part ({got} of its {length} bytes)"),
            ));
        }
        Ok(Some(Part {
            content_type,
            timestamp,
            data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_written_are_read_back() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000);
        let mut wire = BytesMut::new();
        for body in [&b"\xff\xd8one\xff\xd9"[..], b"\xff\xd8two\xff\xd9"] {
            write_part_header(&mut wire, body.len(), t);
            wire.extend_from_slice(body);
            wire.extend_from_slice(PART_END);
        }
        let mut r = PartReader::new(&wire[..], BOUNDARY);
        let first = r.next_part().unwrap().unwrap();
        assert_eq!(first.data, b"\xff\xd8one\xff\xd9");
        assert_eq!(first.timestamp, Some(t));
        assert_eq!(first.content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(r.next_part().unwrap().unwrap().data, b"\xff\xd8two\xff\xd9");
        assert!(r.next_part().unwrap().is_none());
    }

    #[test]
    fn a_timestamp_segment_inside_a_jpeg_is_read_back() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000);
        let mut jpeg = BytesMut::from(&b"\xff\xd8"[..]);
        write_timestamp_segment(&mut jpeg, t);
        jpeg.extend_from_slice(b"\xff\xdbrest\xff\xd9");
        assert_eq!(jpeg_timestamp(&jpeg), Some(t));
        assert_eq!(jpeg_timestamp(b"\xff\xd8\xff\xdbrest\xff\xd9"), None);
        assert_eq!(jpeg_timestamp(b"\xff\xd8\xff\xfe\x00\x40short"), None);
    }

    #[test]
    fn a_part_over_the_limit_is_refused_before_it_is_allocated() {
        for length in [MAX_PART_BYTES + 1, 1_000_000_000_000, u64::MAX] {
            let wire = format!("--frame\r\nContent-Length: {length}\r\n\r\nxx");
            let err = PartReader::new(wire.as_bytes(), BOUNDARY)
                .next_part()
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert_eq!(PartTooLarge::find(&err).map(|p| p.length), Some(length));
            assert_eq!(
                err.to_string(),
                format!("a part of {length} bytes is larger than the limit of 32 MiB")
            );
        }
        let wire = b"--frame\r\nContent-Length: 99999999999999999999\r\n\r\n";
        let err = PartReader::new(&wire[..], BOUNDARY)
            .next_part()
            .unwrap_err();
        assert!(err.to_string().starts_with("bad Content-Length"), "{err}");
    }

    #[test]
    fn an_endless_line_or_header_block_is_refused_without_buffering_it() {
        use std::io::Read;
        let endless = |head: &'static str| {
            let line = io::repeat(b'a').take(64 << 20);
            io::BufReader::new(head.as_bytes().chain(line))
        };
        for head in ["", "--frame\r\n", "--frame\r\nX-Long: "] {
            let err = PartReader::new(endless(head), BOUNDARY)
                .next_part()
                .unwrap_err();
            assert_eq!(err.to_string(), "a line longer than 8 KiB", "{head:?}");
        }
        let many = format!("--frame\r\n{}", "X-Many: 1\r\n".repeat(10_000));
        let err = PartReader::new(many.as_bytes(), BOUNDARY)
            .next_part()
            .unwrap_err();
        assert_eq!(err.to_string(), "more than 100 header lines");
    }

    #[test]
    fn a_part_declaring_more_than_it_sends_is_an_error_not_an_allocation() {
        // Found by tests/fuzz.rs: the declared length was allocated before any byte arrived
        // (an abort for 10^18, a panic beyond isize::MAX).
        // (Over MAX_PART_BYTES a part is refused before it is read: the test above.)
        for declared in ["1000".to_string(), MAX_PART_BYTES.to_string()] {
            let wire = format!("--frame\r\nContent-Length: {declared}\r\n\r\nshort");
            let err = PartReader::new(wire.as_bytes(), BOUNDARY)
                .next_part()
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        }
    }

    #[test]
    fn timestamps_keep_microseconds() {
        assert_eq!(
            format_timestamp(UNIX_EPOCH + Duration::from_micros(5_000_007)),
            "5.000007"
        );
        assert_eq!(
            parse_timestamp("5.000007"),
            Some(UNIX_EPOCH + Duration::from_micros(5_000_007))
        );
        assert_eq!(parse_timestamp("x"), None);
    }
}
