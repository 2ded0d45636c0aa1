//! The `lepus` command line, built next to the tests (see `lepus_tests::cli_binary`).

fn main() -> std::process::ExitCode {
    lepus_cli::main()
}
