//! Logging set-up with tracing-subscriber: human-readable lines by default, one JSON object per
//! line on request; colours only on a terminal. `RUST_LOG` filters (default [`DEFAULT_FILTER`]). Job spans carry `job.id` and `job.name`,
//! so every line logged inside a job names it in both formats.

use std::io::IsTerminal;
use std::str::FromStr;
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" | "human" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use `text` or `json`")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The filter used when `RUST_LOG` is not set. lapin's own log lines are off: it logs expected
/// events (a standby scheduler's refused lock, a channel closed on purpose) as errors, and every
/// failure that matters reaches Lepus as an error value, which Lepus logs itself.
pub const DEFAULT_FILTER: &str = "info,lapin=off";

/// Installs the global subscriber, writing to standard error. Calling it again does nothing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let colour = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
    drop(installed);
}
