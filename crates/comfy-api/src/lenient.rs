//! Lenient decoding helpers for JSON written by Python.
//!
//! Problem: ComfyUI serialises Python numbers with `json.dumps`, so one field can be `7` in one
//! answer and `7.0` (or even bare `NaN`) in another; strict serde types would reject valid
//! answers. Decode failures must also say *where* the shape broke.
//!
//! Approach: small deserializer functions used with `#[serde(deserialize_with)]` that accept any
//! JSON number (and numeric strings) for integer fields; [`decode`] runs serde through
//! `serde_path_to_error` and, if the text has Python's non-standard `NaN`/`Infinity` tokens,
//! retries once with those tokens replaced by `null`.

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use std::fmt;

/// A decode failure: the JSON path that failed and the cause.
#[derive(Debug, Clone)]
pub(crate) struct DecodeFailure {
    pub path: String,
    pub message: String,
}

/// Decodes `bytes` as `T`, reporting the failing JSON path; tolerates Python `NaN`/`Infinity`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeFailure> {
    match decode_strict(bytes) {
        Ok(v) => Ok(v),
        Err(first) => {
            let Some(clean) = replace_python_non_finite(bytes) else {
                return Err(first);
            };
            decode_strict(&clean).map_err(|_| first)
        }
    }
}

fn decode_strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeFailure> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(de).map_err(|e| DecodeFailure {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    Ok(value)
}

/// Replaces bare `NaN`, `Infinity` and `-Infinity` tokens outside strings with `null`.
/// Returns `None` when there was nothing to replace.
pub(crate) fn replace_python_non_finite(bytes: &[u8]) -> Option<Vec<u8>> {
    const TOKENS: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut escaped, mut changed) = (false, false, false);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            out.push(b);
            i += 1;
            continue;
        }
        if let Some(tok) = TOKENS.iter().find(|t| bytes[i..].starts_with(t)) {
            out.extend_from_slice(b"null");
            i += tok.len();
            changed = true;
            continue;
        }
        out.push(b);
        i += 1;
    }
    changed.then_some(out)
}

struct U64Visitor;

impl Visitor<'_> for U64Visitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative number")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("negative value {v}")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.is_finite() && v >= 0.0 && v <= u64::MAX as f64 {
            // Python floats such as `1048576.0` stand for integers here.
            Ok(v.round() as u64)
        } else {
            Err(E::custom(format!("{v} is not a non-negative integer")))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        let v = v.trim();
        v.parse::<u64>().or_else(|_| {
            v.parse::<f64>()
                .map_err(E::custom)
                .and_then(|f| self.visit_f64(f))
        })
    }
}

/// Decodes an integer field that may arrive as `7`, `7.0` or `"7"`.
pub(crate) fn u64_any<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64Visitor)
}

/// Like [`u64_any`] but `null` (or a missing field with `#[serde(default)]`) gives `None`.
pub(crate) fn opt_u64_any<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v: Option<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => u64_any(v).map(Some).map_err(de::Error::custom),
    }
}

/// Decodes a float field that may arrive as an int, a float, `null` (Python `NaN`) or a string.
pub(crate) fn f64_any<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v: serde_json::Value = serde::Deserialize::deserialize(d)?;
    match v {
        serde_json::Value::Number(n) => Ok(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::Null => Ok(f64::NAN),
        serde_json::Value::String(s) => s.trim().parse().map_err(de::Error::custom),
        other => Err(de::Error::custom(format!("expected a number, got {other}"))),
    }
}

/// Like [`f64_any`] but `null` or absence gives `None`.
pub(crate) fn opt_f64_any<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v: Option<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => f64_any(v).map(Some).map_err(de::Error::custom),
    }
}

/// Decodes a bool that may arrive as `true`, `1` or `null` (false).
pub(crate) fn bool_any<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v: serde_json::Value = serde::Deserialize::deserialize(d)?;
    match v {
        serde_json::Value::Bool(b) => Ok(b),
        serde_json::Value::Null => Ok(false),
        serde_json::Value::Number(n) => Ok(n.as_f64().is_some_and(|f| f != 0.0)),
        other => Err(de::Error::custom(format!(
            "expected a boolean, got {other}"
        ))),
    }
}

/// Like [`bool_any`] but `null` or absence gives `None`.
pub(crate) fn opt_bool_any<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v: Option<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => bool_any(v).map(Some).map_err(de::Error::custom),
    }
}

/// Decodes a string id that Python may have emitted as a number (`12345` for `"12345"`).
pub(crate) fn id_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v: serde_json::Value = serde::Deserialize::deserialize(d)?;
    match v {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(de::Error::custom(format!(
            "expected an id string, got {other}"
        ))),
    }
}

/// Like [`id_string`] but `null` or absence gives `None`.
pub(crate) fn opt_id_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v: Option<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => id_string(v).map(Some).map_err(de::Error::custom),
    }
}

/// Like [`id_string`] but `null` or absence gives an empty string.
pub(crate) fn id_string_or_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    opt_id_string(d).map(Option::unwrap_or_default)
}

/// Decodes a list of ids, accepting numbers for strings and `null` for an empty list.
pub(crate) fn id_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v: Option<Vec<serde_json::Value>> = serde::Deserialize::deserialize(d)?;
    v.unwrap_or_default()
        .into_iter()
        .map(|x| id_string(x).map_err(de::Error::custom))
        .collect()
}

/// Decodes a JSON object into a `Vec` of pairs, keeping the order of the text.
pub(crate) fn ordered_map<'de, D, T>(d: D) -> Result<Vec<(String, T)>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct MapVisitor<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for MapVisitor<T> {
        type Value = Vec<(String, T)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some((k, v)) = map.next_entry::<String, T>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(MapVisitor(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_tokens_are_replaced_outside_strings_only() {
        let src = br#"{"a": NaN, "b": "NaN Infinity", "c": [-Infinity, Infinity]}"#;
        let out = replace_python_non_finite(src).expect("tokens present");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"a": null, "b": "NaN Infinity", "c": [null, null]}"#
        );
        assert!(replace_python_non_finite(br#"{"a": "NaN"}"#).is_none());
    }

    #[test]
    fn integers_accept_python_float_forms() {
        #[derive(serde::Deserialize)]
        struct S {
            #[serde(deserialize_with = "u64_any")]
            n: u64,
        }
        for (text, want) in [(r#"{"n":7}"#, 7), (r#"{"n":7.0}"#, 7), (r#"{"n":"7"}"#, 7)] {
            let s: S = decode(text.as_bytes()).expect(text);
            assert_eq!(s.n, want, "{text}");
        }
        let err = decode::<S>(br#"{"n":-1}"#)
            .err()
            .expect("negative must fail");
        assert_eq!(err.path, "n");
    }
}
