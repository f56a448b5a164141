//! Typed access to plist dictionary keys, with errors that name the key and the types.

use plist::{Dictionary, Value};

use super::DecodeError;

/// Longest `UDID` or `EnrollmentID` accepted, in bytes (real ones are 25 to 40).
pub const MAX_DEVICE_ID: usize = 128;
/// Longest APNs `Token` accepted, in bytes (real ones are 32).
pub const MAX_TOKEN: usize = 100;
/// Longest `PushMagic` accepted (a UUID, 36).
pub const MAX_PUSH_MAGIC: usize = 256;
/// Longest `Topic` accepted (`com.apple.mgmt.External.<uuid>`, 60).
pub const MAX_TOPIC: usize = 255;

/// The plist type name of a value, for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "array",
        Value::Dictionary(_) => "dictionary",
        Value::Boolean(_) => "boolean",
        Value::Data(_) => "data",
        Value::Date(_) => "date",
        Value::Real(_) => "real",
        Value::Integer(_) => "integer",
        Value::String(_) => "string",
        Value::Uid(_) => "uid",
        _ => "unknown",
    }
}

/// A dictionary and the path it sits at (empty for the top level), for error messages.
pub(crate) struct Fields<'a> {
    dict: &'a Dictionary,
    path: String,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(dict: &'a Dictionary) -> Self {
        Fields {
            dict,
            path: String::new(),
        }
    }

    pub(crate) fn nested(dict: &'a Dictionary, path: String) -> Self {
        Fields { dict, path }
    }

    pub(crate) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get_as<T>(
        &self,
        key: &str,
        expected: &'static str,
        pick: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, DecodeError> {
        let Some(v) = self.dict.get(key) else {
            return Ok(None);
        };
        pick(v).map(Some).ok_or_else(|| DecodeError::WrongType {
            key: self.key_path(key),
            expected,
            got: type_name(v),
        })
    }

    fn required<T>(&self, key: &str, v: Option<T>) -> Result<T, DecodeError> {
        v.ok_or_else(|| DecodeError::MissingKey {
            key: self.key_path(key),
        })
    }

    /// An optional string.
    pub(crate) fn string(&self, key: &str) -> Result<Option<String>, DecodeError> {
        self.get_as(key, "string", |v| v.as_string().map(str::to_owned))
    }

    /// A required string.
    pub(crate) fn req_string(&self, key: &str) -> Result<String, DecodeError> {
        let v = self.string(key)?;
        self.required(key, v)
    }

    /// A required, non-empty string.
    pub(crate) fn req_nonempty(&self, key: &str) -> Result<String, DecodeError> {
        let v = self.req_string(key)?;
        if v.trim().is_empty() {
            return Err(DecodeError::InvalidValue {
                key: self.key_path(key),
                why: "empty string".into(),
            });
        }
        Ok(v)
    }

    /// A required, non-empty string of at most `max` bytes.
    pub(crate) fn req_bounded(&self, key: &str, max: usize) -> Result<String, DecodeError> {
        let v = self.req_nonempty(key)?;
        self.check_len(key, v.len(), max)?;
        Ok(v)
    }

    /// An optional string of at most `max` bytes.
    pub(crate) fn bounded(&self, key: &str, max: usize) -> Result<Option<String>, DecodeError> {
        let v = self.string(key)?;
        if let Some(v) = &v {
            self.check_len(key, v.len(), max)?;
        }
        Ok(v)
    }

    /// Refuses a value of `len` bytes over `max`, naming the key.
    pub(crate) fn check_len(&self, key: &str, len: usize, max: usize) -> Result<(), DecodeError> {
        if len > max {
            return Err(DecodeError::InvalidValue {
                key: self.key_path(key),
                why: format!("{len} bytes, longer than the {max} allowed"),
            });
        }
        Ok(())
    }

    /// Optional data bytes.
    pub(crate) fn data(&self, key: &str) -> Result<Option<Vec<u8>>, DecodeError> {
        self.get_as(key, "data", |v| v.as_data().map(<[u8]>::to_vec))
    }

    /// Required data bytes.
    pub(crate) fn req_data(&self, key: &str) -> Result<Vec<u8>, DecodeError> {
        let v = self.data(key)?;
        self.required(key, v)
    }

    /// An optional boolean.
    pub(crate) fn boolean(&self, key: &str) -> Result<Option<bool>, DecodeError> {
        self.get_as(key, "boolean", Value::as_boolean)
    }

    /// An optional signed integer.
    pub(crate) fn integer(&self, key: &str) -> Result<Option<i64>, DecodeError> {
        self.get_as(key, "integer", Value::as_signed_integer)
    }

    /// An optional array.
    pub(crate) fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, DecodeError> {
        self.get_as(key, "array", Value::as_array)
    }

    /// An optional dictionary.
    pub(crate) fn dict(&self, key: &str) -> Result<Option<&'a Dictionary>, DecodeError> {
        self.get_as(key, "dictionary", Value::as_dictionary)
    }

    /// A string if present and a string; anything else is ignored. For command results whose
    /// keys Apple may extend or type loosely: losing one field beats rejecting the whole result.
    pub(crate) fn lenient_string(&self, key: &str) -> Option<String> {
        self.dict
            .get(key)
            .and_then(Value::as_string)
            .map(str::to_owned)
    }

    /// The device identifier: `UDID`, or `EnrollmentID` for User Enrollment (each at most
    /// [`MAX_DEVICE_ID`] bytes).
    pub(crate) fn device_id(&self) -> Result<String, DecodeError> {
        for key in ["UDID", "EnrollmentID"] {
            if let Some(id) = self.string(key)? {
                self.check_len(key, id.len(), MAX_DEVICE_ID)?;
                return non_empty(key, id);
            }
        }
        Err(DecodeError::MissingKey { key: "UDID".into() })
    }
}

fn non_empty(key: &str, v: String) -> Result<String, DecodeError> {
    if v.trim().is_empty() {
        return Err(DecodeError::InvalidValue {
            key: key.into(),
            why: "empty string".into(),
        });
    }
    Ok(v)
}
