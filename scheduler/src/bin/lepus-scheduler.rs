//! `lepus-scheduler`: run a scheduler replica, check a schedule file, or enqueue jobs and
//! batches. See `lepus-scheduler --help`.

fn main() -> std::process::ExitCode {
    lepus_scheduler::cli::main()
}
