//! Structure-aware: a whole capture tree (sysfs functions with their config space and
//! attributes, `proc/cpuinfo`, `proc/cmdline`, `osrelease`, an import note, and stray symlinks:
//! absolute, climbing, looping or into devices) is written to a scratch directory, read
//! back with `read_system` like `--root`, and every pair is decided by the model.
//!
//! Besides "no panic", it checks the sandbox: nothing outside the scratch root is ever
//! read (a link to `/dev/zero` or a FIFO would hang or exhaust memory).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

#[derive(Arbitrary, Debug)]
struct Func {
    bus: u8,
    dev: u8,
    func: u8,
    /// Index of an earlier function this one sits below (a bridge), else the root bus.
    parent: Option<u8>,
    config: Vec<u8>,
    vendor: Vec<u8>,
    class: Vec<u8>,
    p2pmem: Option<[Vec<u8>; 3]>,
    driver: Option<Name>,
    nvme: Option<Name>,
}

#[derive(Arbitrary, Debug)]
enum Name {
    Plain(u8),
    Text(String),
}

impl Name {
    /// One safe path component.
    fn component(&self) -> String {
        let s = match self {
            Name::Plain(n) => format!("n{n}"),
            Name::Text(t) => t
                .chars()
                .filter(|c| *c != '/' && *c != '\0')
                .take(40)
                .collect(),
        };
        if s.is_empty() || s == "." || s == ".." {
            "x".to_string()
        } else {
            s
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Target {
    DevZero,
    DevUrandom,
    Slash,
    EtcPasswd,
    Climb(u8),
    ClimbToDevZero(u8),
    SelfLoop,
    Text(String),
}

impl Target {
    fn path(&self, name: &str) -> String {
        match self {
            Target::DevZero => "/dev/zero".into(),
            Target::DevUrandom => "/dev/urandom".into(),
            Target::Slash => "/".into(),
            Target::EtcPasswd => "/etc/passwd".into(),
            Target::Climb(n) => "../".repeat(usize::from(*n % 24) + 1),
            Target::ClimbToDevZero(n) => {
                format!("{}dev/zero", "../".repeat(usize::from(*n % 24) + 1))
            }
            Target::SelfLoop => name.to_string(),
            Target::Text(t) => t.chars().filter(|c| *c != '\0').take(200).collect(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Place {
    PciDevices,
    Function(u8),
    FunctionP2pmem(u8),
    ClassNvme,
    ClassBlock,
    Proc,
    KernelSys,
}

#[derive(Arbitrary, Debug)]
struct Link {
    place: Place,
    name: Name,
    /// Well-known names get a chance: the files the reader opens.
    well_known: Option<u8>,
    target: Target,
}

#[derive(Arbitrary, Debug)]
struct Capture {
    functions: Vec<Func>,
    links: Vec<Link>,
    cpuinfo: Option<Vec<u8>>,
    cmdline: Option<Vec<u8>>,
    osrelease: Option<Vec<u8>>,
    fifo: Option<Place>,
    /// `p2pmem-import.json`, the note `p2pmem import` leaves at a capture's top.
    import_note: Option<Vec<u8>>,
}

const KNOWN: [&str; 12] = [
    "config",
    "vendor",
    "device",
    "class",
    "driver",
    "size",
    "available",
    "published",
    "cpuinfo",
    "cmdline",
    "osrelease",
    "transport",
];

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    if let Some(d) = p.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let _ = std::fs::write(p, bytes);
}

fn build(root: &Path, cap: &Capture) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut func_dirs = Vec::new();
    for (i, f) in cap.functions.iter().take(8).enumerate() {
        let bdf = format!("0000:{:02x}:{:02x}.{}", f.bus, f.dev & 0x1f, f.func & 7);
        let parent = f
            .parent
            .map(usize::from)
            .filter(|p| *p < i)
            .and_then(|p| func_dirs.get(p).cloned())
            .unwrap_or_else(|| PathBuf::from("sys/devices/pci0000:00"));
        let dir = parent.join(&bdf);
        let _ = std::fs::create_dir_all(root.join(&dir));
        let d = dir.to_string_lossy().into_owned();
        write(
            root,
            &format!("{d}/config"),
            &f.config[..f.config.len().min(8192)],
        );
        write(root, &format!("{d}/vendor"), &f.vendor);
        write(root, &format!("{d}/device"), b"0x0010\n");
        write(root, &format!("{d}/class"), &f.class);
        if let Some([size, avail, published]) = &f.p2pmem {
            write(root, &format!("{d}/p2pmem/size"), size);
            write(root, &format!("{d}/p2pmem/available"), avail);
            write(root, &format!("{d}/p2pmem/published"), published);
        }
        let _ = std::fs::create_dir_all(root.join("sys/bus/pci/devices"));
        let up = "../../../".to_string();
        let _ = symlink(
            format!("{up}{}", dir.strip_prefix("sys").unwrap_or(&dir).display()),
            root.join("sys/bus/pci/devices").join(&bdf),
        );
        if let Some(drv) = &f.driver {
            let _ = std::fs::create_dir_all(root.join("sys/bus/pci/drivers").join(drv.component()));
            let depth = dir.components().count() - 1;
            let _ = symlink(
                format!("{}bus/pci/drivers/{}", "../".repeat(depth), drv.component()),
                root.join(&dir).join("driver"),
            );
        }
        if let Some(n) = &f.nvme {
            let ctrl = dir.join("nvme").join(n.component());
            let _ = std::fs::create_dir_all(root.join(&ctrl));
            let _ = std::fs::create_dir_all(root.join("sys/class/nvme"));
            let depth = 3;
            let _ = symlink(
                format!(
                    "{}{}",
                    "../".repeat(depth),
                    ctrl.strip_prefix("sys").unwrap_or(&ctrl).display()
                ),
                root.join("sys/class/nvme").join(n.component()),
            );
            write(root, &format!("{}/transport", ctrl.display()), b"pcie\n");
        }
        func_dirs.push(dir.clone());
        dirs.push(dir);
    }
    if let Some(b) = &cap.cpuinfo {
        write(root, "proc/cpuinfo", b);
    }
    if let Some(b) = &cap.cmdline {
        write(root, "proc/cmdline", b);
    }
    if let Some(b) = &cap.osrelease {
        write(root, "proc/sys/kernel/osrelease", b);
    }
    if let Some(b) = &cap.import_note {
        write(root, p2pmem_linux::import::NOTE_FILE, b);
    }
    for d in [
        "sys/bus/pci/devices",
        "sys/class/nvme",
        "sys/class/block",
        "proc/sys/kernel",
    ] {
        let _ = std::fs::create_dir_all(root.join(d));
    }
    func_dirs
}

fn place_dir(place: &Place, funcs: &[PathBuf]) -> PathBuf {
    let pick = |i: u8| funcs.get(usize::from(i) % funcs.len().max(1)).cloned();
    match place {
        Place::PciDevices => "sys/bus/pci/devices".into(),
        Place::Function(i) => pick(*i).unwrap_or_else(|| "sys/devices".into()),
        Place::FunctionP2pmem(i) => {
            pick(*i).map_or_else(|| "sys/devices".into(), |d| d.join("p2pmem"))
        }
        Place::ClassNvme => "sys/class/nvme".into(),
        Place::ClassBlock => "sys/class/block".into(),
        Place::Proc => "proc".into(),
        Place::KernelSys => "proc/sys/kernel".into(),
    }
}

fuzz_target!(|cap: Capture| {
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let Ok(scratch) = tempfile::Builder::new()
        .prefix("p2pmem-fuzz-")
        .tempdir_in(base)
    else {
        return;
    };
    let root = scratch.path();
    let funcs = build(root, &cap);
    // Links last: every directory they sit in is real, so no write above goes through one.
    for l in cap.links.iter().take(8) {
        let dir = root.join(place_dir(&l.place, &funcs));
        if !dir.is_dir()
            || dir
                .symlink_metadata()
                .map_or(true, |m| m.file_type().is_symlink())
        {
            continue;
        }
        let name = match l.well_known {
            Some(k) => KNOWN[usize::from(k) % KNOWN.len()].to_string(),
            None => l.name.component(),
        };
        let at = dir.join(&name);
        if at.symlink_metadata().is_ok() {
            let _ = std::fs::remove_file(&at);
        }
        let _ = symlink(l.target.path(&name), &at);
    }
    if let Some(p) = &cap.fifo {
        let dir = root.join(place_dir(p, &funcs));
        let at = dir.join("config");
        if dir.is_dir() && at.symlink_metadata().is_err() {
            let _ = mkfifo(&at);
        }
    }
    let Ok(sys) = p2pmem_linux::system::read_system(root) else {
        return;
    };
    let topo = &sys.topology;
    let all: Vec<_> = topo.functions().map(|f| f.bdf).collect();
    for hb in topo.host_bridges() {
        let _ = topo.representative(hb, sys.rules.kernel);
    }
    for p in topo.providers().map(|f| f.bdf).take(4) {
        for c in all.iter().take(8) {
            let _ = p2pmem_model::distance::decide(topo, &sys.rules, p, *c);
        }
    }
});

/// A FIFO (`mknod` with `S_IFIFO`, in-process: spawning `mkfifo(1)` took a third of
/// the run time): opening one for reading blocks until a writer comes.
fn mkfifo(at: &Path) -> std::io::Result<()> {
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    mknodat(CWD, at, FileType::Fifo, Mode::from_raw_mode(0o600), 0)?;
    Ok(())
}
