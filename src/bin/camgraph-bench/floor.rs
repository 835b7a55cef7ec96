//! `fanout --floor`: what serving MJPEG costs this machine's kernel alone, to read camgraph's
//! figures against. A bare server (this binary, `floor-server`) sends the same JPEG folder at 30
//! fps with the same bytes camgraph sends (chunked multipart, `Content-Length` and `X-Timestamp`),
//! from one thread, with one blocking `sendmsg` per viewer per frame, every JPEG held in memory:
//! no camera, no runtime, no HTTP framework. On loopback the sender also pays the receiving half
//! of TCP (the copy into the reader's queue and waking it), which is most of the cost; the
//! difference between the two servers is what camgraph itself costs.
//!
//! It answers only what the fan-out bench asks: the stream path and `/metrics` with the three
//! counters the bench reads (frames captured, frames sent, JPEG bytes sent).

use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use bytes::BytesMut;

use camgraph::mjpeg;

/// The longest request head read, and how long a client may take to send it.
const MAX_REQUEST: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A viewer that takes nothing for this long is dropped (camgraph's default write timeout).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counters {
    captured: AtomicU64,
    sent: AtomicU64,
    bytes: AtomicU64,
}

/// Serves `source` (a folder of JPEGs) at 30 fps on 127.0.0.1 until killed; prints
/// `floor server listening on http://ADDR` once it accepts connections.
pub(crate) fn floor_server(source: &Path, stream_path: &str) -> anyhow::Result<()> {
    let jpegs = read_jpegs(source)?;
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on 127.0.0.1")?;
    let viewers: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let counters: Arc<Counters> = Arc::default();
    {
        let (viewers, counters) = (viewers.clone(), counters.clone());
        thread::Builder::new()
            .name("floor-sender".into())
            .spawn(move || send_frames(&jpegs, &viewers, &counters))?;
    }
    println!(
        "floor server listening on http://{}",
        listener.local_addr()?
    );
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let (viewers, counters) = (viewers.clone(), counters.clone());
        let path = stream_path.to_string();
        // A client that sends its request slowly holds only its own thread.
        thread::spawn(move || {
            if let Err(e) = answer(conn, &path, &viewers, &counters) {
                eprintln!("floor server: a request failed: {e}");
            }
        });
    }
    Ok(())
}

/// Every `.jpg`/`.jpeg` of `dir`, by name.
fn read_jpegs(dir: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    if !dir.is_dir() {
        bail!(
            "--floor needs --source to be a folder of JPEGs; {} is not a folder",
            dir.display()
        );
    }
    let mut paths: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("{}: no .jpg or .jpeg file", dir.display());
    }
    paths
        .iter()
        .map(|p| fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .collect()
}

/// Reads the request head and either hands the connection to the sender (the stream) or answers
/// it (`/metrics`, 404).
fn answer(
    mut conn: TcpStream,
    stream_path: &str,
    viewers: &Mutex<Vec<TcpStream>>,
    counters: &Counters,
) -> io::Result<()> {
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    if path == stream_path {
        conn.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nCache-Control: no-cache\r\n\
                 Transfer-Encoding: chunked\r\n\r\n",
                mjpeg::CONTENT_TYPE
            )
            .as_bytes(),
        )?;
        conn.set_write_timeout(Some(WRITE_TIMEOUT))?;
        conn.set_nodelay(true)?;
        lock(viewers).push(conn);
        return Ok(());
    }
    let (status, body) = match path {
        "/metrics" => (
            "200 OK",
            format!(
                "camgraph_frames_captured_total {}\ncamgraph_frames_sent_total {}\n\
                 camgraph_bytes_sent_total {}\n",
                counters.captured.load(Ordering::Relaxed),
                counters.sent.load(Ordering::Relaxed),
                counters.bytes.load(Ordering::Relaxed)
            ),
        ),
        _ => ("404 Not Found", String::new()),
    };
    conn.write_all(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

/// Every 1/30 s the next JPEG, as one chunk to every viewer: one `sendmsg` each.
fn send_frames(jpegs: &[Vec<u8>], viewers: &Mutex<Vec<TcpStream>>, counters: &Counters) {
    let interval = Duration::from_secs_f64(1.0 / 30.0);
    let start = Instant::now();
    let mut head = BytesMut::with_capacity(256);
    for n in 0u32.. {
        let jpeg = &jpegs[n as usize % jpegs.len()];
        head.clear();
        mjpeg::write_part_header(&mut head, jpeg.len(), SystemTime::now());
        let size_line = format!("{:x}\r\n", head.len() + jpeg.len() + mjpeg::PART_END.len());
        let chunk = [
            size_line.as_bytes(),
            &head[..],
            jpeg,
            mjpeg::PART_END,
            b"\r\n",
        ];
        counters.captured.fetch_add(1, Ordering::Relaxed);
        let mut viewers = lock(viewers);
        viewers.retain_mut(|v| {
            let ok = send_all(v, &chunk).is_ok();
            if ok {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes
                    .fetch_add(jpeg.len() as u64, Ordering::Relaxed);
            }
            ok
        });
        drop(viewers);
        if let Some(wait) = (start + interval * (n + 1)).checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
}

/// Writes every byte of `pieces`: one vectored write, more only when the socket takes part.
fn send_all(conn: &mut TcpStream, pieces: &[&[u8]; 5]) -> io::Result<()> {
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let mut written = 0;
    while written < total {
        let (mut skip, mut slices, mut n) = (written, [IoSlice::new(&[]); 5], 0);
        for piece in pieces {
            if skip >= piece.len() {
                skip -= piece.len();
            } else {
                slices[n] = IoSlice::new(&piece[skip..]);
                (skip, n) = (0, n + 1);
            }
        }
        match conn.write_vectored(&slices[..n])? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => written += n,
        }
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
