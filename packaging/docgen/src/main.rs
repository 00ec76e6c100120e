//! `diskferry-docgen OUT`: the man pages (`OUT/man1/*.1`: each binary and
//! each of its subcommands) and shell completions (`OUT/completions/{bash,
//! zsh,fish}/...`) of `diskferry` and `diskferry-agent`, generated from the
//! same clap definitions the binaries parse with, so they cannot drift.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> std::process::ExitCode {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: diskferry-docgen OUT_DIR");
        return std::process::ExitCode::from(2);
    };
    match write_all(Path::new(&out)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn write_all(out: &Path) -> std::io::Result<()> {
    let commands = [
        diskferry::cli::Cli::command().name("diskferry"),
        diskferry_agent::cli::Cli::command().name("diskferry-agent"),
    ];
    let man = out.join("man1");
    std::fs::create_dir_all(&man)?;
    for cmd in &commands {
        man_pages(cmd, &man)?;
        for (shell, dir, file) in [
            (Shell::Bash, "bash", cmd.get_name().to_owned()),
            (Shell::Zsh, "zsh", format!("_{}", cmd.get_name())),
            (Shell::Fish, "fish", format!("{}.fish", cmd.get_name())),
        ] {
            let dir = out.join("completions").join(dir);
            std::fs::create_dir_all(&dir)?;
            let mut f = std::fs::File::create(dir.join(file))?;
            clap_complete::generate(shell, &mut cmd.clone(), cmd.get_name().to_owned(), &mut f);
        }
    }
    Ok(())
}

/// A page for `cmd` and, named `PARENT-SUB`, one for each subcommand below it.
fn man_pages(cmd: &clap::Command, dir: &Path) -> std::io::Result<()> {
    let name = cmd.get_name().to_owned();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(dir.join(format!("{name}.1")), page)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let full = format!("{name}-{}", sub.get_name());
        man_pages(&sub.clone().name(full), dir)?;
    }
    Ok(())
}
