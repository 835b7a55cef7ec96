//! The MJPEG wire format in one place: `multipart/x-mixed-replace` parts as camgraph writes them,
//! and a reader for such streams (tests, the benchmark and pull sources use it).

use std::io::{self, BufRead, Read};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

pub const BOUNDARY: &str = "frame";
pub const CONTENT_TYPE: &str = "multipart/x-mixed-replace; boundary=frame";
/// What ends every part, after the JPEG bytes.
pub const PART_END: &[u8] = b"\r\n";

/// Unix seconds with microseconds, as in `X-Timestamp: 1700000000.123456`.
pub fn format_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let (secs, micros) = s.trim().split_once('.').unwrap_or((s.trim(), "0"));
    let secs: u64 = secs.parse().ok()?;
    let micros: u32 = format!("{micros:0<6}").get(..6)?.parse().ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, micros * 1000))
}

/// The headers of one part, boundary included.
pub fn part_header(len: usize, captured_at: SystemTime) -> Bytes {
    Bytes::from(format!(
        "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\nX-Timestamp: {}\r\n\r\n",
        format_timestamp(captured_at)
    ))
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

    fn read_line(&mut self) -> io::Result<Option<&str>> {
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
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
        loop {
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
                            .parse::<usize>()
                            .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?,
                    )
                }
                "content-type" => content_type = Some(value.to_string()),
                "x-timestamp" => timestamp = parse_timestamp(value),
                _ => {}
            }
        }
        let length = length.ok_or_else(|| invalid("part without Content-Length".into()))?;
        // Held as it arrives, never allocated from the declared length: a part that declares
        // more than it sends ends the stream with an error, not the process.
        let mut data = Vec::new();
        let got = (&mut self.reader)
            .take(length as u64)
            .read_to_end(&mut data)?;
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
        let mut wire = Vec::new();
        for body in [&b"\xff\xd8one\xff\xd9"[..], b"\xff\xd8two\xff\xd9"] {
            wire.extend_from_slice(&part_header(body.len(), t));
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
    fn a_part_declaring_more_than_it_sends_is_an_error_not_an_allocation() {
        // Found by tests/fuzz.rs: the declared length was allocated before any byte arrived
        // (an abort for 10^18, a panic beyond isize::MAX).
        for declared in ["1000000000000000000", &usize::MAX.to_string()] {
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
