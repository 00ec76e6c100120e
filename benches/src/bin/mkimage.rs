//! `mkimage`: make or change deterministic sparse disk images for tests,
//! demos and benchmarks. See `mkimage --help`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "mkimage", about = "Make or change deterministic sparse disk images (1 MiB extents).")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create an image: RANDOM% random extents, TEXT% text-like, the rest holes.
    New {
        out: PathBuf,
        /// Size in MiB.
        #[arg(long)]
        size_mib: u64,
        #[arg(long, default_value_t = 25)]
        random: u64,
        #[arg(long, default_value_t = 10)]
        text: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Rewrite PERCENT of the image's 1 MiB extents with new random data.
    Mutate {
        image: PathBuf,
        #[arg(long)]
        percent: f64,
        #[arg(long, default_value_t = 2)]
        seed: u64,
        /// Percent of the rewritten extents filled with text-like bytes instead.
        #[arg(long, default_value_t = 0)]
        text: u64,
        /// Also write the new bytes of the rewritten extents, in disk order, to FILE.
        #[arg(long, value_name = "FILE")]
        dump: Option<PathBuf>,
    },
    /// Write the image's non-zero 1 MiB extents, in disk order, to OUT.
    Data { image: PathBuf, out: PathBuf },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::New { out, size_mib, random, text, seed } => {
            anyhow::ensure!(random + text <= 100, "random + text must be at most 100");
            diskferry_bench::generate(&out, size_mib << 20, diskferry_bench::Mix { random, text }, seed)?;
            println!("{}: {size_mib} MiB, {random}% random, {text}% text, rest holes", out.display());
        }
        Cmd::Mutate { image, percent, seed, text, dump } => {
            anyhow::ensure!(text <= 100, "--text is a percentage");
            let n = diskferry_bench::mutate_mixed(&image, percent, text, seed, dump.as_deref())?;
            println!("{}: {n} extents of 1 MiB rewritten", image.display());
        }
        Cmd::Data { image, out } => {
            let n = diskferry_bench::data_extents(&image, &out)?;
            println!("{}: {n} bytes of data extents", out.display());
        }
    }
    Ok(())
}
