//! Printing that never panics: `outln!` and `errln!` are `println!` and `eprintln!` that ignore a
//! closed stream (`lepus-demo | head`), so a reader that goes away cannot skip the clean-up.

use std::fmt;
use std::io::Write;

/// Writes one line to standard output, ignoring errors.
macro_rules! outln {
    () => { $crate::console::write_line(false, format_args!("")) };
    ($($arg:tt)*) => { $crate::console::write_line(false, format_args!($($arg)*)) };
}

/// Writes one line to standard error, ignoring errors.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::console::write_line(true, format_args!($($arg)*)) };
}

pub(crate) use {errln, outln};

/// Writes `line` and a line feed to standard error (`to_stderr`) or standard output.
pub(crate) fn write_line(to_stderr: bool, line: fmt::Arguments<'_>) {
    let written = if to_stderr {
        writeln!(std::io::stderr().lock(), "{line}")
    } else {
        writeln!(std::io::stdout().lock(), "{line}")
    };
    drop(written);
}
