//! Conversions between JSON values and AMQP field values.
//!
//! Celery puts structured data (`timelimit`, `stamps`, …) into AMQP headers. These two functions map
//! it both ways: JSON objects become field tables, arrays field arrays, strings long strings,
//! integers 64-bit signed integers, `null` void.

use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Number, Value};

/// Encodes a JSON value as an AMQP field value.
pub(crate) fn to_amqp(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(items.iter().map(to_amqp).collect::<Vec<_>>())),
        Value::Object(map) => AMQPValue::FieldTable(table_from_json(map)),
    }
}

/// Encodes a JSON object as an AMQP field table. Keys longer than 255 bytes cannot be AMQP
/// short strings and are left out.
pub(crate) fn table_from_json(map: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in map {
        if let Ok(key) = ShortString::try_new(key.as_str()) {
            table.insert(key, to_amqp(value));
        }
    }
    table
}

/// Decodes an AMQP field value as JSON. Byte strings that are not UTF-8 are decoded lossily.
pub(crate) fn to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => Value::from(*i),
        AMQPValue::ShortShortUInt(i) => Value::from(*i),
        AMQPValue::ShortInt(i) => Value::from(*i),
        AMQPValue::ShortUInt(i) => Value::from(*i),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::LongUInt(i) => Value::from(*i),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::Float(f) => float(f64::from(*f)),
        AMQPValue::Double(f) => float(*f),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::String(s.to_string()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        AMQPValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b.as_slice()).into()),
        AMQPValue::FieldArray(items) => Value::Array(items.as_slice().iter().map(to_json).collect()),
        AMQPValue::FieldTable(table) => Value::Object(json_from_table(table)),
        AMQPValue::Void => Value::Null,
    }
}

/// Decodes an AMQP field table as a JSON object.
pub fn json_from_table(table: &FieldTable) -> Map<String, Value> {
    table.into_iter().map(|(k, v)| (k.to_string(), to_json(v))).collect()
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_survives_a_round_trip_through_amqp() {
        let original = json!({
            "timelimit": [null, 30],
            "stamps": {"a": "b"},
            "retries": 3,
            "ratio": 0.5,
            "ignore_result": false,
            "big": -9_000_000_000i64,
        });
        let Value::Object(map) = &original else { unreachable!() };
        let back = Value::Object(json_from_table(&table_from_json(map)));
        assert_eq!(back, original);
    }

    #[test]
    fn narrow_integers_from_other_clients_decode_as_numbers() {
        assert_eq!(to_json(&AMQPValue::LongInt(7)), json!(7));
        assert_eq!(to_json(&AMQPValue::ShortShortUInt(2)), json!(2));
        assert_eq!(to_json(&AMQPValue::ShortString("x".into())), json!("x"));
    }
}
