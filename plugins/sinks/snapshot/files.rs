//! Writing a snapshot safely and keeping the folder within its limits.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::api::SavedSnapshot;
use crate::frame::EncodedFrame;
use thiserror::Error;

/// Why a snapshot was not saved.
#[derive(Debug, Error)]
pub enum SaveError {
    #[error("camera name '{0}' cannot be used in a file name")]
    BadName(String),
    #[error("cannot create {}: {source}", .folder.display())]
    CreateFolder {
        folder: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `20261124T153000.123Z` for a capture time (UTC), so names sort by time.
pub fn utc_stamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (days, secs) = ((d.as_secs() / 86_400) as i64, d.as_secs() % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        d.subsec_millis()
    )
}

/// Whether `s` has the exact form `utc_stamp` writes: `YYYYMMDDTHHMMSS.mmmZ`.
fn is_utc_stamp(s: &str) -> bool {
    const FORM: &[u8] = b"00000000T000000.000Z";
    s.len() == FORM.len()
        && s.bytes().zip(FORM).all(|(c, &f)| {
            if f == b'0' {
                c.is_ascii_digit()
            } else {
                c == f
            }
        })
}

/// Saves `frame` as `folder/camera-STAMP.jpg` through a temporary file, then prunes.
pub fn save(
    folder: &Path,
    camera: &str,
    frame: &EncodedFrame,
    max_files: usize,
    max_bytes: u64,
) -> Result<SavedSnapshot, SaveError> {
    // Camera names are node ids (letters, digits, '_' and '-'), so this cannot leave the folder;
    // checked anyway so that no future change can make it.
    if camera.is_empty()
        || !camera
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(SaveError::BadName(camera.into()));
    }
    std::fs::create_dir_all(folder).map_err(|source| SaveError::CreateFolder {
        folder: folder.into(),
        source,
    })?;
    let name = format!("{camera}-{}.jpg", utc_stamp(frame.captured_at));
    let path = folder.join(&name);
    let tmp = folder.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&frame.data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(source) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(SaveError::Write { path, source });
    }
    prune(folder, camera, max_files, max_bytes);
    Ok(SavedSnapshot {
        file: name,
        bytes: frame.data.len() as u64,
    })
}

/// Deletes this camera's oldest pictures (files named as `save` names them, nothing else) until
/// both limits hold.
fn prune(folder: &Path, camera: &str, max_files: usize, max_bytes: u64) {
    let prefix = format!("{camera}-");
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    let mut pictures: Vec<(String, u64)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stamp = name.strip_prefix(&prefix)?.strip_suffix(".jpg")?;
            // Only names `save` writes: another camera's ("front-left-...") or the user's own
            // files ("front-1-holiday.jpg") are not ours to delete.
            is_utc_stamp(stamp).then(|| (name.clone(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        })
        .collect();
    pictures.sort();
    let mut total: u64 = pictures.iter().map(|p| p.1).sum();
    let mut count = pictures.len();
    for (name, size) in pictures {
        if count <= max_files && total <= max_bytes {
            break;
        }
        if std::fs::remove_file(folder.join(&name)).is_ok() {
            count -= 1;
            total -= size;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::frame::Codec;

    fn frame(ms: u64, size: usize) -> EncodedFrame {
        EncodedFrame {
            camera: Arc::from("front"),
            seq: 0,
            captured_at: UNIX_EPOCH + Duration::from_millis(ms),
            codec: Codec::Jpeg,
            keyframe: true,
            width: 1,
            height: 1,
            data: vec![0xAB; size].into(),
            behind: 0,
        }
    }

    #[test]
    fn stamps_are_utc_and_sort_by_time() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000.000Z");
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_millis(1_795_535_042_563)),
            "20261124T154402.563Z"
        );
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229T000000.000Z"
        );
    }

    #[test]
    fn saves_whole_files_and_keeps_within_count_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("front-left-20000101T000000.000Z.jpg"),
            b"other camera",
        )
        .unwrap();
        for i in 0..5 {
            let saved = save(
                dir.path(),
                "front",
                &frame(1_000_000 + i * 1000, 100),
                3,
                10_000,
            )
            .unwrap();
            assert_eq!(
                std::fs::read(dir.path().join(&saved.file)).unwrap().len(),
                100
            );
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "front-19700101T001642.000Z.jpg",
                "front-19700101T001643.000Z.jpg",
                "front-19700101T001644.000Z.jpg",
                "front-left-20000101T000000.000Z.jpg"
            ]
        );
        save(dir.path(), "front", &frame(2_000_000, 250), 10, 300).unwrap();
        let ours = std::fs::read_dir(dir.path()).unwrap().filter(|e| {
            let n = e.as_ref().unwrap().file_name().into_string().unwrap();
            n.starts_with("front-1") || n.starts_with("front-2")
        });
        assert_eq!(
            ours.count(),
            1,
            "250 + 100 bytes is over 300: only the newest stays"
        );
    }

    #[test]
    fn pruning_leaves_the_users_own_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = [
            "front-1-holiday.jpg",
            "front-2024.jpg",
            "front-20000101T000000.000Z-copy.jpg",
            "front-20000101T000000Z.jpg",
        ];
        for name in theirs {
            std::fs::write(dir.path().join(name), b"the user's").unwrap();
        }
        for i in 0..3 {
            save(
                dir.path(),
                "front",
                &frame(1_000_000 + i * 1000, 100),
                1,
                10_000,
            )
            .unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut expected: Vec<&str> = theirs.to_vec();
        expected.push("front-19700101T001642.000Z.jpg");
        expected.sort();
        assert_eq!(
            names, expected,
            "only the newest of ours stays; theirs all do"
        );
    }

    #[test]
    fn an_unwritable_folder_and_a_bad_name_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_folder = dir.path().join("file");
        std::fs::write(&not_a_folder, b"x").unwrap();
        let err = save(&not_a_folder, "front", &frame(0, 10), 10, 1000).unwrap_err();
        assert!(
            matches!(&err, SaveError::CreateFolder { folder, .. } if *folder == not_a_folder),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("cannot create"), "{err}");
        let err = save(dir.path(), "../x", &frame(0, 10), 10, 1000).unwrap_err();
        assert!(
            matches!(&err, SaveError::BadName(name) if name == "../x"),
            "{err:?}"
        );
        assert!(err.to_string().contains("cannot be used"), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing written"
        );
    }
}
