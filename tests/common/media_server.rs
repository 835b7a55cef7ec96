//! A media server for camgraph's `rtp_sink` to feed, and its viewers, shared by tests/janus.rs and
//! `camgraph-bench janus` (which includes this file by path): Debian's Janus started with a config
//! written to a folder of the caller's (the HTTP transport on a given port, the streaming plugin
//! with one `type = "rtp"` H.264 mountpoint, nothing else), the viewers' network (a veth pair whose
//! second end sits in a network namespace of its own: Janus's ICE gathers nothing on loopback
//! alone), and the command that starts one aiortc viewer there (tests/janus_viewer.py).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Janus's end of the veth pair.
pub const HOST_IP: &str = "10.77.0.1";
/// The viewers' end, in their namespace.
pub const VIEWER_IP: &str = "10.77.0.2";
/// The id of the one mountpoint.
pub const MOUNTPOINT: u32 = 1;

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

/// Why this environment cannot build the viewers' network, if it cannot.
pub fn cannot_build_network() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root: a veth pair and a network namespace need root".into());
    }
    if run("ip", &["-V"]).is_err() {
        return Some("no `ip` command (apt iproute2)".into());
    }
    None
}

/// A veth pair, HOST_IP here and VIEWER_IP in a network namespace of its own (the viewers');
/// both are removed when dropped, also when the caller fails.
pub struct ViewerNet {
    pub namespace: String,
    /// The end in the caller's namespace: Janus gathers ICE candidates on it only.
    pub link: String,
}

impl ViewerNet {
    pub fn create() -> Result<ViewerNet, String> {
        let id = std::process::id();
        let net = ViewerNet {
            namespace: format!("camgraph-janus-{id}"),
            link: format!("cgj{id}a"),
        };
        let peer = format!("cgj{id}b");
        let (ns, link) = (net.namespace.as_str(), net.link.as_str());
        run(
            "ip",
            &["link", "add", link, "type", "veth", "peer", "name", &peer],
        )?;
        run(
            "ip",
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", link],
        )?;
        run("ip", &["link", "set", link, "up"])?;
        run("ip", &["netns", "add", ns])?;
        run("ip", &["link", "set", &peer, "netns", ns])?;
        run(
            "ip",
            &[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{VIEWER_IP}/24"),
                "dev",
                &peer,
            ],
        )?;
        run("ip", &["-n", ns, "link", "set", &peer, "up"])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        Ok(net)
    }

    /// One aiortc viewer of the mountpoint in the viewers' namespace, receiving for `seconds`
    /// after its first frame; with `frames_dir`, it saves one decoded frame in ten there. It
    /// prints one JSON line (see tests/janus_viewer.py).
    pub fn viewer(&self, janus_url: &str, seconds: f64, frames_dir: Option<&Path>) -> Command {
        let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.namespace,
            "timeout",
            "120",
            "python3",
        ])
        .arg(tests.join("janus_viewer.py"))
        .args([
            janus_url,
            &MOUNTPOINT.to_string(),
            VIEWER_IP,
            &seconds.to_string(),
        ])
        .args(frames_dir)
        .current_dir(&tests)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        c
    }
}

impl Drop for ViewerNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the pair; the link is
        // deleted by name too in case the namespace never got it.
        let _ = run("ip", &["netns", "del", &self.namespace]);
        let _ = run("ip", &["link", "del", &self.link]);
    }
}

/// Janus, started with its config in a folder, killed when dropped.
pub struct Janus {
    child: Child,
    log: PathBuf,
    /// Its HTTP API, on HOST_IP.
    pub url: String,
}

impl Janus {
    /// Starts Janus with its config written to `dir`: the API on `http_port`, the mountpoint
    /// taking RTP on `rtp_port` (RTCP on the next), ICE on `ice_interface` only; waits for its API.
    pub fn start(
        dir: &Path,
        http_port: u16,
        rtp_port: u16,
        ice_interface: &str,
    ) -> Result<Janus, String> {
        let libs = "/usr/lib/x86_64-linux-gnu/janus";
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
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
        )?;
        write(
            "janus.transport.http.jcfg",
            format!(
                "general: {{\n  json = \"plain\"\n  base_path = \"/janus\"\n  http = true\n  \
                 port = {http_port}\n  https = false\n}}\nadmin: {{\n  admin_http = false\n}}\n"
            ),
        )?;
        // The mountpoint of the README's recipe (configs/examples/janus-rtp.yaml), on these ports.
        write(
            "janus.plugin.streaming.jcfg",
            format!(
                "general: {{\n}}\ncamgraph-front: {{\n  type = \"rtp\"\n  id = {MOUNTPOINT}\n  \
                 description = \"camgraph front\"\n  video = true\n  videoport = {rtp_port}\n  \
                 videortcpport = {rtcp}\n  videopt = 96\n  videocodec = \"h264\"\n  \
                 videofmtp = \"profile-level-id=42e01f;packetization-mode=1\"\n}}\n",
                rtcp = rtp_port + 1
            ),
        )?;
        let log = dir.join("janus.log");
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new("janus")
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .arg("-F")
            .arg(dir)
            .arg("-o")
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start janus (apt janus): {e}"))?;
        let janus = Janus {
            child,
            log,
            url: format!("http://{HOST_IP}:{http_port}/janus"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info = camgraph::client::get(&format!("{}/info", janus.url));
            if info.is_ok_and(|r| r.status == 200) {
                return Ok(janus);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "Janus's API did not answer in 20 s:\n{}",
                    janus.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP port on 127.0.0.1 that is free, with the next one free too (RTP and its RTCP), for a
/// receiver the caller starts or deliberately does not start.
pub fn free_udp_pair() -> u16 {
    loop {
        let Ok(rtp) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let port = rtp.local_addr().map_or(0, |a| a.port());
        if port > 0 && port < u16::MAX && std::net::UdpSocket::bind(("127.0.0.1", port + 1)).is_ok()
        {
            return port;
        }
    }
}

/// A free TCP port on every interface.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}
