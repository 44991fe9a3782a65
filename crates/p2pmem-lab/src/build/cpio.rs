//! The `newc` cpio format the kernel unpacks as an initramfs: a 110-byte ASCII header
//! (`070701` and thirteen 8-digit hex fields), the NUL-terminated name padded to 4 bytes,
//! the data padded to 4 bytes, and a final `TRAILER!!!` entry. A writer for building the
//! initramfs and a reader for checking it.

use std::io::{self, Write};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

/// File type bits of `mode`.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// Character device.
pub const S_IFCHR: u32 = 0o020000;

/// Writes a `newc` archive entry by entry.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    written: usize,
    ino: u32,
    rdev: (u32, u32),
}

impl<W: Write> CpioWriter<W> {
    /// A writer into `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            ino: 1,
            rdev: (0, 0),
        }
    }

    /// A directory (`mode` holds the permission bits).
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.entry(name, S_IFDIR | (perm & 0o7777), 2, &[])
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | (perm & 0o7777), 1, data)
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, S_IFLNK | 0o777, 1, target.as_bytes())
    }

    /// A character device node `major:minor` (e.g. `/dev/console` is 5:1).
    pub fn chardev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.rdev = (major, minor);
        let r = self.entry(name, S_IFCHR | (perm & 0o7777), 1, &[]);
        self.rdev = (0, 0);
        r
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry(TRAILER, 0, 1, &[])?;
        Ok(self.out)
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8]) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        if name.is_empty() || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad cpio entry name",
            ));
        }
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio entry over 4 GiB"))?;
        let ino = if name == TRAILER { 0 } else { self.ino };
        self.ino += 1;
        let (rmaj, rmin) = self.rdev;
        let namesize = name.len() as u32 + 1;
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, namesize, 0,
        ];
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        for f in fields {
            header.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.put(&header)?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len();
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - self.written % 4) % 4;
        self.put(&[0u8; 3][..n])
    }
}

/// One entry read back from an archive (for tests).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive (no leading `/`).
    pub name: String,
    /// Full mode (type and permission bits).
    pub mode: u32,
    /// File data or link target.
    pub data: Vec<u8>,
}

/// Parses a `newc` archive up to its trailer. Never panics on malformed input.
#[cfg(test)]
pub fn read_newc(mut b: &[u8]) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    let mut offset = 0usize;
    loop {
        if b.len() < HEADER_LEN {
            return Err(format!("truncated header at offset {offset}"));
        }
        if &b[..6] != MAGIC {
            return Err(format!("bad magic at offset {offset}"));
        }
        let field = |i: usize| -> Result<u32, String> {
            let s = std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i])
                .map_err(|_| format!("non-ASCII header field at offset {offset}"))?;
            u32::from_str_radix(s, 16)
                .map_err(|_| format!("bad hex field {s:?} at offset {offset}"))
        };
        let mode = field(1)?;
        let size = field(6)? as usize;
        let namesize = field(11)? as usize;
        if namesize == 0 {
            return Err(format!("empty name at offset {offset}"));
        }
        let name_end = HEADER_LEN + namesize;
        let data_start = align4(offset + name_end) - offset;
        let data_end = data_start.checked_add(size).ok_or("size overflow")?;
        let next = align4(offset + data_end) - offset;
        if b.len() < name_end || b.len() < data_end {
            return Err(format!("truncated entry at offset {offset}"));
        }
        let name = String::from_utf8_lossy(&b[HEADER_LEN..name_end - 1]).into_owned();
        if name == TRAILER {
            return Ok(entries);
        }
        entries.push(Entry {
            name,
            mode,
            data: b[data_start..data_end].to_vec(),
        });
        let next = next.min(b.len());
        b = &b[next..];
        offset += next;
    }
}

#[cfg(test)]
fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.file("/init", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.file("lab/empty", 0o644, b"").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let e = read_newc(&bytes).unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["bin", "init", "bin/sh", "lab/empty"]);
        assert_eq!(e[1].data, b"#!/bin/sh\necho hi\n");
        assert_eq!(e[1].mode, S_IFREG | 0o755);
        assert_eq!(e[2].mode & 0o170000, S_IFLNK);
        assert_eq!(e[2].data, b"busybox");
        assert_eq!(e[0].mode, S_IFDIR | 0o755);
    }

    #[test]
    fn bad_names_are_refused() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("/", 0o644, b"").is_err());
        assert!(w.file("a\0b", 0o644, b"").is_err());
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("x", 0o644, b"hello").unwrap();
        let bytes = w.finish().unwrap();
        for cut in [0, 5, 110, 113, 120] {
            assert!(read_newc(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
