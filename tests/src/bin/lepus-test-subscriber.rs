//! The subscriber the events tests start: one service's subscription (see
//! `lepus_tests::subscriber_main`), recording what it handles in a file.

fn main() -> std::process::ExitCode {
    lepus_tests::subscriber_main()
}
