//! Plays JPEG files as a camera: a folder of `.jpg`/`.jpeg` files (in name order) or one `.mjpeg`
//! file (JPEGs back to back, as `ffmpeg -f mjpeg` writes), looped at the camera's fps. Frames are
//! passed on as JPEG, so a JPEG encoder at its default quality forwards them without re-encoding.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use thiserror::Error;

use super::kinds::{no_checks, Open, SourceKind};
use super::{Captured, FrameSource, Pacer, SourceError};
use crate::node::FieldIssue;

/// A folder of JPEGs or an `.mjpeg` file, played in a loop without re-encoding. Claims every
/// `source:` no other kind claims, so it is last in the table.
pub const KIND: SourceKind = SourceKind {
    name: "file or folder",
    claims: |_| true,
    validate: |c, issues| {
        let path = Path::new(c.source.trim());
        match std::fs::metadata(path) {
            Err(_) => issues.push(FieldIssue::new(
                "source",
                format!(
                    "'{}' is not 'test', a device (/dev/videoN or an index) or an existing file or folder",
                    c.source
                ),
            )),
            Ok(m) if !m.is_dir() => {
                if let Err(e) = regular_len(path, &m) {
                    issues.push(FieldIssue::new("source", e.to_string()));
                }
            }
            Ok(_) => {}
        }
    },
    validate_added: no_checks,
    open: Open::Frames(|c| {
        Ok(Box::new(FilePlayer::open(
            Path::new(c.source.trim()),
            c.fps,
        )?))
    }),
    codecs: &[],
    takes_noise: false,
};
use crate::frame::PixelFormat;

/// Refuse to load more than this into memory (a file, or a folder's JPEGs together).
const MAX_TOTAL_BYTES: u64 = 512 << 20;

/// Why a file or folder cannot be played.
#[derive(Debug, Error)]
pub enum FilesError {
    #[error("cannot read folder {}: {source}", .path.display())]
    ReadFolder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: more than {} MiB of JPEGs", .path.display(), MAX_TOTAL_BYTES >> 20)]
    FolderTooLarge { path: PathBuf },
    #[error("{}: larger than {} MiB", .path.display(), MAX_TOTAL_BYTES >> 20)]
    FileTooLarge { path: PathBuf },
    /// A device, FIFO or socket: reading it could block forever or never end.
    #[error("{}: {what}, not a regular file or folder", .path.display())]
    NotAFile { path: PathBuf, what: &'static str },
    #[error("{}: no JPEG images found", .path.display())]
    NoImages { path: PathBuf },
    /// `image` names the file, or the file and the image's place in it.
    #[error("{image}: not a valid JPEG: {source}")]
    NotJpeg {
        image: String,
        source: turbojpeg::Error,
    },
}

struct Picture {
    width: u32,
    height: u32,
    data: Bytes,
}

pub struct FilePlayer {
    pictures: Vec<Picture>,
    next: usize,
    pacer: Pacer,
}

impl FilePlayer {
    pub fn open(path: &Path, fps: u32) -> Result<Self, FilesError> {
        let mut images: Vec<(String, Bytes)> = Vec::new();
        if path.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(path)
                .map_err(|source| FilesError::ReadFolder {
                    path: path.into(),
                    source,
                })?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")
                    })
                })
                .collect();
            names.sort();
            // Every file is checked before any is read: the sum is known up front.
            let mut total = 0;
            for p in &names {
                total += stat_regular(p)?;
            }
            if total > MAX_TOTAL_BYTES {
                return Err(FilesError::FolderTooLarge { path: path.into() });
            }
            let mut budget = MAX_TOTAL_BYTES;
            for p in names {
                let data = read_bounded(&p, budget).map_err(|e| e.in_folder(path))?;
                budget -= data.len() as u64;
                images.push((p.display().to_string(), Bytes::from(data)));
            }
        } else {
            stat_regular(path)?;
            let data = Bytes::from(read_bounded(path, MAX_TOTAL_BYTES)?);
            for (i, range) in split_jpegs(&data).into_iter().enumerate() {
                let image = format!("{} (image {})", path.display(), i + 1);
                images.push((image, data.slice(range)));
            }
        }
        if images.is_empty() {
            return Err(FilesError::NoImages { path: path.into() });
        }
        let mut pictures = Vec::with_capacity(images.len());
        for (image, data) in images {
            let header = turbojpeg::read_header(&data)
                .map_err(|source| FilesError::NotJpeg { image, source })?;
            pictures.push(Picture {
                width: header.width as u32,
                height: header.height as u32,
                data,
            });
        }
        Ok(Self {
            pictures,
            next: 0,
            pacer: Pacer::new(fps),
        })
    }

    pub fn len(&self) -> usize {
        self.pictures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pictures.is_empty()
    }
}

/// The metadata of `path` (following links), read without opening it: a FIFO blocks on open.
fn stat_regular(path: &Path) -> Result<u64, FilesError> {
    let meta = std::fs::metadata(path).map_err(|source| FilesError::Read {
        path: path.into(),
        source,
    })?;
    regular_len(path, &meta)
}

/// The length of a regular file; `NotAFile` for anything else.
fn regular_len(path: &Path, meta: &std::fs::Metadata) -> Result<u64, FilesError> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        return Ok(meta.len());
    }
    let what = if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a folder"
    };
    Err(FilesError::NotAFile {
        path: path.into(),
        what,
    })
}

/// Reads a regular file of at most `limit` bytes; `FileTooLarge` past it, even if the file grew
/// (or was swapped) since it was checked.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, FilesError> {
    use std::io::Read;
    let read_err = |source| FilesError::Read {
        path: path.into(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    regular_len(path, &file.metadata().map_err(read_err)?)?;
    let mut data = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    if data.len() as u64 > limit {
        return Err(FilesError::FileTooLarge { path: path.into() });
    }
    Ok(data)
}

impl FilesError {
    /// A file of `folder` over the budget is the folder being too large.
    fn in_folder(self, folder: &Path) -> Self {
        match self {
            FilesError::FileTooLarge { .. } => FilesError::FolderTooLarge {
                path: folder.into(),
            },
            e => e,
        }
    }
}

impl FrameSource for FilePlayer {
    fn next_frame(&mut self, _seq: u64) -> Result<Captured, SourceError> {
        self.pacer.wait();
        let p = &self.pictures[self.next];
        self.next = (self.next + 1) % self.pictures.len();
        Ok(Captured {
            captured_at: SystemTime::now(),
            width: p.width,
            height: p.height,
            format: PixelFormat::Jpeg,
            data: p.data.clone(),
        })
    }

    fn pause(&mut self) {
        self.pacer.reset();
    }
}

/// The byte ranges of the JPEG images in `data`, found by walking JPEG markers (so bytes that merely
/// look like an end marker inside a thumbnail or header do not cut an image short). Anything between
/// images is skipped; a truncated last image is dropped.
pub fn split_jpegs(data: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(start) = find_soi(data, pos) {
        match jpeg_end(data, start) {
            Some(end) => {
                out.push(start..end);
                pos = end;
            }
            None => break,
        }
    }
    out
}

fn find_soi(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?
        .windows(2)
        .position(|w| w == [0xFF, 0xD8])
        .map(|p| from + p)
}

/// The end (exclusive) of the JPEG that starts at `start`.
fn jpeg_end(data: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 2;
    loop {
        // Markers may be padded with extra 0xFF bytes.
        while *data.get(i)? == 0xFF && *data.get(i + 1)? == 0xFF {
            i += 1;
        }
        if *data.get(i)? != 0xFF {
            return None;
        }
        let marker = *data.get(i + 1)?;
        i += 2;
        match marker {
            0xD9 => return Some(i),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {
                let len = usize::from(u16::from_be_bytes([*data.get(i)?, *data.get(i + 1)?]));
                i += len;
                if marker == 0xDA {
                    // Entropy-coded data: runs until a marker that is not a stuffed 0xFF00 or a restart.
                    loop {
                        if *data.get(i)? == 0xFF {
                            let next = *data.get(i + 1)?;
                            if next != 0x00 && !(0xD0..=0xD7).contains(&next) {
                                break;
                            }
                            i += 2;
                        } else {
                            i += 1;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: usize, h: usize, shade: u8) -> Vec<u8> {
        let pixels = vec![shade; w * h * 3];
        let image = turbojpeg::Image {
            pixels: &pixels[..],
            width: w,
            pitch: w * 3,
            height: h,
            format: turbojpeg::PixelFormat::RGB,
        };
        turbojpeg::compress(image, 80, turbojpeg::Subsamp::Sub2x2)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn an_mjpeg_file_splits_into_its_images() {
        let (a, b) = (jpeg(64, 48, 10), jpeg(32, 16, 200));
        let mut file = b"junk".to_vec();
        file.extend(&a);
        file.extend(b"\r\n--boundary\r\n");
        file.extend(&b);
        file.extend(&a[..a.len() / 2]); // truncated
        let ranges = split_jpegs(&file);
        assert_eq!(ranges.len(), 2);
        assert_eq!(&file[ranges[0].clone()], &a[..]);
        assert_eq!(&file[ranges[1].clone()], &b[..]);
    }

    #[test]
    fn a_folder_plays_in_name_order_and_loops() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.jpg"), jpeg(32, 16, 200)).unwrap();
        std::fs::write(dir.path().join("a.jpg"), jpeg(64, 48, 10)).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a picture").unwrap();
        let mut player = FilePlayer::open(dir.path(), 1000).unwrap();
        let sizes: Vec<_> = (0..3)
            .map(|i| player.next_frame(i).map(|c| (c.width, c.height)).unwrap())
            .collect();
        assert_eq!(sizes, vec![(64, 48), (32, 16), (64, 48)]);
    }

    /// Runs `f` on another thread; panics if it does not return within 5 s (a FIFO blocks).
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("returned within 5 s")
    }

    fn mkfifo(path: &Path) {
        let ok = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(ok.success());
    }

    #[test]
    fn devices_and_fifos_are_refused_at_once_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.mjpeg");
        mkfifo(&fifo);
        let pictures = dir.path().join("pictures");
        std::fs::create_dir(&pictures).unwrap();
        std::fs::write(pictures.join("a.jpg"), jpeg(32, 16, 200)).unwrap();
        mkfifo(&pictures.join("b.jpg"));
        for (path, what) in [
            (PathBuf::from("/dev/zero"), "/dev/zero: a character device"),
            (fifo.clone(), "pipe.mjpeg: a FIFO"),
            (pictures.clone(), "b.jpg: a FIFO"),
        ] {
            let shown = path.clone();
            let err = within_5s(move || FilePlayer::open(&path, 30).err())
                .unwrap_or_else(|| panic!("{} opened", shown.display()));
            assert!(matches!(err, FilesError::NotAFile { .. }), "{err:?}");
            let err = err.to_string();
            assert!(
                err.contains(what) && err.ends_with("not a regular file or folder"),
                "{err}"
            );
        }
        // In the file, refused when the config is checked, naming the field.
        for source in ["/dev/zero".to_string(), fifo.display().to_string()] {
            let camera = super::super::CameraConfig {
                source: source.clone(),
                width: 320,
                height: 240,
                fps: 10,
                start: true,
                noise: 0,
                transport: None,
                username: None,
                password: None,
                codec: None,
            };
            let issues = crate::node::NodeConfig::validate(&camera);
            assert!(
                issues
                    .iter()
                    .any(|i| i.message.contains("not a regular file or folder")),
                "{source}: {issues:?}"
            );
        }
    }

    #[test]
    fn a_file_or_folder_over_the_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.mjpeg");
        // Sparse: no disk space, but reading it would take MAX_TOTAL_BYTES of memory.
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_TOTAL_BYTES + 1)
            .unwrap();
        let err = within_5s(move || FilePlayer::open(&big, 30).err()).unwrap();
        assert!(matches!(err, FilesError::FileTooLarge { .. }), "{err:?}");
        let folder = dir.path().join("pictures");
        std::fs::create_dir(&folder).unwrap();
        for name in ["a.jpg", "b.jpg"] {
            std::fs::File::create(folder.join(name))
                .unwrap()
                .set_len(MAX_TOTAL_BYTES / 2 + 1)
                .unwrap();
        }
        let err = within_5s(move || FilePlayer::open(&folder, 30).err()).unwrap();
        assert!(matches!(err, FilesError::FolderTooLarge { .. }), "{err:?}");
        assert!(
            err.to_string().ends_with("more than 512 MiB of JPEGs"),
            "{err}"
        );
    }

    #[test]
    fn a_broken_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jpg");
        std::fs::write(&path, [0xFF, 0xD8, 0xFF, 0xD9]).unwrap();
        let err = FilePlayer::open(dir.path(), 30).err().unwrap();
        assert!(
            matches!(&err, FilesError::NotJpeg { image, .. } if image.ends_with("bad.jpg")),
            "{err:?}"
        );
        let shown = err.to_string();
        assert!(
            shown.contains("bad.jpg") && shown.contains("not a valid JPEG"),
            "{shown}"
        );
    }
}
