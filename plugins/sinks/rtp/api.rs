//! The rtp_sink's HTTP face: `GET /api/camera/sdp[/{name}]` answers the SDP that describes the
//! stream the sink sends (what a receiver such as ffplay, VLC or GStreamer opens to play it), the
//! capability by which the route finds it, and the SDP itself (also written to `sdp_file`).

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use actix_web::{web, HttpResponse};

use super::{RtpSinkConfig, Target};
use crate::http::face::{no_cache, ApiError, Live};
use crate::node::Capability;
use crate::plugins::sinks::h264_rtp::H264_CLOCK_RATE;

/// The SDP of an rtp_sink's stream.
#[derive(Clone)]
pub struct RtpSdp(pub Arc<str>);

impl Capability for RtpSdp {
    const NAME: &'static str = "rtp";
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/camera/sdp", web::get().to(sdp_default))
        .route("/api/camera/sdp/{name}", web::get().to(sdp_named));
}

async fn answer(live: Live, name: Option<&str>) -> Result<HttpResponse, ApiError> {
    let (_, RtpSdp(sdp)) = live.find(name, |c| format!("camera '{c}' has no rtp_sink"))?;
    let mut response = HttpResponse::Ok();
    no_cache(&mut response);
    Ok(response
        .content_type("application/sdp")
        .body(sdp.as_bytes().to_vec()))
}

async fn sdp_default(live: Live) -> Result<HttpResponse, ApiError> {
    answer(live, None).await
}

async fn sdp_named(live: Live, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    answer(live, Some(&path)).await
}

/// The SDP (RFC 8866) of the stream an rtp_sink of `camera` sends: one H.264 video section at the
/// target (a multicast group with its TTL), the RTCP port when it is not the next one.
pub fn sdp(camera: &str, target: &Target, rtcp_port: u16, config: &RtpSinkConfig) -> String {
    let ip = target.ip();
    let family = if ip.is_some_and(|ip| ip.is_ipv6()) {
        "IP6"
    } else {
        "IP4"
    };
    // RFC 8866 5.7: an IPv4 multicast address carries its TTL; IPv6 has none there.
    let connection = match ip {
        Some(IpAddr::V4(v4)) if v4.is_multicast() => format!("{v4}/{}", config.ttl),
        _ => target.host.clone(),
    };
    let pt = config.payload_type;
    let mut sdp = format!(
        "v=0\r\n\
         o=- 0 0 IN {family} {origin}\r\n\
         s=camgraph {camera}\r\n\
         c=IN {family} {connection}\r\n\
         t=0 0\r\n\
         m=video {port} RTP/AVP {pt}\r\n\
         a=rtpmap:{pt} H264/{H264_CLOCK_RATE}\r\n\
         a=fmtp:{pt} packetization-mode=1;profile-level-id=42e01f\r\n",
        origin = if family == "IP6" { "::1" } else { "127.0.0.1" },
        port = target.port,
    );
    if rtcp_port != target.port.wrapping_add(1) {
        sdp.push_str(&format!("a=rtcp:{rtcp_port}\r\n"));
    }
    sdp.push_str("a=sendonly\r\n");
    sdp
}

/// Writes `sdp` to `file` whole: a temporary file beside it, then a rename.
pub fn write_sdp(file: &Path, sdp: &str) -> std::io::Result<()> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let temp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&temp)?;
    f.write_all(sdp.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&temp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp_of(yaml: &str) -> String {
        let config: RtpSinkConfig = serde_yaml::from_str(yaml).unwrap();
        let (target, rtcp) = config.target().unwrap();
        sdp("front", &target, rtcp, &config)
    }

    #[test]
    fn the_sdp_says_where_and_what() {
        let unicast = sdp_of("target: 127.0.0.1:5004");
        for line in [
            "c=IN IP4 127.0.0.1\r\n",
            "m=video 5004 RTP/AVP 96\r\n",
            "a=rtpmap:96 H264/90000\r\n",
            "a=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n",
            "s=camgraph front\r\n",
        ] {
            assert!(unicast.contains(line), "{line:?} in\n{unicast}");
        }
        assert!(
            !unicast.contains("a=rtcp:"),
            "RTCP on the next port needs no line"
        );
        let multicast =
            sdp_of("{target: '239.1.2.3:6000', ttl: 4, payload_type: 100, rtcp_port: 7000}");
        assert!(
            multicast.contains("c=IN IP4 239.1.2.3/4\r\n"),
            "{multicast}"
        );
        assert!(
            multicast.contains("m=video 6000 RTP/AVP 100\r\n"),
            "{multicast}"
        );
        assert!(multicast.contains("a=rtcp:7000\r\n"), "{multicast}");
        let v6 = sdp_of("target: '[::1]:5004'");
        assert!(v6.contains("c=IN IP6 ::1\r\n"), "{v6}");
    }

    #[test]
    fn the_sdp_file_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("front.sdp");
        write_sdp(&file, "v=0\r\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "v=0\r\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        let missing = dir.path().join("no/such/dir/front.sdp");
        assert!(write_sdp(&missing, "v=0\r\n").is_err());
    }
}
