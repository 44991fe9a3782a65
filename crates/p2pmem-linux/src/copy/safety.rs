//! Refusals before a single byte is written: a destination device that is mounted or
//! held by another block device (a partition of it mounted, md, dm, LVM), and a
//! destination range that overlaps the source range on the same file or disk.
//!
//! Everything is read below the root (`proc/self/mountinfo`, `sys/dev/block/M:m`), so
//! tests point it at fixtures. The kernel's own `O_EXCL` refusal (see
//! [`Endpoint::open_destination`](super::endpoint::Endpoint::open_destination)) is the
//! last line: it also catches file systems whose mountinfo entry names an anonymous
//! device (btrfs).

use super::endpoint::{DevNo, Endpoint, EndpointError, Ident};
use super::plan::ByteRange;
use crate::rootfs::RootFs;
use rustix::fs::{FileType, Stat};
use std::path::Path;

/// One line of `/proc/<pid>/mountinfo` (the fields the checks need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Field 3: the device of the mounted file system.
    pub dev: DevNo,
    /// Field 5: the mount point, unescaped.
    pub mount_point: String,
    /// The file-system type after the ` - ` separator.
    pub fstype: String,
    /// The mount source after the type (`/dev/nvme0n1p2`).
    pub source: String,
}

/// Undoes the octal escapes the kernel writes for space, tab, newline and backslash.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_devno(s: &str) -> Option<DevNo> {
    let (maj, min) = s.split_once(':')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

/// Parses mountinfo text. Malformed lines are skipped, never a panic.
pub fn parse_mountinfo(bytes: &[u8]) -> Vec<MountEntry> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let dev = parse_devno(fields.get(2)?)?;
            let mount_point = unescape(fields.get(4)?);
            let mut rest = right.split(' ');
            let fstype = rest.next()?.to_string();
            let source = unescape(rest.next().unwrap_or(""));
            Some(MountEntry {
                dev,
                mount_point,
                fstype,
                source,
            })
        })
        .collect()
}

/// What holds a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InUse {
    /// Mounts of the device, of a partition of it, or of the disk it is a partition of:
    /// `/mnt (ext4, /dev/loop0p1)`.
    pub mounts: Vec<String>,
    /// Entries of `holders/` (dm-0, md0, ...), with the device they hold.
    pub holders: Vec<String>,
}

impl InUse {
    /// Nothing holds it.
    pub fn is_free(&self) -> bool {
        self.mounts.is_empty() && self.holders.is_empty()
    }

    /// `mounted at /mnt (ext4, /dev/loop0); held by dm-0`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.mounts.is_empty() {
            parts.push(format!("mounted at {}", self.mounts.join(", ")));
        }
        if !self.holders.is_empty() {
            parts.push(format!("held by {}", self.holders.join(", ")));
        }
        parts.join("; ")
    }
}

/// A block device's sysfs directory (`sys/dev/block/M:m` resolved), relative to the root.
fn sysfs_dir(fs: &RootFs, dev: DevNo) -> Option<std::path::PathBuf> {
    fs.resolve(format!("sys/dev/block/{}:{}", dev.0, dev.1))
        .ok()
}

fn read_dev(fs: &RootFs, rel: &Path) -> Option<DevNo> {
    let text = fs.read_opt_string(rel.join("dev")).ok()??;
    parse_devno(&text)
}

/// How a device found by [`related`] relates to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Relation {
    /// The destination itself.
    Itself,
    /// A partition of the destination disk.
    Partition,
    /// The whole disk the destination partition lies on.
    Disk,
}

/// The device, its partitions, and (for a partition) its whole disk, with sysfs names.
fn related(fs: &RootFs, dev: DevNo) -> Vec<(DevNo, String, Relation)> {
    let name = |d: DevNo| format!("{}:{}", d.0, d.1);
    let Some(dir) = sysfs_dir(fs, dev) else {
        return vec![(dev, name(dev), Relation::Itself)];
    };
    let own = dir
        .file_name()
        .map_or_else(|| name(dev), |n| n.to_string_lossy().into_owned());
    let mut out = vec![(dev, own, Relation::Itself)];
    if let Ok(entries) = std::fs::read_dir(fs.path(&dir)) {
        let mut parts: Vec<(DevNo, String, Relation)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().join("partition").exists())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                read_dev(fs, &dir.join(&n)).map(|d| (d, n, Relation::Partition))
            })
            .collect();
        parts.sort();
        out.extend(parts);
    }
    if fs.exists(dir.join("partition")) {
        if let Some(parent) = dir.parent() {
            if let Some(d) = read_dev(fs, parent) {
                let n = parent
                    .file_name()
                    .map_or_else(|| name(d), |n| n.to_string_lossy().into_owned());
                out.push((d, n, Relation::Disk));
            }
        }
    }
    out
}

/// Refuses to write to `path`, whose `stat` is `st`, when it is a block device that is
/// mounted or held ([`block_device_in_use`]); with `force` it may be written anyway,
/// and `notes` says so. Anything but a block device passes.
pub(crate) fn refuse_in_use(
    root: &Path,
    path: &Path,
    st: &Stat,
    force: bool,
    notes: &mut Vec<String>,
) -> Result<(), EndpointError> {
    if FileType::from_raw_mode(st.st_mode) != FileType::BlockDevice {
        return Ok(());
    }
    let dev = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
    let used = block_device_in_use(root, dev);
    if used.is_free() {
        return Ok(());
    }
    if !force {
        return Err(EndpointError::InUse {
            path: path.to_path_buf(),
            why: used.describe(),
        });
    }
    notes.push(format!(
        "--force: writing to {} although it is {}",
        path.display(),
        used.describe()
    ));
    Ok(())
}

/// Who holds block device `dev` according to the mountinfo and sysfs below `root`.
/// Missing files count as "nothing found": the `O_EXCL` open still runs.
pub fn block_device_in_use(root: &Path, dev: DevNo) -> InUse {
    let fs = RootFs::new(root);
    let mountinfo = fs
        .read("proc/self/mountinfo", p2pmem_model::limits::PROC_TABLE)
        .map(|b| parse_mountinfo(&b))
        .unwrap_or_default();
    let mut use_ = InUse {
        mounts: Vec::new(),
        holders: Vec::new(),
    };
    for (d, name, rel) in related(&fs, dev) {
        for m in mountinfo.iter().filter(|m| m.dev == d) {
            let via = if rel == Relation::Itself {
                String::new()
            } else {
                format!(", through {name}")
            };
            use_.mounts.push(format!(
                "{} ({}, {}{via})",
                m.mount_point, m.fstype, m.source
            ));
        }
        // A whole disk lists its partitions' users under the partitions, not here.
        if rel == Relation::Disk {
            continue;
        }
        if let Some(dir) = sysfs_dir(&fs, d) {
            if let Ok(entries) = std::fs::read_dir(fs.path(dir.join("holders"))) {
                let mut hs: Vec<String> = entries
                    .filter_map(Result::ok)
                    .map(|e| format!("{} (holds {name})", e.file_name().to_string_lossy()))
                    .collect();
                hs.sort();
                use_.holders.extend(hs);
            }
        }
    }
    use_
}

/// Where a block device starts on its whole disk: (whole disk, byte offset). A whole
/// disk, or one whose sysfs cannot be read, is its own disk at offset 0.
fn disk_and_start(fs: &RootFs, dev: DevNo) -> (DevNo, u64) {
    let Some(dir) = sysfs_dir(fs, dev) else {
        return (dev, 0);
    };
    if !fs.exists(dir.join("partition")) {
        return (dev, 0);
    }
    let start = fs
        .read_opt_string(dir.join("start"))
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u64>().ok());
    let parent = dir.parent().and_then(|p| read_dev(fs, p));
    match (parent, start) {
        // `start` is in 512-byte sectors whatever the logical block size.
        (Some(disk), Some(sectors)) => (disk, sectors.saturating_mul(512)),
        _ => (dev, 0),
    }
}

/// Where the source and destination ranges lie on one object, when they lie on the
/// same one: the same regular file, the same device, or partitions and the disk that
/// holds them. Returns the two ranges in the common object's coordinates.
pub fn common_object(
    root: &Path,
    src: &Endpoint,
    src_range: ByteRange,
    dst: &Endpoint,
    dst_range: ByteRange,
) -> Option<(ByteRange, ByteRange)> {
    let shift = |r: ByteRange, by: u64| ByteRange {
        start: r.start.saturating_add(by),
        end: r.end.saturating_add(by),
    };
    match (src.ident(), dst.ident()) {
        (Ident::File { dev: a, ino: i }, Ident::File { dev: b, ino: j }) => {
            (a == b && i == j).then_some((src_range, dst_range))
        }
        (Ident::Block { rdev: a }, Ident::Block { rdev: b }) => {
            let fs = RootFs::new(root);
            let (da, sa) = disk_and_start(&fs, a);
            let (db, sb) = disk_and_start(&fs, b);
            (da == db).then(|| (shift(src_range, sa), shift(dst_range, sb)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
31 27 7:0 / /mnt/with\\040space rw,relatime shared:9 - ext4 /dev/loop0 rw
32 27 259:5 / /data rw - xfs /dev/nvme1n1p1 rw
garbage line
33 27 x:y / /bad rw - ext4 /dev/bad rw
";

    #[test]
    fn mountinfo_fields_and_escapes() {
        let m = parse_mountinfo(MOUNTINFO.as_bytes());
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[1].dev, (259, 2));
        assert_eq!(m[1].mount_point, "/");
        assert_eq!(m[1].fstype, "ext4");
        assert_eq!(m[1].source, "/dev/nvme0n1p2");
        assert_eq!(m[2].mount_point, "/mnt/with space");
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert!(parse_mountinfo(b"\xff\xfe - \n - - -\n").is_empty());
    }

    /// A root with mountinfo and a sysfs for nvme1n1 (259:4) with partitions p1 (259:5)
    /// and p2 (259:6, held by dm-0), laid out as the kernel does.
    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("proc/self")).unwrap();
        std::fs::write(r.join("proc/self/mountinfo"), MOUNTINFO).unwrap();
        let disk = r.join("sys/devices/pci0000:00/0000:00:04.0/nvme/nvme1/nvme1n1");
        for (dir, dev, start) in [
            (disk.clone(), "259:4", None),
            (disk.join("nvme1n1p1"), "259:5", Some("2048")),
            (disk.join("nvme1n1p2"), "259:6", Some("4096")),
        ] {
            std::fs::create_dir_all(dir.join("holders")).unwrap();
            std::fs::write(dir.join("dev"), format!("{dev}\n")).unwrap();
            if let Some(s) = start {
                std::fs::write(dir.join("partition"), "1\n").unwrap();
                std::fs::write(dir.join("start"), format!("{s}\n")).unwrap();
            }
        }
        std::fs::create_dir_all(disk.join("nvme1n1p2/holders/dm-0")).unwrap();
        std::fs::create_dir_all(r.join("sys/dev/block")).unwrap();
        for (dev, rel) in [
            ("259:4", "nvme1n1"),
            ("259:5", "nvme1n1/nvme1n1p1"),
            ("259:6", "nvme1n1/nvme1n1p2"),
        ] {
            symlink(
                format!("../../devices/pci0000:00/0000:00:04.0/nvme/nvme1/{rel}"),
                r.join("sys/dev/block").join(dev),
            )
            .unwrap();
        }
        d
    }

    #[test]
    fn a_disk_with_a_mounted_partition_is_in_use() {
        let d = fixture();
        let u = block_device_in_use(d.path(), (259, 4));
        assert_eq!(
            u.mounts,
            vec!["/data (xfs, /dev/nvme1n1p1, through nvme1n1p1)".to_string()]
        );
        assert_eq!(u.holders, vec!["dm-0 (holds nvme1n1p2)".to_string()]);
        assert!(u.describe().starts_with("mounted at /data"), "{u:?}");
    }

    #[test]
    fn partitions_are_judged_alone_and_with_their_disk() {
        let d = fixture();
        let p1 = block_device_in_use(d.path(), (259, 5));
        assert_eq!(p1.mounts, vec!["/data (xfs, /dev/nvme1n1p1)".to_string()]);
        assert!(p1.holders.is_empty());
        let p2 = block_device_in_use(d.path(), (259, 6));
        assert!(p2.mounts.is_empty());
        assert_eq!(p2.holders, vec!["dm-0 (holds nvme1n1p2)".to_string()]);
    }

    #[test]
    fn mounted_by_mountinfo_alone() {
        let d = fixture();
        // 7:0 has no sysfs in the fixture: the mountinfo entry alone refuses it.
        let u = block_device_in_use(d.path(), (7, 0));
        assert_eq!(
            u.mounts,
            vec!["/mnt/with space (ext4, /dev/loop0)".to_string()]
        );
        let free = block_device_in_use(d.path(), (7, 1));
        assert!(free.is_free());
        assert_eq!(free.describe(), "");
        // No mountinfo at all: nothing found (the O_EXCL open remains).
        let empty = tempfile::tempdir().unwrap();
        assert!(block_device_in_use(empty.path(), (259, 4)).is_free());
    }

    #[test]
    fn partitions_map_onto_their_disk() {
        let d = fixture();
        let fs = RootFs::new(d.path());
        assert_eq!(disk_and_start(&fs, (259, 4)), ((259, 4), 0));
        assert_eq!(disk_and_start(&fs, (259, 5)), ((259, 4), 2048 * 512));
        assert_eq!(disk_and_start(&fs, (259, 6)), ((259, 4), 4096 * 512));
        assert_eq!(disk_and_start(&fs, (8, 0)), ((8, 0), 0));
    }
}
