//! The scheduler the integration tests start: the `lepus-scheduler` command line.

fn main() -> std::process::ExitCode {
    lepus_scheduler::cli::main()
}
