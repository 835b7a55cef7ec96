//! The disk snapshot sink end to end: interval and on-request pictures, retention, and a folder
//! that cannot be written (errors counted, the stream unaffected).

mod common;

use std::time::Duration;

use common::{decode, test_camera_yaml, wait_for, Server};

fn jpgs(folder: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".jpg"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn pictures_are_saved_on_interval_and_request_and_retention_holds() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("snaps");
    let server = Server::start(&format!(
        "nodes:\n{}  front_snapshots: {{ type: snapshot_sink, inputs: [front_jpeg], folder: {}, interval_s: 0.3, max_files: 3 }}\n",
        test_camera_yaml("front", 320, 240, 30),
        folder.display()
    ));
    wait_for("5 interval snapshots", Duration::from_secs(5), || {
        (server
            .metric("camgraph_frames_sent_total{camera=\"front\",node=\"front_snapshots\"")
            .unwrap_or(0.0)
            >= 5.0)
            .then_some(())
    });
    let names = jpgs(&folder);
    assert_eq!(names.len(), 3, "retention keeps 3: {names:?}");
    for name in &names {
        assert!(
            name.starts_with("front-") && name.ends_with("Z.jpg"),
            "{name}"
        );
        let (rgb, w, h) = decode(&std::fs::read(folder.join(name)).unwrap());
        assert_eq!((w, h), (320, 240));
        assert!(camgraph::plugins::sources::testsrc::read_marks(&rgb, w, h).is_some());
    }
    assert!(std::fs::read_dir(&folder).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));

    let (status, body) = server.post_json("/api/camera/snapshot/front");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "saved");
    let file = body["file"].as_str().unwrap();
    let (rgb, w, h) = decode(&std::fs::read(folder.join(file)).expect("the file just saved"));
    assert!(camgraph::plugins::sources::testsrc::read_marks(&rgb, w, h).is_some());
    assert_eq!(server.post_json("/api/camera/snapshot/nope").0, 404);
}

#[test]
fn an_unwritable_folder_is_an_error_metric_and_the_stream_keeps_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_folder = dir.path().join("plain-file");
    std::fs::write(&not_a_folder, b"x").unwrap();
    let server = Server::start(&format!(
        "nodes:\n{}  front_snapshots: {{ type: snapshot_sink, inputs: [front_jpeg], folder: {}, interval_s: 0.2 }}\n",
        test_camera_yaml("front", 320, 240, 30),
        not_a_folder.display()
    ));
    let mut stream = server.mjpeg("/api/camera/stream/front");
    let (status, body) = server.post_json("/api/camera/snapshot/front");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("snapshot not saved: cannot create"),
        "{body}"
    );
    wait_for("failed saves to be counted", Duration::from_secs(3), || {
        let failed = server
            .metric("camgraph_frames_dropped_total{camera=\"front\",node=\"front_snapshots\"");
        (failed.unwrap_or(0.0) >= 3.0).then_some(())
    });
    for _ in 0..30 {
        stream.next_part().unwrap().unwrap();
    }
    let (_, graph) = server.get_json("/api/graph");
    let sink = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "front_snapshots")
        .unwrap();
    assert!(
        sink["stats"]["error"]
            .as_str()
            .unwrap()
            .contains("cannot create"),
        "{sink}"
    );
    assert!(!server.log().contains("panicked"));
}
