//! [`Setting`]: a type a setting can have, read from text (a flag, a variable, a string in the
//! file) or from a TOML value, and shown again as TOML.

use crate::broker::UrlOrder;
use crate::telemetry::LogFormat;
use figment::value::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A type a setting can have.
pub trait Setting: Sized {
    /// Reads the value from text.
    fn from_text(text: &str) -> Result<Self, String>;

    /// Reads the value from any layer: text, or a number or boolean in the settings file.
    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::String(_, text) => Self::from_text(text),
            Value::Char(_, c) => Self::from_text(&c.to_string()),
            Value::Bool(_, b) => Self::from_text(&b.to_string()),
            Value::Num(_, n) => {
                let text = n.to_i128().map(|n| n.to_string()).or_else(|| n.to_u128().map(|n| n.to_string()));
                Self::from_text(&text.or_else(|| n.to_f64().map(|n| n.to_string())).unwrap_or_default())
            }
            Value::Array(..) => Err("a list is not allowed here".to_owned()),
            Value::Dict(..) => Err("a table is not allowed here".to_owned()),
            Value::Empty(..) => Err("an empty value is not allowed here".to_owned()),
        }
    }

    /// The value as a settings file would hold it.
    fn to_toml(&self) -> toml::Value;
}

impl Setting for String {
    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.clone())
    }
}

macro_rules! whole_number {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            fn from_text(text: &str) -> Result<Self, String> {
                text.trim().parse().map_err(|_| format!("`{text}` is not a whole number from 0 to {}", <$t>::MAX))
            }

            fn to_toml(&self) -> toml::Value {
                i64::try_from(*self).map_or_else(|_| toml::Value::String(self.to_string()), toml::Value::Integer)
            }
        }
    )*};
}

whole_number!(u16, u32, u64, usize);

impl Setting for bool {
    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(format!("`{text}` is not true or false")),
        }
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::Boolean(*self)
    }
}

impl Setting for Duration {
    fn from_text(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text.trim())
            .map_err(|e| format!("`{text}` is not a duration like `30s`, `2m` or `1h 30m` ({e})"))
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::String(humantime::format_duration(*self).to_string())
    }
}

impl Setting for SocketAddr {
    fn from_text(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address and port like `127.0.0.1:9464` or `[::]:9464`"))
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.to_string())
    }
}

impl Setting for PathBuf {
    fn from_text(text: &str) -> Result<Self, String> {
        if text.is_empty() { Err("an empty path is not a file".to_owned()) } else { Ok(PathBuf::from(text)) }
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.display().to_string())
    }
}

impl Setting for LogFormat {
    fn from_text(text: &str) -> Result<Self, String> {
        text.trim().parse()
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.to_string())
    }
}

impl Setting for UrlOrder {
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::String(self.to_string())
    }
}

/// A list: an array in the settings file, or text with items separated by commas; each item is
/// trimmed and empty items are dropped.
impl Setting for Vec<String> {
    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect())
    }

    fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::Array(_, items) => {
                let mut list = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(_, text) => list.extend(Self::from_text(text)?),
                        other => return Err(format!("list items must be text, not {}", other.to_actual())),
                    }
                }
                Ok(list)
            }
            Value::String(_, text) => Self::from_text(text),
            other => Err(format!("expected a list, not {}", other.to_actual())),
        }
    }

    fn to_toml(&self) -> toml::Value {
        toml::Value::Array(self.iter().cloned().map(toml::Value::String).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_durations_addresses_and_lists_read_from_text_and_toml() {
        assert_eq!(u16::from_value(&Value::from(12_u64)), Ok(12));
        assert_eq!(u16::from_text(" 12 "), Ok(12));
        assert!(u16::from_text("70000").expect_err("too big").contains("from 0 to 65535"));
        assert!(u16::from_value(&Value::from(1.5_f64)).is_err());
        assert_eq!(Duration::from_text("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(Duration::from_secs(90).to_toml(), toml::Value::String("1m 30s".into()));
        assert!(SocketAddr::from_text("localhost:80").is_err());
        assert_eq!(SocketAddr::from_text("[::]:9464").map(|a| a.port()), Ok(9464));
        assert_eq!(Vec::<String>::from_text("a, b,,c"), Ok(vec!["a".into(), "b".into(), "c".into()]));
        let array = Value::from(vec![Value::from("a,b"), Value::from("c")]);
        assert_eq!(Vec::<String>::from_value(&array), Ok(vec!["a".into(), "b".into(), "c".into()]));
        assert!(Vec::<String>::from_value(&Value::from(vec![Value::from(1_u8)])).is_err());
        assert_eq!(bool::from_text("Yes"), Ok(true));
        assert!(String::from_value(&Value::from(vec![Value::from("x")])).is_err());
    }
}
