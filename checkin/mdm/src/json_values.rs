//! Plist values written as JSON for the admin API. JSON has no binary data or dates, so two
//! one-key objects stand for them:
//!
//! - `{"$data": "<base64>"}` → `<data>` (an InstallProfile `Payload`, an `UnlockToken`…);
//! - `{"$date": "<RFC 3339>"}` → `<date>`.
//!
//! Everything else maps as expected (objects → dictionaries, numbers → integer or real);
//! `null` has no plist equivalent and is refused, naming the key.

use base64::Engine as _;
use plist::{Dictionary, Value};
use serde_json::Value as Json;

/// A JSON object as a plist dictionary.
pub fn dict_from_json(map: serde_json::Map<String, Json>) -> Result<Dictionary, String> {
    let mut dict = Dictionary::new();
    for (k, v) in map {
        let value = from_json(v).map_err(|why| format!("{k}: {why}"))?;
        dict.insert(k, value);
    }
    Ok(dict)
}

/// A JSON value as a plist value.
pub fn from_json(v: Json) -> Result<Value, String> {
    Ok(match v {
        Json::Null => return Err("null has no plist equivalent".into()),
        Json::Bool(b) => Value::Boolean(b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Integer(i.into())
            } else if let Some(u) = n.as_u64() {
                Value::Integer(u.into())
            } else {
                Value::Real(n.as_f64().unwrap_or_default())
            }
        }
        Json::String(s) => Value::String(s),
        Json::Array(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| from_json(v).map_err(|why| format!("[{i}]: {why}")))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(map) => match typed(&map)? {
            Some(value) => value,
            None => Value::Dictionary(dict_from_json(map)?),
        },
    })
}

/// `{"$data": …}` or `{"$date": …}`; `None` for an ordinary object.
fn typed(map: &serde_json::Map<String, Json>) -> Result<Option<Value>, String> {
    let Some((key, value)) = map.iter().next() else {
        return Ok(None);
    };
    if !key.starts_with('$') {
        return Ok(None);
    }
    if map.len() != 1 {
        return Err(format!("{key} must be the object's only key"));
    }
    let text = value
        .as_str()
        .ok_or_else(|| format!("{key} takes a string"))?;
    match key.as_str() {
        "$data" => {
            let compact: String = text.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map(Value::Data)
                .map_err(|e| format!("$data is not base64: {e}"))
        }
        "$date" => {
            let t =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| format!("$date is not RFC 3339 ({text:?}): {e}"))?;
            let system = std::time::SystemTime::from(t);
            Ok(Value::Date(plist::Date::from(system)))
        }
        other => Err(format!(
            "unknown typed value {other:?} (use $data or $date; a key starting with $ is reserved)"
        )),
    }
    .map(Some)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn dict(v: Json) -> Result<Dictionary, String> {
        match v {
            Json::Object(m) => dict_from_json(m),
            _ => unreachable!("tests pass objects"),
        }
    }

    #[test]
    fn data_and_dates_become_their_plist_types() {
        let d = dict(json!({
            "Payload": {"$data": "PD94bWw+"},
            "At": {"$date": "2026-12-01T10:00:00Z"},
            "Nested": [{"$data": "AAEC"}, 1, 2.5, "s", true],
        }))
        .unwrap();
        assert_eq!(d.get("Payload"), Some(&Value::Data(b"<?xml>".to_vec())));
        let at = d.get("At").and_then(Value::as_date).unwrap();
        let expected = time::macros::datetime!(2026-12-01 10:00 UTC);
        assert_eq!(
            std::time::SystemTime::from(at),
            std::time::SystemTime::from(expected)
        );
        let nested = d.get("Nested").and_then(Value::as_array).unwrap();
        assert_eq!(nested[0], Value::Data(vec![0, 1, 2]));
        assert_eq!(nested[1], Value::Integer(1.into()));
        assert_eq!(nested[2], Value::Real(2.5));
        // The XML a device receives carries the types.
        let mut xml = Vec::new();
        Value::Dictionary(d).to_writer_xml(&mut xml).unwrap();
        let xml = String::from_utf8(xml).unwrap();
        assert!(xml.contains("<data>") && xml.contains("PD94bWw+"), "{xml}");
        assert!(xml.contains("<date>2026-12-01T10:00:00Z</date>"), "{xml}");
    }

    #[test]
    fn bad_typed_values_name_the_key() {
        for (v, needle) in [
            (json!({"P": {"$data": "%%%"}}), "P: $data is not base64"),
            (
                json!({"P": {"$date": "yesterday"}}),
                "P: $date is not RFC 3339",
            ),
            (json!({"P": {"$data": 5}}), "P: $data takes a string"),
            (json!({"P": {"$data": "AA==", "x": 1}}), "only key"),
            (json!({"P": {"$uid": "1"}}), "unknown typed value"),
            (json!({"P": [1, null]}), "P: [1]: null"),
        ] {
            let err = dict(v.clone()).unwrap_err();
            assert!(err.contains(needle), "{v}: {err}");
        }
        // An ordinary object whose first key is not typed stays a dictionary.
        let d = dict(json!({"P": {"a": 1}})).unwrap();
        assert!(d.get("P").and_then(Value::as_dictionary).is_some());
    }
}
