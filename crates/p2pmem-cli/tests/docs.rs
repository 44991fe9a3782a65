//! Shell completions and man pages, generated from the clap definition: every shell gets
//! a script that names the subcommands (and parses, where the shell is installed), every
//! visible subcommand gets a page, and the pages render with `man -l`. scripts/install
//! puts them under a prefix.

#![cfg(test)]

use p2pmem_linux::testing::skipped;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn p2pmem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_p2pmem"))
        .args(args)
        .output()
        .unwrap()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn completions_for_each_shell_name_the_subcommands() {
    for (shell, syntax_check) in [("bash", "bash"), ("zsh", "zsh"), ("fish", "fish")] {
        let o = p2pmem(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}");
        let script = String::from_utf8(o.stdout).unwrap();
        assert!(script.len() > 1000, "{shell}: {script}");
        for sub in ["topo", "check", "find", "doctor", "nvmet", "completions"] {
            assert!(script.contains(sub), "{shell} script lacks {sub}");
        }
        assert!(
            script.contains("--matrix"),
            "{shell} script lacks topo --matrix"
        );
        if have(syntax_check) {
            let d = tempfile::tempdir().unwrap();
            let f = d.path().join("p2pmem.completion");
            std::fs::write(&f, &script).unwrap();
            let o = Command::new(syntax_check)
                .arg("-n")
                .arg(&f)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{shell} -n: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        } else if shell == "bash" {
            skipped("bash is not installed: the bash completion script was not parsed");
        }
    }
    let o = p2pmem(&["completions", "powershell-or-not"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("possible values"));
}

fn pages(dir: &Path) -> Vec<PathBuf> {
    let o = p2pmem(&["man", dir.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn man_pages_for_p2pmem_and_every_visible_subcommand() {
    let d = tempfile::tempdir().unwrap();
    let pages = pages(d.path());
    let names: Vec<String> = pages
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "p2pmem.1",
        "p2pmem-topo.1",
        "p2pmem-check.1",
        "p2pmem-doctor.1",
        "p2pmem-nvmet-ns-add.1",
        "p2pmem-lab-demo.1",
        "p2pmem-completions.1",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert!(!names
        .iter()
        .any(|n| n.contains("agent") || n.contains("-man")));
    for p in &pages {
        let roff = std::fs::read_to_string(p).unwrap();
        assert!(roff.contains(".TH "), "{}", p.display());
    }
    let top = std::fs::read_to_string(d.path().join("p2pmem-topo.1")).unwrap();
    assert!(top.contains("matrix"), "{top}");
    // Without DIR: p2pmem.1 on stdout.
    let o = p2pmem(&["man"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(".TH p2pmem 1"));

    if !have("man") {
        skipped("man is not installed (scripts/setup-host installs man-db): pages not rendered");
        return;
    }
    for page in ["p2pmem.1", "p2pmem-topo.1", "p2pmem-nvmet-ns-add.1"] {
        let o = Command::new("man")
            .arg("-l")
            .arg(d.path().join(page))
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "man -l {page}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
        if page == "p2pmem-topo.1" {
            assert!(text.contains("p2pmem topo ["), "{text}");
        }
    }
}

#[test]
fn install_script_puts_binary_pages_and_completions_under_destdir_and_prefix() {
    let d = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let o = Command::new("bash")
        .arg(repo.join("scripts/install"))
        .args([
            "--bin",
            env!("CARGO_BIN_EXE_p2pmem"),
            "--prefix",
            "/opt/p2p",
        ])
        .env("DESTDIR", d.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let root = d.path().join("opt/p2p");
    for f in [
        "bin/p2pmem",
        "share/man/man1/p2pmem.1.gz",
        "share/man/man1/p2pmem-topo.1.gz",
        "share/bash-completion/completions/p2pmem",
        "share/zsh/site-functions/_p2pmem",
        "share/fish/vendor_completions.d/p2pmem.fish",
        "share/doc/p2pmem/json.md",
    ] {
        let p = root.join(f);
        assert!(
            std::fs::metadata(&p).is_ok_and(|m| m.len() > 0),
            "{} missing",
            p.display()
        );
    }
    let o = Command::new(root.join("bin/p2pmem"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("p2pmem "));
    let o = Command::new("bash")
        .arg(repo.join("scripts/install"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn debian_package_of_the_static_binary_holds_pages_and_completions() {
    // The package ships the static binary that scripts/test builds (P2PMEM_BIN).
    let Some(bin) = std::env::var_os("P2PMEM_BIN") else {
        skipped("P2PMEM_BIN is not set (P2PMEM_BIN=$(scripts/build-static)): no package built");
        return;
    };
    if !have("dpkg-deb") {
        skipped("dpkg-deb is not installed (scripts/setup-host installs dpkg-dev)");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let o = Command::new("bash")
        .arg(repo.join("scripts/build-deb"))
        .arg("--bin")
        .arg(&bin)
        .arg("--out")
        .arg(d.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let deb = PathBuf::from(stdout.lines().last().unwrap().trim());
    assert!(deb.starts_with(d.path()), "{}", deb.display());
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("p2pmem_") && name.ends_with(".deb"),
        "{name}"
    );
    let info = Command::new("dpkg-deb")
        .arg("--field")
        .arg(&deb)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Package: p2pmem"), "{info}");
    assert!(
        !info.contains("Depends:"),
        "a static binary depends on nothing: {info}"
    );
    let list = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for f in [
        "./usr/bin/p2pmem",
        "./usr/share/man/man1/p2pmem.1.gz",
        "./usr/share/man/man1/p2pmem-topo.1.gz",
        "./usr/share/bash-completion/completions/p2pmem",
        "./usr/share/zsh/vendor-completions/_p2pmem",
        "./usr/share/fish/vendor_completions.d/p2pmem.fish",
        "./usr/share/doc/p2pmem/copyright",
    ] {
        assert!(list.contains(f), "{f} not in\n{list}");
    }
    assert!(list.contains("root/root"), "owned by root: {list}");
}

/// The hidden subcommands (`agent`, for the lab's guest, and `man`, for scripts/install)
/// are not offered by any shell; the visible ones are.
#[test]
fn completions_offer_no_hidden_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let o = p2pmem(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}");
        let script = String::from_utf8(o.stdout).unwrap();
        for hidden in ["agent", "man"] {
            let offered = [
                // bash: the word list and the case arm of the subcommand.
                format!(" {hidden} "),
                format!("p2pmem,{hidden})"),
                format!("__subcmd__{hidden}"),
                // zsh: `'NAME:description'` and the `(NAME)` state.
                format!("'{hidden}:"),
                format!("({hidden})"),
                // fish: `-a "NAME"` and its own options.
                format!("-a \"{hidden}\""),
                format!("using_subcommand {hidden}"),
            ];
            let top_opts = script
                .lines()
                .find(|l| l.contains("opts=\"-h -V"))
                .unwrap_or_default();
            for pattern in &offered {
                let hit = if pattern.starts_with(' ') {
                    top_opts.contains(pattern.as_str())
                } else {
                    script.contains(pattern.as_str())
                };
                assert!(!hit, "{shell} offers the hidden `{hidden}`: {pattern}");
            }
        }
        for visible in ["topo", "fio-job", "check", "completions"] {
            let offered = match shell {
                "bash" => format!(" {visible} "),
                "zsh" => format!("'{visible}:"),
                _ => format!("-a \"{visible}\""),
            };
            assert!(
                script.contains(&offered),
                "{shell} does not offer `{visible}` ({offered})"
            );
        }
    }
}
