//! The guest's initramfs: an uncompressed `newc` cpio (compressing it cost the host a
//! fraction of a second and the guest's kernel half a second to inflate, every boot)
//! holding busybox (`/bin/busybox`, applet links made at boot by `/init`), the `p2pmem`
//! binary (`/bin/p2pmem`; when it is dynamically linked, with its libraries and loader at
//! their host paths), the init script (`guest/init.sh`), the plan (`/lab/plan.json`, run
//! by `p2pmem agent plan`), `/lab/env`, kernel modules (`/lib/modules/<name>.ko`, loaded
//! by the plan's bind steps, never by `/init`) and the host files the plan asks for
//! (programs with their libraries).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::build::closure::{host_file, with_libraries, GuestFile};
use crate::build::cpio::CpioWriter;
use crate::build::elf::require_static;
use crate::error::{io_err, LabError, Result};

/// The guest's `/init`.
pub const INIT_SCRIPT: &str = include_str!("../../guest/init.sh");

/// Debian's `busybox-static` binary.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// What goes into an initramfs.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    /// A static busybox.
    pub busybox: PathBuf,
    /// The `p2pmem` binary, static or not.
    pub p2pmem: PathBuf,
    /// The plan, serialised (`/lab/plan.json`).
    pub plan: String,
    /// How many NVMe block devices `/init` waits for.
    pub nvme_count: usize,
    /// Kernel modules, put in `/lib/modules/` under their file names.
    pub modules: Vec<PathBuf>,
    /// Host files put at the same path in the guest (programs with their libraries).
    pub host_files: Vec<PathBuf>,
}

/// Writes the initramfs to `out`.
pub fn build_initramfs(spec: &InitramfsSpec, out: &Path) -> Result<()> {
    let busybox = read_binary(
        &spec.busybox,
        "busybox",
        "install busybox-static (scripts/setup-host)",
    )?;
    require_static(&spec.busybox)?;
    if !spec.p2pmem.exists() {
        return Err(LabError::Missing {
            what: "p2pmem binary",
            path: spec.p2pmem.clone(),
            hint: "build it with cargo build --release (or scripts/build-static)",
        });
    }
    let mut guest_files: Vec<GuestFile> = with_libraries(&spec.p2pmem, "/bin/p2pmem")?;
    for f in &spec.host_files {
        guest_files.extend(host_file(f)?);
    }
    let mut extra: Vec<(String, u32, Vec<u8>)> = Vec::new();
    for f in guest_files {
        let name = f.guest.trim_start_matches('/').to_string();
        if extra.iter().any(|(n, ..)| *n == name) {
            continue;
        }
        let data = read_binary(&f.host, "file for the guest", "is it installed?")?;
        extra.push((name, 0o755, data));
    }
    let mut modules = Vec::new();
    for m in &spec.modules {
        let name = m
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".ko"))
            .ok_or_else(|| LabError::Io {
                what: "a kernel module must be a .ko file:",
                path: m.clone(),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            })?;
        let data = read_binary(m, "kernel module", "build it with `p2pmem lab kernel`")?;
        modules.push((format!("lib/modules/{name}"), data));
    }
    let env = format!("LAB_NVME={}\n", spec.nvme_count);

    let file = File::create(out).map_err(io_err("cannot create", out))?;
    let mut w = CpioWriter::new(BufWriter::new(file));
    let write = |w: &mut CpioWriter<_>| -> std::io::Result<()> {
        let mut dirs: Vec<String> = Vec::new();
        for d in [
            "bin",
            "sbin",
            "usr",
            "usr/bin",
            "usr/sbin",
            "dev",
            "proc",
            "sys",
            "tmp",
            "lab",
            "root",
            "lib",
            "lib/modules",
        ] {
            w.dir(d, 0o755)?;
            dirs.push(d.to_string());
        }
        w.chardev("dev/console", 0o600, 5, 1)?;
        w.chardev("dev/null", 0o666, 1, 3)?;
        w.file("bin/busybox", 0o755, &busybox)?;
        w.symlink("bin/sh", "busybox")?;
        for (name, mode, data) in &extra {
            let mut parent = String::new();
            for part in name
                .split('/')
                .collect::<Vec<_>>()
                .split_last()
                .map_or(&[][..], |(_, p)| p)
            {
                if !parent.is_empty() {
                    parent.push('/');
                }
                parent.push_str(part);
                if !dirs.contains(&parent) {
                    w.dir(&parent, 0o755)?;
                    dirs.push(parent.clone());
                }
            }
            w.file(name, *mode, data)?;
        }
        w.file("init", 0o755, INIT_SCRIPT.as_bytes())?;
        w.file("lab/plan.json", 0o644, spec.plan.as_bytes())?;
        w.file("lab/env", 0o644, env.as_bytes())?;
        for (path, data) in &modules {
            w.file(path, 0o644, data)?;
        }
        Ok(())
    };
    write(&mut w).map_err(io_err("cannot write initramfs", out))?;
    let mut inner = w.finish().map_err(io_err("cannot write initramfs", out))?;
    std::io::Write::flush(&mut inner).map_err(io_err("cannot write initramfs", out))?;
    Ok(())
}

fn read_binary(path: &Path, what: &'static str, hint: &'static str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            LabError::Missing {
                what,
                path: path.to_path_buf(),
                hint,
            }
        } else {
            io_err("cannot read", path)(source)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::cpio::read_newc;

    #[test]
    fn a_dynamic_p2pmem_comes_with_its_loader_and_libraries() {
        let tmp = tempfile::tempdir().unwrap();
        let bb = tmp.path().join("busybox");
        fake_static_elf(&bb);
        let data = tmp.path().join("pci.ids");
        std::fs::write(&data, "8086  Intel Corporation\n").unwrap();
        let me = std::env::current_exe().unwrap();
        let spec = InitramfsSpec {
            busybox: bb,
            p2pmem: me.clone(),
            plan: "{}".into(),
            nvme_count: 0,
            modules: vec![],
            host_files: vec![data.clone()],
        };
        let out = tmp.path().join("i.cpio");
        build_initramfs(&spec, &out).unwrap();
        let raw = std::fs::read(&out).unwrap();
        let entries = read_newc(&raw).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let p2pmem = entries.iter().find(|e| e.name == "bin/p2pmem").unwrap();
        assert_eq!(p2pmem.data, std::fs::read(&me).unwrap());
        let loader = names
            .iter()
            .find(|n| n.contains("ld-linux"))
            .expect("loader");
        let libc = names.iter().find(|n| n.contains("libc.so")).expect("libc");
        // Every file's directories come before it.
        for file in [*loader, *libc] {
            let (dir, _) = file.rsplit_once('/').unwrap();
            let d = names.iter().position(|n| *n == dir).expect(dir);
            let f = names.iter().position(|n| n == &file).unwrap();
            assert!(d < f, "{dir} after {file}");
        }
        let ids = data.to_str().unwrap().trim_start_matches('/');
        let ids = entries.iter().find(|e| e.name == ids).unwrap();
        assert_eq!(ids.data, b"8086  Intel Corporation\n");
    }

    /// A minimal static ELF: a valid header with no program headers.
    fn fake_static_elf(path: &Path) {
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x36] = 56;
        std::fs::write(path, elf).unwrap();
    }

    #[test]
    fn archive_holds_init_busybox_and_the_plan() {
        let tmp = tempfile::tempdir().unwrap();
        let bb = tmp.path().join("busybox");
        fake_static_elf(&bb);
        let ko = tmp.path().join("p2pmem_pci.ko");
        std::fs::write(&ko, b"\x7fELF module").unwrap();
        let spec = InitramfsSpec {
            busybox: bb.clone(),
            p2pmem: bb.clone(),
            plan: r#"{"version":1,"steps":[]}"#.into(),
            nvme_count: 3,
            modules: vec![ko.clone()],
            host_files: vec![],
        };
        let out = tmp.path().join("initramfs.cpio");
        build_initramfs(&spec, &out).unwrap();
        let raw = std::fs::read(&out).unwrap();
        let entries = read_newc(&raw).unwrap();
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(get("init").data, INIT_SCRIPT.as_bytes());
        assert_eq!(get("lab/plan.json").data, br#"{"version":1,"steps":[]}"#);
        assert_eq!(get("lab/env").data, b"LAB_NVME=3\n");
        // Where the agent's bind steps look for it.
        let module = p2pmem_wire::plan::GUEST_MODULE.trim_start_matches('/');
        assert_eq!(get(module).data, b"\x7fELF module");
        assert_eq!(
            get("dev/console").mode & 0o170000,
            crate::build::cpio::S_IFCHR
        );
        assert_eq!(
            get("bin/busybox").data.len(),
            std::fs::metadata(&bb).unwrap().len() as usize
        );
    }
}
