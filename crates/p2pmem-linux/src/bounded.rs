//! The one way this crate (and the CLI) reads a whole file: with a bound that fits what
//! the file can be ([`p2pmem_model::limits`]). An endless or huge input (`/dev/urandom`
//! given to `nvmet restore`, a corrupt capture) is a [`FsError::TooLarge`] naming the
//! file and the bound, after reading at most one byte past it.

use crate::rootfs::FsError;
use p2pmem_model::limits::Bound;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Read all of `path` (any kind of file a user may name: a regular file, a pipe, a
/// device), refusing more than `bound.max` bytes.
pub fn read_file(path: &Path, bound: Bound) -> Result<Vec<u8>, FsError> {
    let file = std::fs::File::open(path).map_err(|source| FsError::Io {
        path: path.to_path_buf(),
        what: "cannot open",
        source,
    })?;
    read_from(file, path, bound)
}

/// Read a regular file and nothing else: a FIFO, device or socket in a capture is an
/// error instead of a read that blocks or never ends. The file is opened without
/// following a symlink (the caller resolved those) and without blocking.
pub fn read_regular(path: &Path, bound: Bound) -> Result<Vec<u8>, FsError> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|source| FsError::Io {
            path: path.to_path_buf(),
            what: "cannot open",
            source,
        })?;
    let meta = file.metadata().map_err(|source| FsError::Io {
        path: path.to_path_buf(),
        what: "cannot stat",
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(FsError::NotAFile {
            path: path.to_path_buf(),
            kind: kind_of(&meta.file_type()),
        });
    }
    read_from(file, path, bound)
}

/// Read all of `reader` (named `path` in errors), refusing more than `bound.max` bytes.
pub fn read_from(reader: impl Read, path: &Path, bound: Bound) -> Result<Vec<u8>, FsError> {
    let mut buf = Vec::new();
    reader
        .take(bound.max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|source| FsError::Io {
            path: path.to_path_buf(),
            what: "cannot read",
            source,
        })?;
    if buf.len() as u64 > bound.max {
        return Err(FsError::TooLarge {
            path: path.to_path_buf(),
            bound,
        });
    }
    Ok(buf)
}

/// A file type's name for an error message.
pub fn kind_of(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pmem_model::limits::{NVMET_SAVED, SYSFS_ATTR};

    #[test]
    fn an_endless_file_is_an_error_naming_it_and_the_bound() {
        let e = read_file(Path::new("/dev/zero"), NVMET_SAVED).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, FsError::TooLarge { .. }), "{text}");
        assert!(
            text.contains("/dev/zero") && text.contains("16777216") && text.contains("nvmet"),
            "{text}"
        );
    }

    #[test]
    fn a_file_of_exactly_the_bound_is_read_one_more_byte_is_not() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("attr");
        let max = usize::try_from(SYSFS_ATTR.max).unwrap();
        std::fs::write(&p, vec![b'1'; max]).unwrap();
        assert_eq!(read_regular(&p, SYSFS_ATTR).unwrap().len(), max);
        std::fs::write(&p, vec![b'1'; max + 1]).unwrap();
        assert!(matches!(
            read_regular(&p, SYSFS_ATTR),
            Err(FsError::TooLarge { .. })
        ));
    }

    #[test]
    fn devices_and_fifos_are_not_read_as_regular_files() {
        let e = read_regular(Path::new("/dev/zero"), SYSFS_ATTR).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("config");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            // Opening a FIFO for reading would block without a writer.
            let e = read_regular(&fifo, SYSFS_ATTR).unwrap_err();
            assert!(e.to_string().contains("FIFO"), "{e}");
        }
    }
}
