//! Layered settings for Lepus's programs: defaults, an optional TOML file (`--config`, or
//! `LEPUS_CONFIG`), `LEPUS_*` environment variables and command-line flags, merged by figment with
//! the precedence flag > variable > file > default.
//!
//! A program lists its settings once, as a table of [`Key`]s: the table gives each setting its
//! file key, its variable and its flag (see [`Flags`]), and the program reads each one, typed, with
//! [`Layers::get`]. Every key is read even after a bad one, so [`Layers::finish`] names every bad
//! key and value at once, each with where it came from; the program's own checks join the same
//! list ([`Layers::problem`]).

mod flags;
mod value;

pub use flags::{Flags, Keys};
pub use value::Setting;

use crate::broker::UrlOrder;
use crate::tls::Tls;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use std::fmt;
use std::path::Path;

/// One setting: its key in a settings file, its environment variable, its flag and its help.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key in a settings file, e.g. `grace_period`.
    pub name: &'static str,
    /// The flag, without its dashes, e.g. `grace-period`.
    pub flag: &'static str,
    /// The environment variable, e.g. `LEPUS_GRACE_PERIOD`.
    pub env: &'static str,
    /// What the value looks like in `--help`, e.g. `DURATION`.
    pub value_name: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
    /// A list: the flag repeats, the variable separates items with commas, the file has an array.
    pub many: bool,
    /// A URL whose password `--print-config` masks.
    pub secret: bool,
    /// A flag that takes no value: given, it sets the setting to this text.
    pub switch: Option<&'static str>,
}

impl Key {
    /// A setting with one value.
    #[must_use]
    pub const fn new(
        name: &'static str,
        flag: &'static str,
        env: &'static str,
        value_name: &'static str,
        help: &'static str,
    ) -> Self {
        Self { name, flag, env, value_name, help, many: false, secret: false, switch: None }
    }

    /// This setting is a list.
    #[must_use]
    pub const fn many(self) -> Self {
        Self { many: true, ..self }
    }

    /// This setting's flag takes no value: given, it sets the setting to `value` (`"true"` for
    /// `--events`, `"false"` for `--without-remote-control`).
    #[must_use]
    pub const fn switch(self, value: &'static str) -> Self {
        Self { switch: Some(value), ..self }
    }

    /// This setting is a URL with a password.
    #[must_use]
    pub const fn secret(self) -> Self {
        Self { secret: true, ..self }
    }
}

/// The broker settings of every Lepus program that connects to one; read with [`Layers::broker`].
pub const BROKER_KEYS: [Key; 2] = [
    Key::new(
        "amqp_url",
        "amqp-url",
        "LEPUS_AMQP_URL",
        "URL",
        "Broker URL (the password never appears in logs); repeat, or separate with commas, for a cluster's nodes",
    )
    .many()
    .secret(),
    Key::new(
        "amqp_url_order",
        "amqp-url-order",
        "LEPUS_AMQP_URL_ORDER",
        "ORDER",
        "With several broker URLs, which to try first: `random` (default; processes spread over the nodes) or `listed`",
    ),
];

/// The TLS settings of every Lepus program that connects to a broker; read with [`Layers::tls`].
pub const TLS_KEYS: [Key; 3] = [
    Key::new(
        "tls_ca_file",
        "tls-ca-file",
        "LEPUS_TLS_CA_FILE",
        "FILE",
        "amqps://: a CA (PEM) to trust besides the system's",
    ),
    Key::new(
        "tls_cert_file",
        "tls-cert-file",
        "LEPUS_TLS_CERT_FILE",
        "FILE",
        "amqps://: the client certificate (PEM), for brokers that verify clients",
    ),
    Key::new(
        "tls_key_file",
        "tls-key-file",
        "LEPUS_TLS_KEY_FILE",
        "FILE",
        "amqps://: the client certificate's key (PEM)",
    ),
];

/// The layers of one program's settings, read key by key.
#[derive(Debug)]
pub struct Layers {
    keys: &'static [Key],
    figment: Figment,
    problems: Vec<String>,
    effective: Vec<(Key, Option<toml::Value>)>,
}

impl Layers {
    /// Merges the settings file named by `--config` (or `LEPUS_CONFIG`), the environment and the
    /// flags given on the command line.
    #[must_use]
    pub fn load<K: Keys>(flags: &Flags<K>) -> Self {
        Self::from_sources(K::ALL, flags.config_file().as_deref(), &|name| std::env::var(name).ok(), flags.given())
    }

    /// [`Layers::load`] with the environment read by `env`.
    pub(crate) fn from_sources(
        keys: &'static [Key],
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &[(&'static str, Vec<String>)],
    ) -> Self {
        let mut problems = Vec::new();
        let mut figment = Figment::new();
        if let Some(path) = file {
            match file_layer(keys, path) {
                Ok((layer, unknown)) => {
                    problems.extend(unknown);
                    figment = figment.merge(layer);
                }
                Err(problem) => problems.push(problem),
            }
        }
        let given_env = keys.iter().filter_map(|key| {
            let text = env(key.env).filter(|text| !text.trim().is_empty())?;
            Some((key.name.to_owned(), Value::from(text)))
        });
        figment = figment.merge(Layer::new(Metadata::named("environment").interpolater(env_name(keys)), given_env));
        let given_flags = flags.iter().map(|(name, values)| {
            let value = match values.as_slice() {
                [one] => Value::from(one.clone()),
                many => Value::from(many.to_vec()),
            };
            ((*name).to_owned(), value)
        });
        figment = figment.merge(Layer::new(Metadata::named("command line").interpolater(flag_name(keys)), given_flags));
        Self { keys, figment, problems, effective: Vec::new() }
    }

    /// The setting `name`, or `default` if no layer sets it (or if its value is bad: then the
    /// problem is kept for [`Layers::finish`]).
    pub fn get<T: Setting>(&mut self, name: &'static str, default: T) -> T {
        let value = self.optional(name).unwrap_or(default);
        self.set_effective(name, Some(value.to_toml()));
        value
    }

    /// The setting `name`, if a layer sets it to a good value.
    pub fn optional<T: Setting>(&mut self, name: &'static str) -> Option<T> {
        let key = self.key(name);
        let found = self.figment.find_value(name).ok().and_then(|value| match T::from_value(&value) {
            Ok(value) => Some(value),
            Err(why) => {
                let from = self.source_of(name);
                self.problems.push(format!("{name}: {why} (from {from})"));
                None
            }
        });
        self.effective.push((key, found.as_ref().map(Setting::to_toml)));
        found
    }

    /// The broker URL (several joined by commas; `default` if none is set) and which of them to
    /// try first, from the [`BROKER_KEYS`] (which the program's table must hold).
    pub fn broker(&mut self, default: &str) -> (String, UrlOrder) {
        let urls: Option<Vec<String>> = self.optional("amqp_url");
        if urls.as_ref().is_some_and(Vec::is_empty) {
            let from = self.source_of("amqp_url");
            self.problems.push(format!("amqp_url: no broker URL is given (from {from})"));
        }
        let url = urls.filter(|urls| !urls.is_empty()).map_or_else(|| default.to_owned(), |urls| urls.join(","));
        self.set_effective("amqp_url", Some(toml::Value::String(url.clone())));
        (url, self.get("amqp_url_order", UrlOrder::Random))
    }

    /// The TLS files, from the [`TLS_KEYS`] (which the program's table must hold).
    pub fn tls(&mut self) -> Tls {
        Tls {
            ca_file: self.optional("tls_ca_file"),
            cert_file: self.optional("tls_cert_file"),
            key_file: self.optional("tls_key_file"),
        }
    }

    /// Adds a problem found by the program's own checks of the values.
    pub fn problem(&mut self, problem: impl Into<String>) {
        self.problems.push(problem.into());
    }

    /// The settings as they stand (in the order of the key table), or every problem found.
    pub fn finish(mut self) -> Result<Effective, SettingsError> {
        if self.problems.is_empty() {
            let keys = self.keys;
            self.effective.sort_by_key(|(key, _)| keys.iter().position(|k| k.name == key.name));
            Ok(Effective { settings: self.effective })
        } else {
            Err(SettingsError { problems: self.problems })
        }
    }

    fn key(&self, name: &str) -> Key {
        *self.keys.iter().find(|key| key.name == name).unwrap_or_else(|| panic!("{name:?} is not in the key table"))
    }

    fn set_effective(&mut self, name: &str, value: Option<toml::Value>) {
        if let Some(entry) = self.effective.iter_mut().rev().find(|(key, _)| key.name == name) {
            entry.1 = value;
        }
    }

    fn source_of(&self, name: &str) -> String {
        self.figment
            .find_metadata(name)
            .map_or_else(|| "?".to_owned(), |metadata| metadata.interpolate(&Profile::Default, &[name]))
    }
}

/// The effective settings of a program, as `--print-config` shows them: a settings file, with
/// passwords masked and unset settings as comments.
#[derive(Debug, Clone)]
pub struct Effective {
    settings: Vec<(Key, Option<toml::Value>)>,
}

impl fmt::Display for Effective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in &self.settings {
            match value {
                Some(toml::Value::String(url)) if key.secret => {
                    writeln!(f, "{} = {}", key.name, toml::Value::String(crate::broker::redact(url)))?;
                }
                Some(value) => writeln!(f, "{} = {value}", key.name)?,
                None => writeln!(f, "# {} is not set", key.name)?,
            }
        }
        Ok(())
    }
}

/// Why a program's settings were refused: every bad key or value, each with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(f, "invalid configuration ({count} problem{}):", if count == 1 { "" } else { "s" })?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingsError {}

/// The settings file as a layer, and a problem for each key it has that is not a setting.
fn file_layer(keys: &'static [Key], path: &Path) -> Result<(Layer, Vec<String>), String> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the settings file {shown}: {e}"))?;
    let table: toml::Table = text.parse().map_err(|e| format!("the settings file {shown} is not TOML: {e}"))?;
    let mut unknown = Vec::new();
    let mut known = Vec::new();
    for (name, value) in table {
        if keys.iter().any(|key| key.name == name) {
            let value = Value::serialize(value).map_err(|e| format!("{name} in {shown}: {e}"))?;
            known.push((name, value));
        } else {
            let names: Vec<&str> = keys.iter().map(|key| key.name).collect();
            unknown.push(format!("{name}: not a setting (in {shown}); the settings are {}", names.join(", ")));
        }
    }
    let metadata = Metadata::named("settings file")
        .source(path)
        .interpolater(move |_, keys| format!("{} in {shown}", keys.join(".")));
    Ok((Layer::new(metadata, known), unknown))
}

/// `LEPUS_X` for setting `x`, in messages.
fn env_name(keys: &'static [Key]) -> impl Fn(&Profile, &[&str]) -> String + Clone + Send + Sync + 'static {
    move |_, path| {
        let name = path.join(".");
        keys.iter().find(|key| key.name == name).map_or(name, |key| key.env.to_owned())
    }
}

/// `--x` for setting `x`, in messages.
fn flag_name(keys: &'static [Key]) -> impl Fn(&Profile, &[&str]) -> String + Clone + Send + Sync + 'static {
    move |_, path| {
        let name = path.join(".");
        keys.iter().find(|key| key.name == name).map_or(name, |key| format!("--{}", key.flag))
    }
}

/// One layer of settings for figment: values by key, and where they came from.
struct Layer {
    metadata: Metadata,
    values: Dict,
}

impl Layer {
    fn new(metadata: Metadata, values: impl IntoIterator<Item = (String, Value)>) -> Self {
        Self { metadata, values: values.into_iter().collect() }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const KEYS: &[Key] = &[
        Key::new("amqp_url", "amqp-url", "LEPUS_AMQP_URL", "URL", "broker").secret(),
        Key::new("queues", "queue", "LEPUS_QUEUES", "QUEUE", "queues").many(),
        Key::new("concurrency", "concurrency", "LEPUS_CONCURRENCY", "N", "jobs at once"),
        Key::new("grace_period", "grace-period", "LEPUS_GRACE_PERIOD", "DURATION", "grace"),
        Key::new("metrics_addr", "metrics-addr", "LEPUS_METRICS_ADDR", "HOST:PORT", "metrics"),
    ];

    fn layers(file: &str, env: &[(&str, &str)], flags: &[(&'static str, &[&str])]) -> Layers {
        let path = std::env::temp_dir().join(format!("lepus-settings-{}.toml", fastrand::u64(..)));
        std::fs::write(&path, file).expect("write");
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let flags: Vec<(&'static str, Vec<String>)> =
            flags.iter().map(|(k, v)| (*k, v.iter().map(|s| (*s).to_owned()).collect())).collect();
        let layers = Layers::from_sources(
            KEYS,
            Some(&path),
            &|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            &flags,
        );
        drop(std::fs::remove_file(&path));
        layers
    }

    #[test]
    fn a_flag_beats_a_variable_which_beats_the_file_which_beats_the_default() {
        let file = "concurrency = 4\ngrace_period = \"1m\"\nqueues = [\"a\", \"b\"]\n";
        let mut l = layers(file, &[("LEPUS_CONCURRENCY", "8"), ("LEPUS_QUEUES", "c, d")], &[("concurrency", &["12"])]);
        assert_eq!(l.get("concurrency", 16_u16), 12, "flag");
        assert_eq!(l.get("queues", Vec::<String>::new()), ["c", "d"], "variable, split at commas");
        assert_eq!(l.get("grace_period", Duration::from_secs(30)), Duration::from_secs(60), "file");
        assert_eq!(l.get("amqp_url", "amqp://u:secret@h/".to_owned()), "amqp://u:secret@h/", "default");
        assert_eq!(l.optional::<std::net::SocketAddr>("metrics_addr"), None, "unset");
        let shown = l.finish().expect("valid").to_string();
        assert_eq!(
            shown,
            "amqp_url = \"amqp://u:***@h/\"\nqueues = [\"c\", \"d\"]\nconcurrency = 12\ngrace_period = \"1m\"\n\
             # metrics_addr is not set\n"
        );
    }

    #[test]
    fn every_bad_key_and_value_is_named_with_where_it_came_from() {
        let file = "concurency = 4\ngrace_period = \"30 parsecs\"\n";
        let mut l = layers(file, &[("LEPUS_CONCURRENCY", "lots")], &[("metrics_addr", &["nowhere"])]);
        assert_eq!(l.get("concurrency", 16_u16), 16);
        assert_eq!(l.get("grace_period", Duration::from_secs(30)), Duration::from_secs(30));
        assert_eq!(l.optional::<std::net::SocketAddr>("metrics_addr"), None);
        l.problem("queues: no queue to consume");
        let problems = l.finish().expect_err("invalid").problems;
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].starts_with("concurency: not a setting (in "), "{}", problems[0]);
        assert!(
            problems[1].contains("concurrency: `lots` is not a whole number")
                && problems[1].ends_with("(from LEPUS_CONCURRENCY)")
        );
        assert!(
            problems[2].starts_with("grace_period: `30 parsecs` is not a duration") && problems[2].contains(".toml)")
        );
        assert!(
            problems[3].starts_with("metrics_addr: `nowhere` is not") && problems[3].ends_with("(from --metrics-addr)")
        );
        assert_eq!(problems[4], "queues: no queue to consume");
    }

    #[test]
    fn an_empty_variable_counts_as_unset_and_a_missing_file_is_a_problem() {
        let mut l = layers("", &[("LEPUS_METRICS_ADDR", " ")], &[]);
        assert_eq!(l.optional::<std::net::SocketAddr>("metrics_addr"), None);
        assert!(l.finish().is_ok());
        let l = Layers::from_sources(KEYS, Some(Path::new("/nonexistent/lepus.toml")), &|_| None, &[]);
        let problems = l.finish().expect_err("missing file").problems;
        assert!(problems[0].starts_with("cannot read the settings file /nonexistent/lepus.toml"), "{problems:?}");
    }

    #[test]
    fn the_broker_url_may_name_several_nodes_by_flags_variable_or_file_and_each_password_is_masked() {
        let read = |file: &str, env: &[(&str, &str)], flags: &[(&'static str, Vec<String>)]| {
            let path = std::env::temp_dir().join(format!("lepus-settings-{}.toml", fastrand::u64(..)));
            std::fs::write(&path, file).expect("write");
            let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            let mut l = Layers::from_sources(
                &BROKER_KEYS,
                Some(&path),
                &|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
                flags,
            );
            drop(std::fs::remove_file(&path));
            let broker = l.broker("amqp://d/");
            (broker, l.finish().map(|e| e.to_string()).map_err(|e| e.problems))
        };
        let flags = [("amqp_url", vec!["amqp://u:one@a/".to_owned(), "amqp://u:two@b/, amqp://u:three@c/".to_owned()])];
        let ((url, order), shown) = read("", &[], &flags);
        assert_eq!(url, "amqp://u:one@a/,amqp://u:two@b/,amqp://u:three@c/");
        assert_eq!(order, UrlOrder::Random);
        let shown = shown.expect("valid");
        assert!(shown.starts_with("amqp_url = \"amqp://u:***@a/,amqp://u:***@b/,amqp://u:***@c/\"\n"), "{shown}");
        assert!(!shown.contains("one") && !shown.contains("two") && !shown.contains("three"), "{shown}");

        let env = [("LEPUS_AMQP_URL", "amqp://a/, amqp://b/"), ("LEPUS_AMQP_URL_ORDER", "listed")];
        assert_eq!(read("", &env, &[]).0, ("amqp://a/,amqp://b/".to_owned(), UrlOrder::Listed));
        let file = "amqp_url = [\"amqp://a/\", \"amqp://b/\"]\n";
        assert_eq!(read(file, &[], &[]).0.0, "amqp://a/,amqp://b/");
        assert_eq!(read("", &[], &[]).0.0, "amqp://d/", "the default");

        let (_, problems) = read("amqp_url = []\n", &[("LEPUS_AMQP_URL_ORDER", "nearest")], &[]);
        let problems = problems.expect_err("invalid");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("amqp_url: no broker URL is given (from amqp_url in "), "{problems:?}");
        assert!(problems[1].contains("`nearest` is not `random` or `listed`"), "{problems:?}");
    }
}
