//! [`Flags`]: a program's settings as clap flags, made from its key table ([`Keys`]), with
//! `--config` and `--print-config` beside them. Values stay text until [`super::Layers`] reads
//! them, so a bad value is named together with every other problem rather than alone by clap.

use super::Key;
use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches};
use std::marker::PhantomData;
use std::path::PathBuf;

/// A program's key table.
pub trait Keys: 'static {
    /// Every setting of the program, in the order `--help` and `--print-config` show them.
    const ALL: &'static [Key];
}

/// The settings flags given on a command line.
#[derive(Debug)]
pub struct Flags<K> {
    given: Vec<(&'static str, Vec<String>)>,
    config: Option<PathBuf>,
    print_config: bool,
    keys: PhantomData<K>,
}

impl<K> Clone for Flags<K> {
    fn clone(&self) -> Self {
        Self {
            given: self.given.clone(),
            config: self.config.clone(),
            print_config: self.print_config,
            keys: PhantomData,
        }
    }
}

impl<K: Keys> Flags<K> {
    /// The settings file named by `--config`, else by `LEPUS_CONFIG` (unless empty).
    #[must_use]
    pub fn config_file(&self) -> Option<PathBuf> {
        self.config.clone().or_else(|| std::env::var_os("LEPUS_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from))
    }

    /// Whether `--print-config` was given: show the effective settings and exit.
    #[must_use]
    pub fn print_config(&self) -> bool {
        self.print_config
    }

    /// The settings given as flags: key and values, in the order of the key table.
    #[must_use]
    pub fn given(&self) -> &[(&'static str, Vec<String>)] {
        &self.given
    }
}

const CONFIG: &str = "config";
const PRINT_CONFIG: &str = "print-config";

impl<K: Keys> FromArgMatches for Flags<K> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let given = K::ALL
            .iter()
            .filter_map(|key| match key.switch {
                Some(value) => matches.get_flag(key.name).then(|| (key.name, vec![value.to_owned()])),
                None => {
                    let values: Vec<String> = matches.get_many::<String>(key.name)?.cloned().collect();
                    Some((key.name, values))
                }
            })
            .collect();
        Ok(Self {
            given,
            config: matches.get_one::<PathBuf>(CONFIG).cloned(),
            print_config: matches.get_flag(PRINT_CONFIG),
            keys: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<K: Keys> clap::Args for Flags<K> {
    fn augment_args(command: Command) -> Command {
        let settings = K::ALL.iter().map(|key| {
            let arg = Arg::new(key.name).long(key.flag).help(format!("{} [env: {}]", key.help, key.env));
            match (key.switch, key.many) {
                (Some(_), _) => arg.action(ArgAction::SetTrue),
                (None, true) => arg.value_name(key.value_name).action(ArgAction::Append),
                (None, false) => arg.value_name(key.value_name).action(ArgAction::Set),
            }
        });
        command
            .args(settings)
            .arg(
                Arg::new(CONFIG)
                    .long(CONFIG)
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("A TOML settings file; flags and LEPUS_* variables override it [env: LEPUS_CONFIG]"),
            )
            .arg(
                Arg::new(PRINT_CONFIG)
                    .long(PRINT_CONFIG)
                    .action(ArgAction::SetTrue)
                    .help("Print the effective settings (password masked) and exit"),
            )
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    struct Table;
    impl Keys for Table {
        const ALL: &'static [Key] = &[
            Key::new("queues", "queue", "LEPUS_QUEUES", "QUEUE", "queues").many(),
            Key::new("concurrency", "concurrency", "LEPUS_CONCURRENCY", "N", "jobs at once"),
            Key::new("events", "events", "LEPUS_EVENTS", "BOOL", "send events").switch("true"),
        ];
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Flags<Table>,
    }

    #[test]
    fn flags_come_from_the_key_table_and_keep_their_text() {
        let cli =
            Cli::try_parse_from(["x", "--queue", "a", "--queue", "b,c", "--concurrency", "lots", "--print-config"])
                .expect("parses");
        assert_eq!(
            cli.settings.given(),
            [("queues", vec!["a".to_owned(), "b,c".to_owned()]), ("concurrency", vec!["lots".to_owned()])]
        );
        assert!(cli.settings.print_config());
        assert!(Cli::try_parse_from(["x", "--concurency", "2"]).is_err(), "unknown flags are clap's errors");
    }
}
