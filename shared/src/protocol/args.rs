//! How a typed job input maps to Celery's positional `args` and keyword `kwargs`.
//!
//! Encoding (Rust → wire), by the shape the input serializes to:
//! - a struct or map → `kwargs` (field name → value), `args = []`;
//! - a tuple or tuple struct → `args` in order, `kwargs = {}`;
//! - a unit struct or `()` → both empty;
//! - anything else (a number, a string, a newtype around one) → `args = [value]`.
//!
//! Decoding (wire → Rust) accepts what a Python caller would send:
//! - only `kwargs`: decoded as the struct's fields;
//! - only `args`: for a struct with named fields they fill the fields in declaration order
//!   (so `demo.add` takes `[2, 3]` as `a = 2, b = 3`); otherwise they decode as a tuple, or as
//!   the single value when there is exactly one;
//! - both: positional values fill the first fields, keywords the rest; a field given twice is an
//!   error, as in Python.

use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Positional and keyword arguments of a Celery task message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Arguments {
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
}

impl Arguments {
    /// Positional arguments only: `Arguments::positional([4])`.
    #[must_use]
    pub fn positional<V: Into<Value>>(values: impl IntoIterator<Item = V>) -> Self {
        Self { args: values.into_iter().map(Into::into).collect(), kwargs: Map::new() }
    }

    /// Maps a typed input to `args`/`kwargs` (see the module docs for the rules).
    pub fn from_input<T: Serialize>(input: &T) -> Result<Self, serde_json::Error> {
        Ok(match serde_json::to_value(input)? {
            Value::Object(kwargs) => Self { args: Vec::new(), kwargs },
            Value::Array(args) => Self { args, kwargs: Map::new() },
            Value::Null => Self::default(),
            other => Self { args: vec![other], kwargs: Map::new() },
        })
    }

    /// Decodes `args`/`kwargs` into a typed input (see the module docs for the rules).
    pub fn into_input<T: DeserializeOwned>(self) -> Result<T, ArgumentsError> {
        let Self { args, kwargs } = self;
        if args.is_empty() {
            let empty = kwargs.is_empty();
            return match T::deserialize(Value::Object(kwargs)) {
                Ok(value) => Ok(value),
                // A unit struct or `()` takes no arguments at all.
                Err(e) if empty => T::deserialize(Value::Null).map_err(|_| e.into()),
                Err(e) => Err(e.into()),
            };
        }
        match field_names::<T>() {
            Some(fields) => T::deserialize(Value::Object(merge(fields, args, kwargs)?)).map_err(ArgumentsError::from),
            None if !kwargs.is_empty() => {
                Err(ArgumentsError::Message("keyword arguments given, but the job's input has no named fields".into()))
            }
            None if args.len() == 1 => {
                let single = args.into_iter().next().unwrap_or(Value::Null);
                match T::deserialize(Value::Array(vec![single.clone()])) {
                    Ok(value) => Ok(value),
                    Err(_) => T::deserialize(single).map_err(ArgumentsError::from),
                }
            }
            None => T::deserialize(Value::Array(args)).map_err(ArgumentsError::from),
        }
    }
}

/// Why arguments do not fit a job's input type.
#[derive(Debug, thiserror::Error)]
pub enum ArgumentsError {
    /// The values do not decode into the input type.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// The shape of the arguments does not fit the input type.
    #[error("{0}")]
    Message(String),
}

fn merge(
    fields: &'static [&'static str],
    args: Vec<Value>,
    mut kwargs: Map<String, Value>,
) -> Result<Map<String, Value>, ArgumentsError> {
    if args.len() > fields.len() {
        return Err(ArgumentsError::Message(format!(
            "takes {} positional arguments but {} were given",
            fields.len(),
            args.len()
        )));
    }
    for (field, value) in fields.iter().zip(args) {
        if kwargs.insert((*field).to_owned(), value).is_some() {
            return Err(ArgumentsError::Message(format!("got multiple values for argument '{field}'")));
        }
    }
    Ok(kwargs)
}

/// The serialized field names of `T` when it is a struct with named fields, found by letting
/// `T`'s `Deserialize` impl ask a probe for a struct.
fn field_names<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    match T::deserialize(FieldProbe) {
        Err(Probe::Fields(fields)) => Some(fields),
        _ => None,
    }
}

struct FieldProbe;

#[derive(Debug)]
enum Probe {
    Fields(&'static [&'static str]),
    NotAStruct,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for Probe {}

impl de::Error for Probe {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Probe::NotAStruct
    }
}

impl<'de> de::Deserializer<'de> for FieldProbe {
    type Error = Probe;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probe> {
        Err(Probe::NotAStruct)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Probe> {
        Err(Probe::Fields(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Lets `Arguments` be built from JSON in tests and tools: `{"args": [...], "kwargs": {...}}`.
impl<'de> Deserialize<'de> for Arguments {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            args: Vec<Value>,
            #[serde(default)]
            kwargs: Map<String, Value>,
        }
        let raw = Raw::deserialize(deserializer)?;
        Ok(Self { args: raw.args, kwargs: raw.kwargs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Add {
        a: i64,
        b: i64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pair(i64, String);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Unit;

    fn args(args: Value, kwargs: Value) -> Arguments {
        serde_json::from_value(json!({"args": args, "kwargs": kwargs})).expect("valid arguments")
    }

    #[test]
    fn structs_encode_as_kwargs_and_tuples_as_args() {
        let a = Arguments::from_input(&Add { a: 1, b: 2 }).expect("encodes");
        assert_eq!(a, args(json!([]), json!({"a": 1, "b": 2})));
        let p = Arguments::from_input(&Pair(1, "x".into())).expect("encodes");
        assert_eq!(p, args(json!([1, "x"]), json!({})));
        assert_eq!(Arguments::from_input(&Unit).expect("encodes"), Arguments::default());
        assert_eq!(Arguments::from_input(&5).expect("encodes"), args(json!([5]), json!({})));
    }

    #[test]
    fn a_struct_decodes_from_kwargs_args_or_both() {
        let want = Add { a: 2, b: 3 };
        assert_eq!(args(json!([]), json!({"a": 2, "b": 3})).into_input::<Add>().ok(), Some(Add { ..want }));
        assert_eq!(args(json!([2, 3]), json!({})).into_input::<Add>().ok(), Some(Add { a: 2, b: 3 }));
        assert_eq!(args(json!([2]), json!({"b": 3})).into_input::<Add>().ok(), Some(Add { a: 2, b: 3 }));
    }

    #[test]
    fn python_style_argument_errors_are_reported() {
        let twice = args(json!([2]), json!({"a": 3})).into_input::<Add>().expect_err("a given twice");
        assert_eq!(twice.to_string(), "got multiple values for argument 'a'");
        let many = args(json!([1, 2, 3]), json!({})).into_input::<Add>().expect_err("too many");
        assert_eq!(many.to_string(), "takes 2 positional arguments but 3 were given");
        let wrong = args(json!(["x", 1]), json!({})).into_input::<Add>().expect_err("wrong type");
        assert!(wrong.to_string().contains("invalid type"), "{wrong}");
        let missing = args(json!([]), json!({"a": 1})).into_input::<Add>().expect_err("missing b");
        assert!(missing.to_string().contains("missing field `b`"), "{missing}");
    }

    #[test]
    fn tuples_scalars_units_and_free_form_maps_decode() {
        assert_eq!(args(json!([1, "x"]), json!({})).into_input::<Pair>().ok(), Some(Pair(1, "x".into())));
        assert_eq!(args(json!([7]), json!({})).into_input::<i64>().ok(), Some(7));
        assert_eq!(args(json!([7]), json!({})).into_input::<(i64,)>().ok(), Some((7,)));
        assert_eq!(args(json!([]), json!({})).into_input::<Unit>().ok(), Some(Unit));
        assert_eq!(args(json!([]), json!({})).into_input::<()>().ok(), Some(()));
        let echo = args(json!([]), json!({"k": [1]})).into_input::<Map<String, Value>>();
        assert_eq!(echo.ok().map(Value::Object), Some(json!({"k": [1]})));
    }
}
