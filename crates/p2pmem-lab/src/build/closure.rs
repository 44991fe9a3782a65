//! A host program in the guest as it is: a static one alone, a dynamically linked one with
//! the shared libraries and the loader the host resolves for it (`ldd`), each at the path
//! it has on the host, so the guest's loader finds them where the host's does. This is how
//! a `p2pmem` built the ordinary way (`cargo build --release`, an installed package) runs
//! the lab, and how the lab tests run Debian's `lspci` and `fio` in the guest.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build::elf::{linkage, Linkage};
use crate::build::process::run_captured;
use crate::error::{io_err, LabError, Result};

/// A file to put in the guest: where it goes (absolute) and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    /// Its path in the guest, absolute.
    pub guest: String,
    /// The host file to read (a symlink is followed).
    pub host: PathBuf,
}

/// `program` and, when it is dynamically linked, every shared library and the loader,
/// each at the path `ldd` names. `guest` is where the program itself goes.
pub fn with_libraries(program: &Path, guest: &str) -> Result<Vec<GuestFile>> {
    let mut head = Vec::new();
    std::fs::File::open(program)
        .map_err(io_err("cannot open", program))?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .map_err(io_err("cannot read", program))?;
    let mut files = vec![GuestFile {
        guest: guest.to_string(),
        host: program.to_path_buf(),
    }];
    match linkage(&head) {
        Ok(Linkage::Static) => {}
        Ok(Linkage::Dynamic) => {
            let mut ldd = Command::new("ldd");
            ldd.arg(program);
            let out = run_captured(ldd)?;
            let libs = parse_ldd(&out.stdout).map_err(|why| LabError::Libraries {
                path: program.to_path_buf(),
                why,
            })?;
            files.extend(libs.into_iter().map(|lib| GuestFile {
                host: PathBuf::from(&lib),
                guest: lib,
            }));
        }
        Err(why) => {
            return Err(LabError::NotElf {
                path: program.to_path_buf(),
                why,
            })
        }
    }
    Ok(files)
}

/// A host file at the same path in the guest: an ELF program with its libraries
/// ([`with_libraries`]), anything else (a data file such as `pci.ids`) alone.
pub fn host_file(path: &Path) -> Result<Vec<GuestFile>> {
    let guest = path
        .to_str()
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| LabError::Libraries {
            path: path.to_path_buf(),
            why: "a host file for the guest must be named by an absolute UTF-8 path".into(),
        })?;
    let mut magic = Vec::new();
    std::fs::File::open(path)
        .map_err(io_err("cannot open", path))?
        .take(4)
        .read_to_end(&mut magic)
        .map_err(io_err("cannot read", path))?;
    if magic == b"\x7fELF" {
        with_libraries(path, guest)
    } else {
        Ok(vec![GuestFile {
            guest: guest.to_string(),
            host: path.to_path_buf(),
        }])
    }
}

/// The absolute paths in `ldd`'s output: `name => /path (0x…)` and the loader's
/// `/path (0x…)`; the vDSO (no path) is skipped. A library `ldd` could not find is an
/// error naming it, since the program would not start in the guest either.
pub fn parse_ldd(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == "statically linked" {
            continue;
        }
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("{} not found", name.trim()));
                }
                rest
            }
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            if !libs.iter().any(|l| l == path) {
                libs.push(path.to_string());
            }
        } else if !path.starts_with('(') && !line.starts_with("linux-vdso") {
            return Err(format!("unexpected ldd line `{line}`"));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_libraries_and_loader_without_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibpci.so.3 => /lib/x86_64-linux-gnu/libpci.so.3 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libpci.so.3",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn a_missing_library_is_named() {
        let err = parse_ldd("\tlibnope.so.1 => not found\n").unwrap_err();
        assert_eq!(err, "libnope.so.1 not found");
        assert!(parse_ldd("garbage here\n").is_err());
    }

    #[test]
    fn this_test_binary_comes_with_its_loader_and_libc() {
        let me = std::env::current_exe().unwrap();
        let files = with_libraries(&me, "/bin/p2pmem").unwrap();
        assert_eq!(files[0].guest, "/bin/p2pmem");
        assert!(
            files.iter().any(|f| f.guest.contains("ld-linux")),
            "{files:?}"
        );
        assert!(
            files.iter().any(|f| f.guest.contains("libc.so")),
            "{files:?}"
        );
        for f in &files {
            assert!(f.host.exists(), "{f:?}");
        }
    }
}
