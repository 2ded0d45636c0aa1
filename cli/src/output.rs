//! How `lepus` prints: a table for people (columns aligned, `-` for what is unknown) or, with
//! `--json`, one JSON document for scripts. Progress of long operations goes to standard error.

use serde_json::Value;
use std::io::Write;

/// Prints a line on standard output; a closed pipe (`lepus status | head`) ends the program
/// quietly rather than with a panic.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::line(&format!($($arg)*)) };
}
pub(crate) use out;

/// Writes `text` and a newline to standard output; exits 0 if the reader went away.
pub(crate) fn line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{text}")
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Rows of named columns, printed as a table or as a JSON array of objects.
#[derive(Debug)]
pub(crate) struct Table {
    columns: Vec<&'static str>,
    rows: Vec<Vec<Value>>,
}

impl Table {
    pub(crate) fn new(columns: &[&'static str]) -> Self {
        Self { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row, one value per column.
    pub(crate) fn row(&mut self, values: Vec<Value>) {
        self.rows.push(values);
    }

    /// Prints the table, or the rows as JSON objects.
    pub(crate) fn print(&self, json: bool) {
        if json {
            let rows: Vec<Value> = self
                .rows
                .iter()
                .map(|row| {
                    Value::Object(self.columns.iter().map(|c| (*c).to_owned()).zip(row.iter().cloned()).collect())
                })
                .collect();
            print_json(&Value::from(rows));
            return;
        }
        let cells: Vec<Vec<String>> = self.rows.iter().map(|row| row.iter().map(cell).collect()).collect();
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<String>| {
            let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            line(padded.join("  ").trim_end());
        };
        line(self.columns.iter().map(|c| c.to_uppercase()).collect());
        for row in cells {
            line(row);
        }
    }
}

/// A value as a table shows it: text as is, `null` as `-`, lists joined with commas.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Prints `value` as indented JSON.
pub(crate) fn print_json(value: &Value) {
    line(&serde_json::to_string_pretty(value).unwrap_or_default());
}

/// Shows `done` of `total` on standard error, on one line rewritten in place.
pub(crate) fn progress(what: &str, done: usize, total: usize) {
    let mut err = std::io::stderr();
    drop(write!(err, "\r{what}: {done}/{total}"));
    if done >= total {
        drop(writeln!(err));
    }
    drop(err.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_show_nothing_known_as_a_dash_and_lists_joined() {
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&serde_json::json!(["a", "b"])), "a,b");
        assert_eq!(cell(&serde_json::json!(3)), "3");
    }
}
