//! `lepus`: one command for operating Lepus (see `lepus --help`).

fn main() -> std::process::ExitCode {
    lepus_cli::main()
}
