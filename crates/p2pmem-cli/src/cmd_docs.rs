//! `p2pmem completions SHELL` and `p2pmem man [DIR]`: shell completion scripts and man
//! pages generated from the clap definition itself, so they never drift from `--help`.

use anyhow::Context;
use clap::{Args, Command, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The shells `completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash (bash-completion): `/usr/share/bash-completion/completions/p2pmem`.
    Bash,
    /// zsh: `_p2pmem` in a directory of `$fpath` (`/usr/share/zsh/vendor-completions`).
    Zsh,
    /// fish: `/usr/share/fish/vendor_completions.d/p2pmem.fish`.
    Fish,
}

/// Arguments of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    pub shell: Shell,
}

/// Arguments of `man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write p2pmem.1 and one page per subcommand (p2pmem-topo.1, p2pmem-nvmet-ns.1, ...)
    /// into DIR (created if missing). Without DIR, print p2pmem.1 on stdout.
    pub dir: Option<PathBuf>,
}

/// `cmd` without its hidden subcommands, at every level. clap_complete offers hidden
/// subcommands in some shells (bash lists them in its `opts`, fish and zsh describe
/// them), and clap cannot remove a subcommand, so a command that has hidden ones is
/// rebuilt from what completion reads: names, help texts, arguments, groups and the
/// visible subcommands.
fn without_hidden(cmd: Command) -> Command {
    let mut cmd = if cmd.get_subcommands().any(Command::is_hide_set) {
        let mut out = Command::new(cmd.get_name().to_string())
            .subcommand_required(cmd.is_subcommand_required_set())
            .disable_help_subcommand(cmd.is_disable_help_subcommand_set());
        if let Some(v) = cmd.get_version() {
            out = out.version(v.to_string());
        }
        if let Some(a) = cmd.get_about() {
            out = out.about(a.clone());
        }
        if let Some(a) = cmd.get_long_about() {
            out = out.long_about(a.clone());
        }
        for a in cmd.get_arguments() {
            out = out.arg(a.clone());
        }
        for g in cmd.get_groups() {
            out = out.group(g.clone());
        }
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            out = out.subcommand(sub.clone());
        }
        out
    } else {
        cmd
    };
    for sub in cmd.get_subcommands_mut() {
        *sub = without_hidden(std::mem::take(sub));
    }
    cmd
}

/// The completion script for `shell`, which offers no hidden subcommand.
pub fn completions(cmd: &mut Command, shell: Shell) -> Vec<u8> {
    let cmd = &mut without_hidden(cmd.clone());
    let mut out = Vec::new();
    let name = cmd.get_name().to_string();
    match shell {
        Shell::Bash => clap_complete::generate(clap_complete::Shell::Bash, cmd, name, &mut out),
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, cmd, name, &mut out),
        Shell::Fish => clap_complete::generate(clap_complete::Shell::Fish, cmd, name, &mut out),
    }
    out
}

/// Run `completions`.
pub fn run_completions(mut cmd: Command, args: &CompletionsArgs) -> anyhow::Result<i32> {
    let script = completions(&mut cmd, args.shell);
    std::io::stdout()
        .lock()
        .write_all(&script)
        .context("writing the completion script")?;
    Ok(0)
}

/// One man page in roff.
fn page(cmd: &Command) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut out)
        .with_context(|| format!("rendering the man page of {}", cmd.get_name()))?;
    Ok(out)
}

/// Every page: `(file name, roff)` for the command and, recursively, its visible
/// subcommands (`p2pmem-nvmet-ns.1`). Hidden subcommands get no page.
pub fn pages(cmd: &Command) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut cmd = cmd.clone();
    cmd.build();
    collect(cmd, &mut out)?;
    Ok(out)
}

/// Pages are named as git names its own (`p2pmem-nvmet-ns(1)`), and their synopsis
/// spells the command as it is typed (`p2pmem nvmet ns`).
fn collect(cmd: Command, out: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    let name = cmd.get_name().to_string();
    let typed = cmd
        .get_bin_name()
        .map(str::to_string)
        .unwrap_or_else(|| name.clone());
    out.push((format!("{name}.1"), page(&cmd)?));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let full = format!("{name}-{}", sub.get_name());
        let sub = sub
            .clone()
            .bin_name(format!("{typed} {}", sub.get_name()))
            .display_name(full.clone())
            .name(full);
        collect(sub, out)?;
    }
    Ok(())
}

/// Run `man`.
pub fn run_man(mut cmd: Command, args: &ManArgs) -> anyhow::Result<i32> {
    cmd.build();
    match &args.dir {
        None => {
            std::io::stdout()
                .lock()
                .write_all(&page(&cmd)?)
                .context("writing the man page")?;
        }
        Some(dir) => write_pages(&cmd, dir)?,
    }
    Ok(0)
}

fn write_pages(cmd: &Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pages = pages(cmd)?;
    for (name, roff) in &pages {
        let path = dir.join(name);
        std::fs::write(&path, roff).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "p2pmem: wrote {} man pages into {}",
        pages.len(),
        dir.display()
    );
    Ok(())
}
