//! `lepus-worker`: a worker process running the demo jobs (`demo.add`, `demo.echo`, `demo.sleep`,
//! `demo.fail`, `demo.noop`) with the standard command line. See `lepus-worker --help`.

fn main() -> std::process::ExitCode {
    lepus_worker::cli::main(lepus_demo::jobs::register)
}
