//! The fuzz harness (issue 12, "nothing panics on input"): random and mutated input to everything
//! a client, a file or a camera feeds camgraph's parsers, on stable Rust with proptest. Each target
//! asserts more than "no panic": the YAML loader gives a spec or errors placed at line:column,
//! query parameters come back in range or as a refusal that names them, SDP offers are accepted
//! or refused with a reason, the WebSocket signalling session answers every message and stays
//! open (and survives garbage frames), and the MJPEG part reader gives parts or an error and ends.
//!
//! CI runs thousands of cases per target (the whole file in a few seconds in the debug build).
//! Run it longer by hand with `CAMGRAPH_FUZZ_SCALE=N` (every target runs N times its CI count),
//! e.g. `CAMGRAPH_FUZZ_SCALE=200 cargo test --offline --test fuzz -- --nocapture`; each target
//! prints how many cases it ran (RELIABILITY.md has the figures of such a run). A failure prints
//! the shrunk input.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use camgraph::client::{self, opcode, WebSocket};
use camgraph::mjpeg::PartReader;
use camgraph::plugins::sinks::webrtc::check_offer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use common::{Server, CHROMIUM_OFFER};

/// `ci` cases, times `CAMGRAPH_FUZZ_SCALE` when set (a long run by hand).
fn config(ci: u32) -> Config {
    let scale: u32 = std::env::var("CAMGRAPH_FUZZ_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    Config {
        cases: ci.saturating_mul(scale),
        // Failures are shrunk and printed; no regression files are written into the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs `test` on `cases` inputs of `strategy`, failing with the shrunk input; prints how many ran
/// (the long run's figures come from these lines).
fn fuzz<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let config = config(cases);
    let wanted = config.cases;
    let ran = std::cell::Cell::new(0u64);
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |value| {
        ran.set(ran.get() + 1);
        test(value)
    });
    if let Err(e) = result {
        panic!("{name}: {e} (after {} executions)", ran.get());
    }
    // Executions count every input tried; proptest ran `wanted` of them as cases.
    assert!(
        ran.get() >= u64::from(wanted),
        "{name}: {} executions",
        ran.get()
    );
    eprintln!(
        "fuzz {name}: {} executions in {:.2} s",
        ran.get(),
        started.elapsed().as_secs_f64()
    );
}

/// Applies `edits` to `text`: each deletes, duplicates or replaces a span, or inserts a token.
fn mutate(text: &str, edits: &[(u8, usize, usize, String)]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for (kind, at, len, token) in edits {
        let at = at % (bytes.len() + 1);
        let end = (at + len % 40).min(bytes.len());
        match kind % 4 {
            0 => {
                bytes.drain(at..end);
            }
            1 => {
                let span = bytes[at..end].to_vec();
                bytes.splice(at..at, span);
            }
            2 => {
                bytes.splice(at..end, token.bytes());
            }
            _ => {
                bytes.splice(at..at, token.bytes());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn edits(token: BoxedStrategy<String>) -> impl Strategy<Value = Vec<(u8, usize, usize, String)>> {
    prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>(), token), 1..6)
}

/// Pieces of YAML and of camgraph's vocabulary, so random text gets past the tokenizer.
fn yaml_token() -> BoxedStrategy<String> {
    prop_oneof![
        Just(":".to_string()),
        Just(": ".to_string()),
        Just("\n".to_string()),
        Just("\n  ".to_string()),
        Just("- ".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(", ".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("<<: *a".to_string()),
        Just("!!binary ".to_string()),
        Just("? ".to_string()),
        Just("|\n".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("#".to_string()),
        Just("~".to_string()),
        Just("nodes".to_string()),
        Just("cameras".to_string()),
        Just("server".to_string()),
        Just("type".to_string()),
        Just("inputs".to_string()),
        Just("camera".to_string()),
        Just("jpeg_encoder".to_string()),
        Just("mjpeg_sink".to_string()),
        Just("h264_encoder".to_string()),
        Just("webrtc_sink".to_string()),
        Just("adaptive".to_string()),
        Just("snapshot_sink".to_string()),
        Just("frame_dropper".to_string()),
        Just("source".to_string()),
        Just("test".to_string()),
        Just("listen".to_string()),
        Just("auth".to_string()),
        Just("tokens".to_string()),
        Just("width".to_string()),
        Just("fps".to_string()),
        Just("quality".to_string()),
        Just("-1".to_string()),
        Just("1e99".to_string()),
        Just(".nan".to_string()),
        Just("18446744073709551616".to_string()),
        "[a-z_]{1,8}",
        "[0-9]{1,6}",
        "\\PC{0,6}",
    ]
    .boxed()
}

/// Every YAML file under configs/ (valid and invalid ones), the seeds of the mutations.
fn real_configs() -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs"
    ))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(std::fs::read_to_string(path).unwrap());
            }
        }
    }
    out.sort();
    out
}

/// The loader's promise: a spec, or at least one error, each at a line:column of the text.
fn check_parse(text: &str) -> Result<(), TestCaseError> {
    let registry = camgraph::plugins::registry();
    match camgraph::config::parse("fuzz.yaml", text, &registry) {
        Ok(spec) => prop_assert!(!spec.nodes.is_empty(), "a spec without nodes"),
        Err(errors) => {
            prop_assert!(!errors.0.is_empty(), "Err with no error");
            // Lines as YAML 1.1 counts them (a lone CR, NEL, U+2028 and U+2029 break a line too),
            // plus the end-of-stream mark that a syntax error at the very end is placed on.
            let lines = text
                .replace("\r\n", "\n")
                .split(['\r', '\n', '\u{85}', '\u{2028}', '\u{2029}'])
                .count()
                + 1;
            for e in &errors.0 {
                prop_assert_eq!(&e.file, "fuzz.yaml");
                prop_assert!(
                    e.line >= 1 && e.column >= 1 && e.line <= lines,
                    "error outside the text ({} lines): {}",
                    lines,
                    e
                );
                prop_assert!(!e.message.trim().is_empty(), "empty message at {}", e);
            }
        }
    }
    Ok(())
}

#[test]
fn yaml_loader_never_panics_and_places_every_error() {
    let seeds = real_configs();
    assert!(
        seeds.len() >= 10,
        "configs/ holds {} YAML files",
        seeds.len()
    );
    // Found by long runs: libyaml counts a lone CR and U+2028 as line breaks (errors on line 3).
    check_parse("-:\r.").unwrap();
    check_parse("\u{2028}\u{10f30}: {#").unwrap();
    fuzz(
        "yaml random bytes",
        3000,
        prop::collection::vec(any::<u8>(), 0..400),
        |bytes| check_parse(&String::from_utf8_lossy(&bytes)),
    );
    fuzz(
        "yaml-ish text",
        5000,
        prop::collection::vec(yaml_token(), 0..80),
        |tokens| check_parse(&tokens.concat()),
    );
    fuzz(
        "mutated configs",
        10000,
        (0..seeds.len(), edits(yaml_token())),
        |(seed, edits)| check_parse(&mutate(&seeds[seed], &edits)),
    );
}

/// Query values as clients send them: numbers of every shape, words, nothing, garbage.
fn query_value() -> BoxedStrategy<String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| v.to_string()),
        (0u32..10_000).prop_map(|v| v.to_string()),
        Just("NaN".to_string()),
        Just("inf".to_string()),
        Just("-0".to_string()),
        Just("1e99".to_string()),
        Just("".to_string()),
        Just("true".to_string()),
        Just("test".to_string()),
        Just("/dev/video0".to_string()),
        Just("http://127.0.0.1:1/x".to_string()),
        "\\PC{0,12}",
    ]
    .boxed()
}

fn query(keys: &'static [&'static str]) -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(
        prop_oneof![
            prop::sample::select(keys).prop_map(str::to_string),
            "[a-z]{1,6}"
        ],
        query_value(),
        0..8,
    )
}

#[test]
fn query_parameters_come_back_in_range_or_refused_by_name() {
    const KEYS: &[&str] = &["width", "height", "fps", "quality", "bitrate", "scale"];
    fuzz("param", 20000, query(KEYS), |q| {
        for name in KEYS {
            match camgraph::http::face::param::<u32>(&q, name, 16..=7680) {
                Ok(Some(v)) => prop_assert!((16..=7680).contains(&v)),
                Ok(None) => prop_assert!(!q.contains_key(*name)),
                Err(e) => prop_assert!(e.to_string().contains(name), "{}", e),
            }
            match camgraph::http::face::param::<f64>(&q, name, 0.5..=2.0) {
                Ok(Some(v)) => prop_assert!((0.5..=2.0).contains(&v)),
                Ok(None) => prop_assert!(!q.contains_key(*name)),
                Err(e) => prop_assert!(e.to_string().contains(name), "{}", e),
            }
        }
        Ok(())
    });
}

#[test]
fn camera_queries_give_an_entry_the_loader_judges_or_a_refusal() {
    const KEYS: &[&str] = &["source", "width", "height", "fps", "quality", "webrtc"];
    let registry = camgraph::plugins::registry();
    let short_form = registry
        .short_form()
        .expect("the plugins define a short form");
    fuzz("entry_from_query", 10000, query(KEYS), |q| {
        match short_form.entry_from_query(&q) {
            // The entry goes through the file's path, as the API's add does.
            Ok(entry) => {
                let mut cameras = serde_yaml::Mapping::new();
                cameras.insert("fuzzed".into(), entry);
                let mut file = serde_yaml::Mapping::new();
                file.insert("cameras".into(), serde_yaml::Value::Mapping(cameras));
                check_parse(&serde_yaml::to_string(&file).unwrap())?;
            }
            Err(message) => prop_assert!(!message.trim().is_empty()),
        }
        Ok(())
    });
}

/// SDP lines, real and broken, to build offers from.
fn sdp_line() -> BoxedStrategy<String> {
    prop_oneof![
        Just("v=0".to_string()),
        Just("o=- 1 2 IN IP4 127.0.0.1".to_string()),
        Just("s=-".to_string()),
        Just("t=0 0".to_string()),
        Just("m=video 9 UDP/TLS/RTP/SAVPF 102".to_string()),
        Just("m=audio 9 UDP/TLS/RTP/SAVPF 111".to_string()),
        Just("m=video".to_string()),
        Just("m=".to_string()),
        Just("c=IN IP4 0.0.0.0".to_string()),
        Just("c=IN IP6".to_string()),
        Just("a=rtpmap:102 H264/90000".to_string()),
        Just("a=rtpmap:".to_string()),
        Just("a=fmtp:102 profile-level-id=42e01f".to_string()),
        Just("a=ice-ufrag:abcd".to_string()),
        Just("a=setup:actpass".to_string()),
        Just("a=mid:0".to_string()),
        Just("a=candidate:1 1 UDP 1 127.0.0.1 9 typ host".to_string()),
        Just("b=AS:99999999999999999999".to_string()),
        Just("r=7d 1h 0 25h".to_string()),
        Just("z=2882844526 -1h".to_string()),
        Just("k=clear:x".to_string()),
        "[a-z]=\\PC{0,20}",
        "\\PC{0,20}",
    ]
    .boxed()
}

fn sdp() -> BoxedStrategy<String> {
    let offer = CHROMIUM_OFFER.to_string();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        (
            prop::collection::vec(sdp_line(), 0..20),
            prop::sample::select(vec!["\r\n", "\n", "\r", ""])
        )
            .prop_map(|(lines, end)| lines.join(end)),
        edits(sdp_line()).prop_map(move |e| mutate(&offer, &e)),
        // Truncated at every length.
        (0..CHROMIUM_OFFER.len()).prop_map(|n| CHROMIUM_OFFER[..n].to_string()),
    ]
    .boxed()
}

#[test]
fn sdp_offers_are_accepted_or_refused_with_a_reason() {
    assert!(check_offer(CHROMIUM_OFFER).is_ok());
    fuzz("sdp", 20000, sdp(), |offer| {
        if let Err(e) = check_offer(&offer) {
            prop_assert!(e.to_string().contains("SDP offer"), "{}", e);
        }
        Ok(())
    });
}

/// Random bytes, and streams of parts whose header lines and lengths are random.
fn multipart() -> BoxedStrategy<Vec<u8>> {
    let header = prop_oneof![
        Just("Content-Type: image/jpeg".to_string()),
        (0u64..64).prop_map(|n| format!("Content-Length: {n}")),
        any::<u64>().prop_map(|n| format!("Content-Length: {n}")),
        Just("Content-Length: 18446744073709551616".to_string()),
        Just("Content-Length: -1".to_string()),
        Just("content-length:".to_string()),
        Just("X-Timestamp: 1700000000.123456".to_string()),
        Just("X-Timestamp: 1e308".to_string()),
        Just("X-Timestamp: -5.5".to_string()),
        Just("X-Timestamp: 18446744073709551616.9".to_string()),
        Just("no colon".to_string()),
        "\\PC{0,20}",
    ];
    let part = (
        prop_oneof![
            Just("--frame"),
            Just("--frame--"),
            Just("--other"),
            Just("")
        ],
        prop::collection::vec(header, 0..5),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(delimiter, headers, body)| {
            let mut out = format!("{delimiter}\r\n{}\r\n\r\n", headers.join("\r\n")).into_bytes();
            out.extend(body);
            out.extend_from_slice(b"\r\n");
            out
        });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        prop::collection::vec(part, 0..6).prop_map(|parts| parts.concat()),
    ]
    .boxed()
}

#[test]
fn the_mjpeg_part_reader_gives_parts_or_an_error_and_ends() {
    fuzz("mjpeg parts", 20000, multipart(), |wire| {
        let mut reader = PartReader::new(&wire[..], "frame");
        // Every part takes at least a delimiter line, so a reader that loops is a bug.
        for _ in 0..=wire.len() {
            match reader.next_part() {
                Ok(Some(part)) => prop_assert!(part.data.len() <= wire.len()),
                Ok(None) | Err(_) => return Ok(()),
            }
        }
        Err(TestCaseError::fail("the reader did not end"))
    });
}

/// WebSocket signalling messages: JSON of every shape, with the guide's types and broken ones.
fn ws_message() -> BoxedStrategy<String> {
    let json_value = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        "\\PC{0,16}".prop_map(serde_json::Value::from),
        Just(
            serde_json::json!({"candidate": "candidate:1 1 UDP 1 127.0.0.1 9 typ host", "sdpMid": "0"})
        ),
        Just(serde_json::json!({"candidate": 5, "sdpMLineIndex": -1})),
        Just(serde_json::json!([1, [2, [3]]])),
    ];
    prop_oneof![
        (
            prop::sample::select(vec!["offer", "ice-candidate", "answer", "", "OFFER"]),
            prop::option::of(sdp()),
            prop::option::of(json_value),
        )
            .prop_map(|(kind, sdp, candidate)| {
                let mut m = serde_json::Map::new();
                m.insert("type".into(), kind.into());
                if let Some(sdp) = sdp {
                    m.insert("sdp".into(), sdp.into());
                }
                if let Some(c) = candidate {
                    m.insert("candidate".into(), c);
                }
                serde_json::Value::Object(m).to_string()
            }),
        "\\PC{0,64}",
        Just("{\"type\": \"offer\"".to_string()),
        Just("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]".to_string()),
    ]
    .boxed()
}

fn signalling_server() -> Server {
    Server::start(&format!(
        "nodes:\n{}  front_h264: {{ type: h264_encoder, inputs: [front] }}\n  \
         front_rtc: {{ type: webrtc_sink, inputs: [front_h264] }}\n",
        common::test_camera_yaml("front", 320, 240, 10)
    ))
}

/// Sends `payload` (text) and reads until the pong of a ping sent after it: every reply before
/// it must be the guide's JSON, and the session must still be open.
fn exchange(ws: &mut WebSocket, payload: &str, n: u64) -> Result<(), TestCaseError> {
    let io = |e: std::io::Error| TestCaseError::fail(format!("socket: {e}"));
    ws.send(opcode::TEXT, payload.as_bytes()).map_err(io)?;
    let token = n.to_be_bytes();
    ws.send(opcode::PING, &token).map_err(io)?;
    loop {
        let (_, op, body) = ws.read_frame().map_err(io)?;
        match op {
            opcode::PONG if body == token => return Ok(()),
            opcode::TEXT => {
                let reply: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| TestCaseError::fail(format!("reply not JSON: {e}")))?;
                let kind = reply["type"].as_str().unwrap_or("");
                prop_assert!(
                    ["answer", "error", "ice-candidate", "closed"].contains(&kind),
                    "unexpected reply {}",
                    reply
                );
            }
            opcode::CLOSE => return Err(TestCaseError::fail("the server closed the session")),
            _ => {}
        }
    }
}

#[test]
fn signalling_sessions_answer_every_message_and_survive_garbage_frames() {
    let server = signalling_server();
    let url = server.url("/api/webrtc/ws?camera=front");
    let ws = WebSocket::connect(&url, &[]).expect("open the signalling socket");
    let ws = std::cell::RefCell::new(ws);
    let counter = std::sync::atomic::AtomicU64::new(0);
    fuzz("ws messages", 2000, ws_message(), |message| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        exchange(&mut ws.borrow_mut(), &message, n)
    });

    // Frames that break the protocol: the server closes that socket, nothing else.
    fuzz(
        "ws frames",
        300,
        (
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..200),
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        |(first, payload, raw)| {
            let mut ws = WebSocket::connect(&url, &[])
                .map_err(|e| TestCaseError::fail(format!("connect: {e}")))?;
            let frame = ws.encode(first, &payload);
            let _ = ws.send_raw(&frame);
            let _ = ws.send_raw(&raw);
            // Our end is done: the server sees the end of the stream and closes. Whatever it
            // answers meanwhile is read; the timeout only guards the test.
            let _ = ws.socket().shutdown(std::net::Shutdown::Write);
            ws.socket()
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            while ws.read_frame().is_ok() {}
            Ok(())
        },
    );
    // The server is still up and still signalling.
    let health = client::get(&server.url("/healthz")).expect("/healthz after the fuzzing");
    assert_eq!(health.status, 200);
    let mut ws = WebSocket::connect(&url, &[]).expect("a new session after the fuzzing");
    exchange(&mut ws, "{\"type\":\"ice-candidate\"}", u64::MAX).expect("still answering");
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}
