//! Lab tier: boots the lab kernel under QEMU (TCG) and runs commands in the guest through
//! `p2pmem lab run`. Needs scripts/setup-host, and P2PMEM_BIN pointing at the static
//! binary; scripts/test runs these with `--include-ignored`.

#![cfg(test)]

mod lab_common;

use lab_common::{guest_sh, p2pmem};

const LAB: &str = "lab tier: boots the lab kernel under QEMU; scripts/test runs it";

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn kernel_is_built_or_cached_and_has_p2pdma() {
    let out = p2pmem(&["lab", "kernel"]);
    assert_eq!(out.status.code(), Some(0), "{LAB}");
    let path = String::from_utf8(out.stdout).unwrap();
    let path = std::path::Path::new(path.trim());
    assert!(path.ends_with("bzImage"), "{}", path.display());
    assert!(std::fs::metadata(path).unwrap().len() > 1_000_000);
    let config = std::fs::read_to_string(path.with_file_name("config")).unwrap();
    let has = |line: &str| config.lines().any(|l| l == line);
    assert!(has("CONFIG_PCI_P2PDMA=y"));
    // The Intel IOMMU is built in but off unless the command line says intel_iommu=on
    // (topologies with iommu = "intel"), so this one kernel serves both.
    assert!(has("CONFIG_IOMMU_SUPPORT=y"));
    assert!(has("CONFIG_INTEL_IOMMU=y"));
    assert!(has("CONFIG_INTEL_IOMMU_DEFAULT_OFF=y"));
    assert!(has("# CONFIG_INTEL_IOMMU_DEFAULT_ON is not set"));
    // The default line is 6.12, the one the p2pmem_pci driver (Rust) is built for.
    assert!(has("CONFIG_RUST=y"));
    assert!(config.contains("Linux/x86 6.12."), "not a 6.12 config");
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn every_pinned_line_builds_and_boots() {
    // 6.12 is the default the other tests boot; these are built (8-30 min each on 2
    // cores) or taken from the cache.
    for (line, release) in [("6.1", "6.1.192"), ("7.2", "7.2.13"), ("7.3", "7.3.4")] {
        let out = p2pmem(&[
            "lab",
            "run",
            "--kernel",
            line,
            "--topology",
            "rootports_max",
            "--",
            "cat",
            "/proc/sys/kernel/osrelease",
        ]);
        assert_eq!(out.status.code(), Some(0), "{line}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), release);
        // The p2pmem_pci driver is built with Rust on 6.12 and 7.3 only.
        let err = String::from_utf8_lossy(&out.stderr);
        let not_built = format!("p2pmem_pci is not built for kernel {line}");
        assert_eq!(err.contains(&not_built), line != "7.3", "{line}: {err}");
    }
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn the_iommu_topology_turns_the_iommu_on_and_keeps_the_bdfs() {
    let script = "cat /proc/cmdline; ls /sys/class/iommu; for c in /sys/class/nvme/*; do echo \"$(tr -d ' ' < \"$c/serial\") $(basename \"$(readlink -f \"$c/device\")\")\"; done | sort";
    let out = guest_sh("rootports_iommu", script);
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("console=ttyS0 panic=-1 intel_iommu=on"),
        "{out}"
    );
    assert!(lines.next().is_some_and(|l| l.starts_with("dmar")), "{out}");
    let rest: Vec<&str> = lines.collect();
    assert_eq!(rest, ["rpA 0000:01:00.0", "rpB 0000:02:00.0"], "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn run_prints_cmdline_and_passes_exit_status_and_stderr() {
    let out = p2pmem(&[
        "lab",
        "run",
        "--topology",
        "rootports_max",
        "--",
        "cat",
        "/proc/cmdline",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "console=ttyS0 panic=-1\n"
    );

    let out = p2pmem(&[
        "lab",
        "run",
        "--topology",
        "rootports_max",
        "--",
        "sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-stdout\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-stderr\n"));
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn switch_topology_publishes_cmb_p2pmem_with_deterministic_bdfs() {
    let script = r#"
for d in /sys/bus/pci/devices/*; do
  if [ -d "$d/p2pmem" ]; then
    echo "$(basename "$d") $(cat "$d/p2pmem/size") $(cat "$d/p2pmem/available") $(cat "$d/p2pmem/published") $(ls "$d/p2pmem" | tr '\n' ' ')"
  fi
done
for b in /sys/block/nvme*; do
  ctrl=$(basename "$(readlink -f "$b/device")")
  echo "blk $(cat /sys/class/nvme/$ctrl/serial | tr -d ' ') $(basename "$(readlink -f "/sys/class/nvme/$ctrl/device")") $(head -n 1 "/dev/$(basename "$b")")"
done
"#;
    let out = guest_sh("switch", script);
    let lines: Vec<&str> = out.lines().collect();
    let providers: Vec<&str> = lines
        .iter()
        .filter(|l| !l.starts_with("blk "))
        .copied()
        .collect();
    assert_eq!(
        providers,
        [
            "0000:03:00.0 16777216 16711680 1 allocate available published size ",
            "0000:04:00.0 16777216 16711680 1 allocate available published size ",
        ],
        "{out}"
    );
    // Each namespace holds its device's pattern, at the BDF the topology implies.
    for (serial, bdf) in [
        ("swA", "0000:03:00.0"),
        ("swB", "0000:04:00.0"),
        ("swC", "0000:05:00.0"),
    ] {
        let want = format!("blk {serial} {bdf} p2pmem-lab serial={serial} sector=0");
        assert!(
            lines.iter().any(|l| l.starts_with(&want)),
            "{want:?} not in\n{out}"
        );
    }
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn acs_topology_passes_config_acs_and_the_kernel_applies_it() {
    let out = guest_sh(
        "multifunction_acs",
        "cat /proc/cmdline; dmesg | grep -c 'Configured ACS'",
    );
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("console=ttyS0 panic=-1 pci=config_acs=11xx@0000:00:07.0")
    );
    assert_eq!(lines.next(), Some("1"), "{out}");
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn cpu_override_reaches_the_guest() {
    let out = p2pmem(&[
        "lab",
        "run",
        "--topology",
        "rootports_max",
        "--cpu",
        "max,family=23",
        "--",
        "grep",
        "-m1",
        "cpu family",
        "/proc/cpuinfo",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": 23"));
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn guest_timeout_is_an_error_with_the_console_tail() {
    let out = p2pmem(&[
        "lab",
        "run",
        "--topology",
        "rootports_max",
        "--timeout",
        "20",
        "--",
        "sleep",
        "600",
    ]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timed out after 20 s"), "{err}");
    assert!(err.contains("last console lines"), "{err}");
}

#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn nested_switches_get_the_documented_bdfs() {
    let script = r#"for c in /sys/class/nvme/*; do
  d=$(readlink -f "$c/device")
  echo "$(tr -d ' ' < "$c/serial") $(basename "$d") $([ -d "$d/p2pmem" ] && echo p2pmem || echo client)"
done | sort"#;
    let out = guest_sh("nested", script);
    assert_eq!(
        out,
        "inA 0000:05:00.0 p2pmem\ninB 0000:06:00.0 client\noutC 0000:07:00.0 p2pmem\n"
    );
}

/// `lab plan FILE`: a plan written as JSON (as scripts/bench --lab writes it) runs step by
/// step, one `NAME<TAB>STATUS<TAB>SECONDS<TAB>SUMMARY` line each; a failed step makes
/// the exit status 1 and later steps still run.
#[test]
#[ignore = "lab tier: boots the lab kernel under QEMU; scripts/test runs it"]
fn lab_plan_runs_a_json_plan_and_reports_each_step() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"{"version":1,"steps":[
  {"name":"head","step":{"op":"exec","argv":["head","-c","30",{"dev":{"nvme":"0000:04:00.0"}}]}},
  {"name":"dd","step":{"op":"exec","argv":["dd",{"dev":{"nvme":"0000:05:00.0"},"prefix":"if="},"of=/dev/null","bs=4096","count=1"]}},
  {"name":"missing","step":{"op":"hash","dev":{"nvme":"0000:09:00.0"},"offset":0,"len":4096}},
  {"name":"hash","step":{"op":"hash","dev":{"nvme":"0000:03:00.0"},"offset":0,"len":65536}}
]}"#,
    )
    .unwrap();
    let plan = plan.to_string_lossy().into_owned();
    let out = p2pmem(&["lab", "plan", "--topology", "switch", &plan]);
    assert_eq!(out.status.code(), Some(1), "one step fails");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(names, ["head", "dd", "missing", "hash"], "{text}");
    assert_eq!(rows[0][1..2], ["done"]);
    assert_eq!(rows[0][3], "exit 0", "{text}");
    assert_eq!(rows[1][3], "exit 0", "{text}");
    assert_eq!(rows[2][1], "failed", "{text}");
    assert!(
        rows[2][3].contains("0000:09:00.0 has no NVMe namespace"),
        "{text}"
    );
    assert_eq!(rows[3][1], "done", "{text}");
    assert!(
        rows[3][3].starts_with("sha256 ") && rows[3][3].len() == 7 + 64,
        "{text}"
    );
    assert!(rows.iter().all(|r| r[2].parse::<f64>().is_ok()), "{text}");

    // --json: the step reports themselves; the exec's stdout is the device's pattern.
    let out = p2pmem(&["--json", "lab", "plan", "--topology", "switch", &plan]);
    let reports: Vec<p2pmem_wire::StepReport> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 4);
    match &reports[0].result {
        p2pmem_wire::StepResult::Done { output } => match output.as_ref() {
            p2pmem_wire::Output::Exec(e) => {
                assert_eq!(e.stdout, "p2pmem-lab serial=swB sector=0", "{e:?}");
                assert!(e.argv[3].starts_with("/dev/nvme"), "{e:?}");
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}
