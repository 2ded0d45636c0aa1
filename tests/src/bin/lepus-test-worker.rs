//! The worker the integration tests start: `lepus-worker`'s command line with the demo jobs and
//! the tests' own jobs.

fn main() -> std::process::ExitCode {
    lepus_worker::cli::main(lepus_tests::register_jobs)
}
