//! Is a binary static? `/init` is busybox's shell, run before anything else, so the busybox
//! copied into the initramfs must have no `PT_INTERP` program header; other programs come
//! with their libraries (`closure.rs`).

use std::io::Read;
use std::path::Path;

use crate::error::{io_err, LabError, Result};

const PT_INTERP: u32 = 3;

/// What [`linkage`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// No program interpreter: runs without a dynamic loader.
    Static,
    /// Has `PT_INTERP`: needs a dynamic loader and libc.
    Dynamic,
}

/// Reads the ELF program headers of `bytes` (the start of a file, at least the headers).
pub fn linkage(bytes: &[u8]) -> std::result::Result<Linkage, &'static str> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err("no ELF magic");
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF");
    }
    let field = |o: usize, n: usize| bytes.get(o..o.checked_add(n)?);
    let u16_at = |o: usize| Some(u16::from_le_bytes(field(o, 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(field(o, 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(field(o, 8)?.try_into().ok()?));
    let phoff = u64_at(0x20).ok_or("truncated header")?;
    let phentsize = u16_at(0x36).ok_or("truncated header")? as usize;
    let phnum = u16_at(0x38).ok_or("truncated header")? as usize;
    if phentsize < 4 {
        return Err("bad program header size");
    }
    let phoff = usize::try_from(phoff).map_err(|_| "bad program header offset")?;
    for i in 0..phnum {
        let at = phoff
            .checked_add(i.checked_mul(phentsize).ok_or("bad program headers")?)
            .ok_or("bad program headers")?;
        match u32_at(at) {
            Some(PT_INTERP) => return Ok(Linkage::Dynamic),
            Some(_) => {}
            None => return Err("program headers beyond the read prefix"),
        }
    }
    Ok(Linkage::Static)
}

/// Fails with a message naming busybox-static when `path` is not a static ELF.
pub fn require_static(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path).map_err(io_err("cannot open", path))?;
    let mut head = Vec::new();
    file.take(64 * 1024)
        .read_to_end(&mut head)
        .map_err(io_err("cannot read", path))?;
    match linkage(&head) {
        Ok(Linkage::Static) => Ok(()),
        Ok(Linkage::Dynamic) => Err(LabError::NotStatic {
            path: path.to_path_buf(),
        }),
        Err(why) => Err(LabError::NotElf {
            path: path.to_path_buf(),
            why,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_dynamic_and_busybox_static() {
        let me = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&me).unwrap();
        // Test binaries are built without crt-static.
        assert_eq!(linkage(&bytes), Ok(Linkage::Dynamic));
        let err = require_static(&me).unwrap_err().to_string();
        assert!(err.contains("busybox-static"), "{err}");
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        assert!(linkage(b"").is_err());
        assert!(linkage(&[0x7f, b'E', b'L', b'F', 2, 1, 0, 0]).is_err());
        let mut fake = vec![0u8; 64];
        fake[..6].copy_from_slice(b"\x7fELF\x02\x01");
        fake[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        fake[0x36] = 56;
        fake[0x38] = 3;
        assert!(linkage(&fake).is_err());
        fake[0x38] = 0;
        assert_eq!(linkage(&fake), Ok(Linkage::Static));
    }
}
