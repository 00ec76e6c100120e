//! `diskferry-agent`: see `diskferry-agent --help`.

fn main() -> std::process::ExitCode {
    diskferry_agent::cli::main()
}
