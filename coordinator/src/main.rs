fn main() -> std::process::ExitCode {
    diskferry::cli::main()
}
