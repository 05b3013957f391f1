//! Python conversions that ComfyUI's validation applies to widget values.
//!
//! Validation calls `int()`, `float()`, `str()` and `bool()` on constants and compares with
//! Python equality; the accepted inputs and the exception texts (which end up in error JSON) are
//! reproduced here.

use serde_json::{Number, Value};

use crate::pyjson::{py_repr, py_str, truthy};

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn clean_numeric(s: &str) -> Option<String> {
    let t = s.trim();
    // Python allows single underscores between digits.
    if t.starts_with('_') || t.ends_with('_') || t.contains("__") {
        return None;
    }
    Some(t.replace('_', ""))
}

/// Python `int(value)`; `Err` holds the exception message.
pub fn py_int(v: &Value) -> Result<Value, String> {
    match v {
        Value::Bool(b) => Ok(Value::from(*b as i64)),
        Value::Number(n) if !n.is_f64() => Ok(v.clone()),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.is_nan() {
                Err("cannot convert float NaN to integer".into())
            } else if f.is_infinite() {
                Err("cannot convert float infinity to integer".into())
            } else if f.trunc().abs() < 9.2e18 {
                Ok(Value::from(f.trunc() as i64))
            } else {
                Ok(Number::from_f64(f.trunc())
                    .map(Value::Number)
                    .unwrap_or(Value::Null))
            }
        }
        Value::String(s) => {
            let bad = || format!("invalid literal for int() with base 10: {}", py_repr(v));
            let t = clean_numeric(s).ok_or_else(bad)?;
            let digits = t.strip_prefix(['+', '-']).unwrap_or(&t);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            if let Ok(i) = t.parse::<i64>() {
                Ok(Value::from(i))
            } else if let Ok(u) = t.trim_start_matches('+').parse::<u64>() {
                Ok(Value::from(u))
            } else {
                Err(bad())
            }
        }
        other => Err(format!(
            "int() argument must be a string, a bytes-like object or a real number, not '{}'",
            type_name(other)
        )),
    }
}

/// Python `float(value)`; `Err` holds the exception message.
pub fn py_float(v: &Value) -> Result<Value, String> {
    let f = match v {
        Value::Bool(b) => *b as i64 as f64,
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => {
            let bad = || format!("could not convert string to float: {}", py_repr(v));
            let t = clean_numeric(s).ok_or_else(bad)?;
            let lower = t.to_ascii_lowercase();
            let body = lower.trim_start_matches(['+', '-']);
            if matches!(body, "inf" | "infinity" | "nan") {
                return Err("non-finite floats are not representable in JSON".into());
            }
            if body.is_empty()
                || !body
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'+' || b == b'-')
            {
                return Err(bad());
            }
            t.parse::<f64>().map_err(|_| bad())?
        }
        other => {
            return Err(format!(
                "float() argument must be a string or a real number, not '{}'",
                type_name(other)
            ));
        }
    };
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| "non-finite float".to_string())
}

/// Python `str(value)` as a JSON string.
pub fn py_string(v: &Value) -> Value {
    Value::String(py_str(v))
}

/// Python `bool(value)`.
pub fn py_bool(v: &Value) -> Value {
    Value::Bool(truthy(v))
}

/// Numeric view for comparisons (`True` is 1), `None` for non-numbers.
pub fn as_num(v: &Value) -> Option<f64> {
    match v {
        Value::Bool(b) => Some(*b as i64 as f64),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// Python `a == b` for decoded JSON values.
pub fn py_eq(a: &Value, b: &Value) -> bool {
    match (as_num(a), as_num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => match (a, b) {
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
            }
            _ => a == b,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn int_matches_python() {
        assert_eq!(py_int(&json!("64")), Ok(json!(64)));
        assert_eq!(py_int(&json!(" -7 ")), Ok(json!(-7)));
        assert_eq!(py_int(&json!(5.9)), Ok(json!(5)));
        assert_eq!(
            py_int(&json!("abc")),
            Err("invalid literal for int() with base 10: 'abc'".into())
        );
        assert!(py_int(&json!("6.4")).is_err());
        assert!(py_int(&json!(null)).unwrap_err().contains("'NoneType'"));
    }

    #[test]
    fn float_and_equality_match_python() {
        assert_eq!(py_float(&json!(64)), Ok(json!(64.0)));
        assert_eq!(py_float(&json!("1e3")), Ok(json!(1000.0)));
        assert!(py_float(&json!("x")).is_err());
        assert!(py_eq(&json!(1), &json!(1.0)));
        assert!(!py_eq(&json!("1"), &json!(1)));
    }
}
