//! The one JSON convention (docs/json.md): every `--json` output that can run on the
//! fixture captures is JSON Lines, each line an object starting with `"schema": 1` and
//! `"document": KIND`, and every top-level field is documented under `## KIND`.

#![cfg(test)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `## kind` sections of docs/json.md, each with its text.
fn doc_sections() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("docs/json.md")).unwrap();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            out.push((h.trim().to_string(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// Run p2pmem with `args` and check every stdout line; returns the documents.
fn documents(root: &Path, args: &[&str], want_kind: &str) -> Vec<Value> {
    let o = Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .arg("--root")
        .arg(root)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(
        stdout.ends_with('\n'),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let sections = doc_sections();
    let mut docs = Vec::new();
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{args:?}: a line is not a JSON document ({e}): {line}"));
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("{args:?}: not an object"));
        // The envelope comes first (serde_json's map here sorts keys: read the text).
        assert!(
            line.starts_with(&format!(r#"{{"schema":1,"document":"{want_kind}","#)),
            "{args:?}: {line}"
        );
        let kind = v["document"].as_str().unwrap();
        assert_eq!(kind, want_kind, "{args:?}");
        let (_, body) = sections
            .iter()
            .find(|(h, _)| h == kind)
            .unwrap_or_else(|| panic!("docs/json.md has no `## {kind}` section"));
        // `imported` (an imported capture's note) is documented once, with the envelope.
        for k in obj
            .keys()
            .filter(|k| *k != "schema" && *k != "document" && *k != "imported")
        {
            assert!(
                body.contains(&format!("`{k}`")),
                "docs/json.md `## {kind}` does not document `{k}`"
            );
        }
        docs.push(v);
    }
    assert!(!docs.is_empty(), "{args:?}: no document");
    docs
}

#[test]
fn read_only_commands_print_documented_json_lines() {
    let root = repo().join("fixtures/truth/lab_default_k7.3/root");
    documents(&root, &["topo"], "topo");
    documents(&root, &["topo", "--matrix"], "topo_matrix");
    let check = documents(&root, &["check", "03:00.0", "04:00.0"], "check");
    let report: p2pmem_wire::check::CheckReport = serde_json::from_value(check[0].clone()).unwrap();
    assert_eq!(report.supported, Some(true));
    assert_eq!(report.devices.len(), 2);
    documents(&root, &["check", "03:00.0", "05:00.0"], "check");
    documents(&root, &["find", "nvme1n1"], "find");
    documents(&root, &["doctor"], "doctor");
    documents(&root, &["fio-job", "03:00.0", "nvme1n1"], "fio_job");
    documents(&root, &["fio-job", "03:00.0", "nvme2n1"], "fio_job");
    let plan = documents(
        &root,
        &[
            "plan",
            "--flow",
            "nvme0n1:nvme1n1:rate=1G/s",
            "--link-default",
            "gen3x4",
        ],
        "plan",
    );
    assert_eq!(plan[0]["flows"][0]["path"], "p2p");
    assert_eq!(
        plan[0]["without_p2p"]["host_memory_bytes_per_s"],
        2u64 << 30
    );
    let design = repo().join("examples/designs/box24-x4.toml");
    let plan = documents(
        &root,
        &["plan", "--design", design.to_str().unwrap()],
        "plan",
    );
    assert_eq!(plan[0]["host_memory_bytes_per_s"], 0);
    assert!(plan[0]["without_p2p"]["max_scale"].as_f64().unwrap() < 1.0);
    let d = tempfile::tempdir().unwrap();
    let cap = d.path().join("cap");
    documents(&root, &["capture", cap.to_str().unwrap()], "capture");
}

#[test]
fn copy_and_bench_print_one_documented_line() {
    let root = repo().join("fixtures/truth/lab_default_k7.3/root");
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src.img");
    std::fs::write(&src, vec![5u8; 1 << 20]).unwrap();
    let dst = d.path().join("dst.img");
    let (s, t) = (src.to_str().unwrap(), dst.to_str().unwrap());
    let docs = documents(&root, &["copy", "--via", "host", "--verify", s, t], "copy");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["verified"], true);
    // The typed document the lab reads still reads back, envelope and all.
    let copy: p2pmem_wire::copy::CopyDocument = serde_json::from_value(docs[0].clone()).unwrap();
    assert_eq!(copy.verified, Some(true));
    assert_eq!(copy.payload_bytes, 1 << 20);
    let docs = documents(
        &root,
        &["bench", "--via", "host", "--time", "0.2", s],
        "bench",
    );
    assert_eq!(docs.len(), 1);
}

#[test]
fn nvmet_status_and_check_print_documented_json_lines() {
    let d = tempfile::tempdir().unwrap();
    let cp = |src: PathBuf| {
        assert!(Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", src.display()))
            .arg(d.path())
            .status()
            .unwrap()
            .success());
        assert!(Command::new("chmod")
            .args(["-R", "u+w"])
            .arg(d.path())
            .status()
            .unwrap()
            .success());
    };
    cp(repo().join("fixtures/truth/s01_switch_cmbmix_fam15/root"));
    cp(repo().join("fixtures/nvmet/s01_target/root"));
    documents(d.path(), &["nvmet", "status"], "nvmet_status");
    documents(d.path(), &["nvmet", "check"], "nvmet_check");
}

#[test]
fn every_kind_the_code_prints_has_a_section() {
    let sections = doc_sections();
    let src = repo().join("crates/p2pmem-cli/src");
    let mut kinds = Vec::new();
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for pat in ["print_json(", "doc::line("] {
                for (i, _) in text.match_indices(pat) {
                    let rest = text[i + pat.len()..].trim_start();
                    let Some(rest) = rest.strip_prefix('"') else {
                        continue; // the definition, not a call
                    };
                    kinds.push(rest[..rest.find('"').unwrap()].to_string());
                }
            }
        }
    }
    assert!(kinds.len() >= 20, "{kinds:?}");
    for k in kinds {
        assert!(
            sections.iter().any(|(h, _)| *h == k),
            "`{k}` is printed but docs/json.md has no `## {k}`"
        );
    }
}

#[test]
fn an_import_and_the_commands_on_its_capture_print_documented_json_lines() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("imported");
    let file = repo().join("fixtures/lspci/lab_multifunction_acs.vvv-xxxx.txt");
    let (file, dir_s) = (file.display().to_string(), dir.display().to_string());
    let args = [
        "import",
        "lspci",
        &file,
        &dir_s,
        "--kernel",
        "6.12.117",
        "--provider",
        "0000:01:00.0=16M",
    ];
    let imp = documents(Path::new("/"), &args, "import");
    assert_eq!(imp[0]["note"]["kernel"], "6.12.117");
    assert!(imp[0]["note"]["cpu_vendor"].is_null());
    let docs_text = std::fs::read_to_string(repo().join("docs/json.md")).unwrap();
    for k in imp[0]["note"].as_object().unwrap().keys() {
        assert!(docs_text.contains(&format!("`{k}`")), "note field {k}");
    }
    for (args, kind) in [
        (&["topo"][..], "topo"),
        (&["topo", "--matrix"][..], "topo_matrix"),
        (&["doctor"][..], "doctor"),
    ] {
        let docs = documents(&dir, args, kind);
        assert_eq!(docs[0]["imported"]["from"], "lspci", "{args:?}");
    }
}
