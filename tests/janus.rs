//! camgraph -> Janus -> a WebRTC viewer that talks only to Janus: a test camera -> h264_encoder ->
//! rtp_sink sends RTP to Janus's streaming plugin (Debian's `janus`, started here with a config
//! written to a temporary folder: the HTTP transport on a free port, the streaming plugin with one
//! `type = "rtp"` mountpoint, nothing else); aiortc (tests/janus_viewer.py) watches the mountpoint
//! through Janus's HTTP API and decodes pictures whose painted frame numbers advance, read with
//! camgraph's own reader. camgraph's own WebRTC sink has no peer meanwhile.
//!
//! Janus's ICE (libnice) gathers no candidate on loopback alone, so the viewer sits in a network
//! namespace of its own joined by a veth pair (10.77.0.1 here, 10.77.0.2 there; Janus gathers on
//! the first end only). camgraph and Janus talk over 127.0.0.1. That needs root (CI runs the
//! tests as root, in a loopback-only namespace): without it the test says why and skips. Needs
//! `janus` (apt) and aiortc (pip); a missing one fails the test.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use camgraph::client;
use camgraph::plugins::sources::testsrc::read_marks;
use common::{free_udp_pair, wait_for, Server};

const HOST_IP: &str = "10.77.0.1";
const VIEWER_IP: &str = "10.77.0.2";
const MOUNTPOINT: u32 = 1;

/// Runs a command; its error output if it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A veth pair whose second end is in a network namespace of its own (the viewer's); both are
/// removed when dropped, also when the test fails.
struct ViewerNet {
    namespace: String,
    link: String,
}

impl ViewerNet {
    fn create() -> Result<ViewerNet, String> {
        let id = std::process::id();
        let net = ViewerNet {
            namespace: format!("camgraph-janus-{id}"),
            link: format!("cgj{id}a"),
        };
        let peer = format!("cgj{id}b");
        let host_cidr = format!("{HOST_IP}/24");
        let viewer_cidr = format!("{VIEWER_IP}/24");
        let ns = net.namespace.as_str();
        let link = net.link.as_str();
        run(
            "ip",
            &["link", "add", link, "type", "veth", "peer", "name", &peer],
        )?;
        run("ip", &["addr", "add", &host_cidr, "dev", link])?;
        run("ip", &["link", "set", link, "up"])?;
        run("ip", &["netns", "add", ns])?;
        run("ip", &["link", "set", &peer, "netns", ns])?;
        run("ip", &["-n", ns, "addr", "add", &viewer_cidr, "dev", &peer])?;
        run("ip", &["-n", ns, "link", "set", &peer, "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        Ok(net)
    }
}

impl Drop for ViewerNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the pair; the link
        // is deleted by name too in case the namespace never got it.
        let _ = run("ip", &["netns", "del", &self.namespace]);
        let _ = run("ip", &["link", "del", &self.link]);
    }
}

/// Why this environment cannot build the viewer's network, if it cannot.
fn cannot_build_network() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root: creating a veth pair and a network namespace needs root".into());
    }
    if run("ip", &["-V"]).is_err() {
        return Some("no `ip` command (apt iproute2)".into());
    }
    None
}

/// Janus, started with its config in `dir`, killed when dropped.
struct Janus {
    child: Child,
    log: std::path::PathBuf,
}

impl Janus {
    fn start(dir: &Path, http_port: u16, rtp_port: u16, ice_interface: &str) -> Janus {
        let libs = "/usr/lib/x86_64-linux-gnu/janus";
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        // Only the streaming plugin and the HTTP transport.
        write(
            "janus.jcfg",
            format!(
                "general: {{\n  configs_folder = \"{conf}\"\n  plugins_folder = \"{libs}/plugins\"\n  \
                 transports_folder = \"{libs}/transports\"\n  events_folder = \"{libs}/events\"\n  \
                 loggers_folder = \"{libs}/loggers\"\n  debug_level = 4\n}}\n\
                 nat: {{\n  ice_enforce_list = \"{ice_interface}\"\n}}\n\
                 plugins: {{\n  disable = \"libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,\
                 libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_textroom.so,\
                 libjanus_videocall.so,libjanus_videoroom.so,libjanus_voicemail.so\"\n}}\n\
                 transports: {{\n  disable = \"libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,\
                 libjanus_rabbitmq.so,libjanus_websockets.so\"\n}}\n\
                 loggers: {{\n  disable = \"libjanus_jsonlog.so\"\n}}\n\
                 events: {{\n  broadcast = false\n}}\n",
                conf = dir.display()
            ),
        );
        write(
            "janus.transport.http.jcfg",
            format!(
                "general: {{\n  json = \"plain\"\n  base_path = \"/janus\"\n  http = true\n  \
                 port = {http_port}\n  https = false\n}}\nadmin: {{\n  admin_http = false\n}}\n"
            ),
        );
        // The mountpoint of the README's recipe (configs/examples/janus-rtp.yaml), on test ports.
        write(
            "janus.plugin.streaming.jcfg",
            format!(
                "general: {{\n}}\ncamgraph-front: {{\n  type = \"rtp\"\n  id = {MOUNTPOINT}\n  \
                 description = \"camgraph front\"\n  video = true\n  videoport = {rtp_port}\n  \
                 videortcpport = {rtcp}\n  videopt = 96\n  videocodec = \"h264\"\n  \
                 videofmtp = \"profile-level-id=42e01f;packetization-mode=1\"\n}}\n",
                rtcp = rtp_port + 1
            ),
        );
        let log = dir.join("janus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("janus")
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .arg("-F")
            .arg(dir)
            .arg("-o")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("janus is installed (apt janus)");
        Janus { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_viewer_of_janus_decodes_the_camera_that_rtp_sink_sends() {
    if let Some(why) = cannot_build_network() {
        println!("SKIPPED: {why}");
        return;
    }
    let net = ViewerNet::create().unwrap_or_else(|e| panic!("the viewer's network: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let (http_port, rtp_port) = (free_tcp_port(), free_udp_pair());
    let janus = Janus::start(dir.path(), http_port, rtp_port, &net.link);
    let janus_url = format!("http://{HOST_IP}:{http_port}/janus");
    wait_for("Janus's HTTP API", Duration::from_secs(20), || {
        let info = client::get(&format!("{janus_url}/info")).ok()?;
        (info.status == 200).then_some(())
    });

    // camgraph offers WebRTC of its own too, so that its peers count is there to stay at 0.
    let server = Server::start(&format!(
        "nodes:\n  \
         front: {{ type: camera, source: test, width: 640, height: 360, fps: 30 }}\n  \
         front_h264: {{ type: h264_encoder, inputs: [front] }}\n  \
         front_rtc: {{ type: webrtc_sink, inputs: [front_h264] }}\n  \
         front_rtp: {{ type: rtp_sink, inputs: [front_h264], target: '127.0.0.1:{rtp_port}' }}\n"
    ));

    let frames_dir = tempfile::tempdir().unwrap();
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let viewer = Command::new("ip")
        .args(["netns", "exec", &net.namespace, "timeout", "60", "python3"])
        .arg(tests.join("janus_viewer.py"))
        .args([&janus_url, &MOUNTPOINT.to_string(), VIEWER_IP, "4"])
        .arg(frames_dir.path())
        .current_dir(&tests)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    // While the viewer watches through Janus, camgraph has no WebRTC peer of its own.
    let webrtc_viewers =
        "camgraph_viewers{camera=\"front\",node=\"front_rtc\",protocol=\"webrtc\"";
    let mut viewer = viewer;
    let mut checks = 0;
    while viewer.try_wait().unwrap().is_none() {
        assert_eq!(
            server.metric(webrtc_viewers),
            Some(0.0),
            "a WebRTC peer of camgraph"
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = viewer.wait_with_output().unwrap();
    assert!(
        checks > 10,
        "checked {checks} times while the viewer watched"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the viewer failed: {}\n{stdout}\n--- janus\n{}\n--- camgraph\n{}",
        String::from_utf8_lossy(&out.stderr),
        janus.log(),
        server.log()
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    println!("viewer through Janus: {summary}");
    assert_eq!(
        (summary["width"].as_u64(), summary["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert!(summary["fps"].as_f64().unwrap() >= 15.0, "{summary}");

    // The pictures it decoded carry the camera's frame numbers, advancing.
    let numbers: Vec<u32> = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let rgb = std::fs::read(f.as_str().unwrap()).unwrap();
            read_marks(&rgb, 640, 360)
                .unwrap_or_else(|| panic!("no frame number in {f}"))
                .seq
        })
        .collect();
    assert!(numbers.len() >= 5, "{numbers:?}");
    assert!(numbers.windows(2).all(|w| w[1] > w[0]), "{numbers:?}");
    assert!(
        numbers[numbers.len() - 1] - numbers[0] >= 60,
        "over 3 s: {numbers:?}"
    );

    assert_eq!(server.metric(webrtc_viewers), Some(0.0));
    let (_, rtc) = server.get_json("/api/graph");
    let rtc_node = rtc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "front_rtc")
        .unwrap()
        .clone();
    assert_eq!(rtc_node["stats"]["closed"], 0, "no peer ever: {rtc_node}");
    assert!(server.metric("camgraph_rtp_sent_packets_total{").unwrap() > 0.0);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
