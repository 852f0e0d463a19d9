//! Python-like values and equality, so the benchmark checkers and the ToolRL reward compare as
//! their Python code does (`1 == 1.0`, `True == 1`, `int` and `float` told apart by type), and
//! simple Python literals read as JSON.
use serde_json::Value;

/// Python type of a JSON value as Python's `json.loads` would produce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PyType {
    Int,
    Float,
    Bool,
    Str,
    List,
    Dict,
    None,
}

pub fn py_type(v: &Value) -> PyType {
    match v {
        Value::Null => PyType::None,
        Value::Bool(_) => PyType::Bool,
        Value::Number(n) if n.is_i64() || n.is_u64() => PyType::Int,
        Value::Number(_) => PyType::Float,
        Value::String(_) => PyType::Str,
        Value::Array(_) => PyType::List,
        Value::Object(_) => PyType::Dict,
    }
}

pub fn py_type_name(t: PyType) -> &'static str {
    match t {
        PyType::Int => "int",
        PyType::Float => "float",
        PyType::Bool => "bool",
        PyType::Str => "str",
        PyType::List => "list",
        PyType::Dict => "dict",
        PyType::None => "NoneType",
    }
}

fn as_num(v: &Value) -> Option<f64> {
    match v {
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// Python `==` on JSON-decoded values.
pub fn py_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Bool(_) | Value::Number(_), Value::Bool(_) | Value::Number(_)) => {
            as_num(a) == as_num(b)
        }
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Null, Value::Null) => true,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        _ => false,
    }
}

/// Python `x in list`.
pub fn py_in(x: &Value, list: &[Value]) -> bool {
    list.iter().any(|y| py_eq(x, y))
}

/// Convert a simple Python literal (dicts, lists, single- or double-quoted strings, numbers,
/// True/False/None) to JSON; `None` when it is not one.
pub fn py_literal_to_json(s: &str) -> Option<Value> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push('"');
                let mut closed = false;
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            if e == '\'' {
                                out.push('\'');
                            } else {
                                out.push('\\');
                                out.push(e);
                            }
                        }
                    } else if d == c {
                        closed = true;
                        break;
                    } else if d == '"' {
                        out.push_str("\\\"");
                    } else {
                        out.push(d);
                    }
                }
                if !closed {
                    return None;
                }
                out.push('"');
            }
            c if c.is_ascii_alphabetic() => {
                let mut word = c.to_string();
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' {
                        word.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str(match word.as_str() {
                    "True" => "true",
                    "False" => "false",
                    "None" => "null",
                    _ => return None,
                });
            }
            other => out.push(other),
        }
    }
    serde_json::from_str(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_equality() {
        assert!(py_eq(&json!(1), &json!(1.0)));
        assert!(py_eq(&json!(true), &json!(1)));
        assert!(!py_eq(&json!("1"), &json!(1)));
        assert!(py_eq(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!py_eq(&json!([1, 2]), &json!([2, 1])));
        assert_eq!(py_type(&json!(1.0)), PyType::Float);
        assert_eq!(py_type(&json!(1)), PyType::Int);
    }

    #[test]
    fn python_literals_convert() {
        let v = py_literal_to_json(
            "{'a': {'type': 'str', 'description': \"it's\"}, 'b': [True, None, 1.5]}",
        )
        .unwrap();
        assert_eq!(v["a"]["type"], "str");
        assert_eq!(v["a"]["description"], "it's");
        assert_eq!(v["b"], serde_json::json!([true, null, 1.5]));
        assert!(py_literal_to_json("{'a': import}").is_none());
        assert!(py_literal_to_json("{'a").is_none());
    }
}
