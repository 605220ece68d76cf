//! Writes the man pages of arkouda-push-agent, generated from the command-line definition
//! (`arkouda_push_agent::cli::Cli`) with clap_mangen, so they never disagree with `--help`:
//! `arkouda-push-agent.1` and one page per subcommand (`arkouda-push-agent-sweep.1`, …),
//! which the top page names in its SUBCOMMANDS section.
//!
//!     cargo run --example gen-man -- OUT_DIR     # scripts/build-deb.sh does
//!
//! An example rather than a build script: the CLI lives in the library, which a build
//! script cannot use, and the pages are needed only to package.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

fn write_page(dir: &Path, cmd: &clap::Command) -> std::io::Result<PathBuf> {
    // After `build`, a subcommand's display name is `PARENT-SUB`, the page's name.
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    std::fs::write(&path, buf)?;
    Ok(path)
}

/// The page of `cmd`, then of each subcommand (recursively).
fn write_all(dir: &Path, cmd: &clap::Command, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    out.push(write_page(dir, cmd)?);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_all(dir, sub, out)?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: gen-man OUT_DIR")?;
    std::fs::create_dir_all(&dir)?;
    let mut cmd = arkouda_push_agent::cli::Cli::command();
    // Fills in what the derive leaves to parse time (help subcommand, version flag).
    cmd.build();
    let mut written = Vec::new();
    write_all(&dir, &cmd, &mut written)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}
