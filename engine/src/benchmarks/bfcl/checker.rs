//! BFCL's AST checker, following BFCL's Python checker rules (Python-language categories):
//! required and unexpected parameters, type rules (int accepted for float, one level of nested
//! array types, dicts and lists of dicts), string normalization, option lists where `""` means
//! the parameter may be omitted, any order for parallel categories, no call for irrelevance (and
//! at least one call for relevance).
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{answer_name, find_description, is_empty_str, BfclItem};
use crate::parse::ToolCall;
use crate::pyval::{py_eq, py_in, py_type, py_type_name, PyType};

/// A checker failure: BFCL's `error_type` and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckError {
    pub error_type: String,
    pub message: String,
}

impl CheckError {
    fn new(error_type: &str, message: impl Into<String>) -> Self {
        CheckError {
            error_type: error_type.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

fn schema_type(t: &str) -> Option<PyType> {
    Some(match t {
        "string" | "any" => PyType::Str,
        "integer" => PyType::Int,
        "float" => PyType::Float,
        "boolean" => PyType::Bool,
        "array" | "tuple" => PyType::List,
        "dict" => PyType::Dict,
        _ => return None,
    })
}

/// BFCL's `standardize_string`: drop spaces and `,./-_*^`, lowercase, `'` → `"`.
pub fn standardize_string(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, ' ' | ',' | '.' | '/' | '-' | '_' | '*' | '^'))
        .collect::<String>()
        .to_lowercase()
        .replace('\'', "\"")
}

fn std_value(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(standardize_string(s)),
        other => other.clone(),
    }
}

fn possible_answer_type(options: &[Value]) -> Option<PyType> {
    options.iter().find(|o| !is_empty_str(o)).map(py_type)
}

/// BFCL's `type_checker`; `Ok(is_variable)` when the type is acceptable.
fn type_checker(
    param: &str,
    value: &Value,
    options: &[Value],
    expected_desc: &str,
    expected: PyType,
    nested: Option<PyType>,
) -> Result<bool, CheckError> {
    let pat = possible_answer_type(options);
    let is_variable = pat.is_some_and(|p| p != expected);
    let mut nested_failed = false;
    if py_type(value) == expected {
        let Some(nested) = nested else {
            return Ok(is_variable);
        };
        for item in options {
            let mut flag = true;
            if let (Value::Array(item_opts), Value::Array(vals)) = (item, value) {
                for v in vals {
                    let nd = py_type_name(nested);
                    if type_checker(param, v, item_opts, nd, nested, None).is_err() {
                        flag = false;
                        break;
                    }
                }
            }
            if flag {
                return Ok(is_variable);
            }
        }
        nested_failed = true;
    }
    if nested_failed {
        return Err(CheckError::new(
            "type_error:nested",
            format!("Nested type checking failed for parameter {param:?}. Expected outer type {expected_desc} with inner type {:?}. Parameter value: {value}.", nested.map(py_type_name)),
        ));
    }
    if pat.is_some_and(|p| py_type(value) == p) {
        return Ok(true);
    }
    Err(CheckError::new(
        "type_error:simple",
        format!(
            "Incorrect type for parameter {param:?}. Expected type {expected_desc}, got {}. Parameter value: {value}.",
            py_type_name(py_type(value))
        ),
    ))
}

fn string_checker(param: &str, value: &str, options: &[Value]) -> Result<(), CheckError> {
    let v = standardize_string(value);
    if options
        .iter()
        .filter_map(Value::as_str)
        .any(|o| standardize_string(o) == v)
    {
        return Ok(());
    }
    Err(CheckError::new(
        "value_error:string",
        format!("Invalid value for parameter {param:?}: {value:?}. Expected one of {}. Case insensitive.", Value::Array(options.to_vec())),
    ))
}

fn list_checker(param: &str, value: &[Value], options: &[Value]) -> Result<(), CheckError> {
    let out = Value::Array(value.iter().map(std_value).collect());
    for o in options {
        // Python iterates strings by character; other non-lists cannot match.
        let std_opt = match o {
            Value::Array(a) => Value::Array(a.iter().map(std_value).collect()),
            Value::String(s) => Value::Array(
                s.chars()
                    .map(|c| Value::String(standardize_string(&c.to_string())))
                    .collect(),
            ),
            _ => continue,
        };
        if py_eq(&out, &std_opt) {
            return Ok(());
        }
    }
    Err(CheckError::new(
        "value_error:list/tuple",
        format!(
            "Invalid value for parameter {param:?}: {}. Expected one of {}.",
            Value::Array(value.to_vec()),
            Value::Array(options.to_vec())
        ),
    ))
}

fn dict_checker(value: &Value, options: &[Value]) -> Result<(), CheckError> {
    let mut err = CheckError::new("dict_checker:unclear", "");
    let Value::Object(out) = value else {
        return Err(CheckError::new(
            "value_error:dict_key",
            "value is not a dict",
        ));
    };
    for opt in options {
        if is_empty_str(opt) {
            continue;
        }
        let Value::Object(opt) = opt else {
            err = CheckError::new("dict_checker:unclear", "possible answer is not a dict");
            continue;
        };
        let mut flag = true;
        for (k, v) in out {
            let Some(allowed) = opt.get(k) else {
                err = CheckError::new(
                    "value_error:dict_key",
                    format!("Unexpected dict key parameter: '{k}'."),
                );
                flag = false;
                break;
            };
            let allowed: Vec<Value> = match allowed {
                Value::Array(a) => a.iter().map(std_value).collect(),
                other => vec![std_value(other)],
            };
            if !py_in(&std_value(v), &allowed) {
                err = CheckError::new(
                    "value_error:dict_value",
                    format!(
                        "Invalid value for parameter {k:?}: {v}. Expected one of {}.",
                        Value::Array(allowed)
                    ),
                );
                flag = false;
                break;
            }
        }
        if flag {
            for (k, allowed) in opt {
                let omittable = allowed
                    .as_array()
                    .is_some_and(|a| a.iter().any(is_empty_str));
                if !out.contains_key(k) && !omittable {
                    err = CheckError::new(
                        "value_error:dict_key",
                        format!("Missing dict key parameter: '{k}'."),
                    );
                    flag = false;
                    break;
                }
            }
        }
        if flag {
            return Ok(());
        }
    }
    Err(err)
}

fn list_dict_checker(value: &[Value], options: &[Value]) -> Result<(), CheckError> {
    let mut err = CheckError::new("list_dict_checker:unclear", "");
    for opt in options {
        let opt_items: Vec<Value> = match opt {
            Value::Array(a) => a.clone(),
            _ => Vec::new(),
        };
        if value.len() != opt_items.len() {
            err = CheckError::new(
                "value_error:list_dict_count",
                "Wrong number of dictionaries in the list.",
            );
            continue;
        }
        let mut flag = true;
        for (v, o) in value.iter().zip(&opt_items) {
            if let Err(e) = dict_checker(v, std::slice::from_ref(o)) {
                err = e;
                flag = false;
                break;
            }
        }
        if flag {
            return Ok(());
        }
    }
    Err(err)
}

/// BFCL's `simple_function_checker` for one call against one `{name: {param: options}}`.
pub fn simple_function_checker(
    func: &Value,
    call: &ToolCall,
    possible: &Value,
) -> Result<(), CheckError> {
    let Some((_, Value::Object(possible))) = possible.as_object().and_then(|m| m.iter().next())
    else {
        return Err(CheckError::new(
            "simple_function_checker:unclear",
            "malformed possible answer",
        ));
    };
    let func_name = func.get("name").and_then(Value::as_str).unwrap_or("");
    let empty = Map::new();
    let params = func.get("parameters");
    let details = params
        .and_then(|p| p.get("properties"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let required: Vec<&str> = params
        .and_then(|p| p.get("required"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if call.name != func_name {
        return Err(CheckError::new(
            "simple_function_checker:wrong_func_name",
            format!("Function name {func_name:?} not found in model output."),
        ));
    }
    for r in &required {
        if !call.arguments.contains_key(*r) {
            return Err(CheckError::new(
                "simple_function_checker:missing_required",
                format!("Missing required parameter: {r:?}."),
            ));
        }
    }
    for (param, value) in &call.arguments {
        let (Some(detail), Some(options)) = (details.get(param), possible.get(param)) else {
            return Err(CheckError::new(
                "simple_function_checker:unexpected_param",
                format!("Unexpected parameter: {param:?}."),
            ));
        };
        let options: Vec<Value> = match options {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        let desc = detail.get("type").and_then(Value::as_str).unwrap_or("");
        let expected = schema_type(desc).ok_or_else(|| {
            CheckError::new(
                "type_error:unsupported",
                format!("Unsupported type {desc:?} for parameter {param:?}."),
            )
        })?;
        let nested = if matches!(desc, "array" | "tuple") {
            let nd = detail
                .get("items")
                .and_then(|i| i.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("");
            Some(schema_type(nd).ok_or_else(|| {
                CheckError::new(
                    "type_error:unsupported",
                    format!("Unsupported item type {nd:?} for parameter {param:?}."),
                )
            })?)
        } else {
            None
        };
        let mut value = value.clone();
        if desc == "float" && py_type(&value) == PyType::Int {
            if let Some(f) = value.as_f64() {
                value = serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .unwrap_or(value);
            }
        }
        let is_variable = type_checker(param, &value, &options, desc, expected, nested)?;
        if !is_variable {
            match (expected, nested, &value) {
                (PyType::Dict, _, _) => {
                    dict_checker(&value, &options)?;
                    continue;
                }
                (PyType::List, Some(PyType::Dict), Value::Array(items)) => {
                    list_dict_checker(items, &options)?;
                    continue;
                }
                (PyType::Str, _, Value::String(s)) => {
                    string_checker(param, s, &options)?;
                    continue;
                }
                (PyType::List, _, Value::Array(items)) => {
                    list_checker(param, items, &options)?;
                    continue;
                }
                _ => {}
            }
        }
        if !py_in(&value, &options) {
            return Err(CheckError::new(
                "value_error:others",
                format!(
                    "Invalid value for parameter {param:?}: {value}. Expected one of {}.",
                    Value::Array(options)
                ),
            ));
        }
    }
    for (param, options) in possible {
        let omittable = match options {
            Value::Array(a) => a.iter().any(is_empty_str),
            other => is_empty_str(other),
        };
        if !call.arguments.contains_key(param) && !omittable {
            return Err(CheckError::new(
                "simple_function_checker:missing_optional",
                format!("Optional parameter {param:?} not provided and not marked as optional."),
            ));
        }
    }
    Ok(())
}

/// BFCL's `ast_checker` dispatch by category name.
pub fn check(item: &BfclItem, output: &[ToolCall]) -> Result<(), CheckError> {
    let cat = item.category.as_str();
    if cat.contains("irrelevance") {
        return if output.is_empty() {
            Ok(())
        } else {
            Err(CheckError::new(
                "irrelevance_error:decoder_success",
                "Valid syntax. Successfully decode AST when it should not.",
            ))
        };
    }
    if cat.contains("relevance") {
        return if output.is_empty() {
            Err(CheckError::new(
                "relevance_error:decoder_failed",
                "No function call when one was expected.",
            ))
        } else {
            Ok(())
        };
    }
    let gt = item.ground_truth.as_deref().unwrap_or(&[]);
    if output.len() != gt.len() && (cat.contains("parallel") || cat.contains("multiple")) {
        let kind = if cat.contains("parallel") {
            "parallel_function_checker_no_order"
        } else {
            "multiple_function_checker"
        };
        return Err(CheckError::new(
            &format!("{kind}:wrong_count"),
            "Wrong number of functions.",
        ));
    }
    if cat.contains("parallel") {
        let mut matched: Vec<usize> = Vec::new();
        for (i, possible) in gt.iter().enumerate() {
            let name = answer_name(possible);
            let func = find_description(&item.functions, name).ok_or_else(|| {
                CheckError::new(
                    "parallel_function_checker_no_order:cannot_find_description",
                    format!("No description for {name:?}."),
                )
            })?;
            let hit = (0..output.len())
                .filter(|j| !matched.contains(j))
                .find(|&j| simple_function_checker(func, &output[j], possible).is_ok());
            match hit {
                Some(j) => matched.push(j),
                None => {
                    return Err(CheckError::new(
                        "parallel_function_checker_no_order:cannot_find_match",
                        format!("Could not find a matching function among the model output for index {i} of possible answers."),
                    ))
                }
            }
        }
        return Ok(());
    }
    if cat.contains("multiple") {
        let Some(possible) = gt.first() else {
            return Err(CheckError::new(
                "multiple_function_checker:unclear",
                "empty ground truth",
            ));
        };
        let func = find_description(&item.functions, answer_name(possible)).ok_or_else(|| {
            CheckError::new(
                "multiple_function_checker:cannot_find_description",
                "no description",
            )
        })?;
        return simple_function_checker(func, &output[0], possible);
    }
    if output.len() != 1 {
        return Err(CheckError::new(
            "simple_function_checker:wrong_count",
            "Wrong number of functions.",
        ));
    }
    let (Some(func), Some(possible)) = (item.functions.first(), gt.first()) else {
        return Err(CheckError::new(
            "simple_function_checker:unclear",
            "empty function list or ground truth",
        ));
    };
    simple_function_checker(func, &output[0], possible)
}

#[cfg(test)]
mod tests {
    use super::super::gold_calls;
    use super::*;
    use serde_json::json;

    fn item(cat: &str, functions: Value, gt: Value) -> BfclItem {
        BfclItem {
            id: "x".into(),
            category: cat.into(),
            question: Value::Null,
            functions: functions.as_array().unwrap().clone(),
            ground_truth: gt.as_array().cloned(),
        }
    }

    fn tri() -> BfclItem {
        item(
            "simple_python",
            json!([{"name": "area", "parameters": {"type": "dict", "properties": {
                "base": {"type": "integer"}, "height": {"type": "float"}, "unit": {"type": "string"},
                "dims": {"type": "array", "items": {"type": "integer"}}}, "required": ["base", "height"]}}]),
            json!([{"area": {"base": [10], "height": [5.0], "unit": ["units", ""], "dims": [[1, 2], ""]}}]),
        )
    }

    #[test]
    fn simple_rules() {
        let it = tri();
        let ok = |args: Value| check(&it, &[ToolCall::new("area", args)]);
        assert!(
            ok(json!({"base": 10, "height": 5})).is_ok(),
            "int accepted for float"
        );
        assert!(
            ok(json!({"base": 10, "height": 5.0, "unit": "Units"})).is_ok(),
            "case-insensitive strings"
        );
        assert!(ok(json!({"base": 10, "height": 5.0, "dims": [1, 2]})).is_ok());
        assert_eq!(
            ok(json!({"base": 10.0, "height": 5}))
                .unwrap_err()
                .error_type,
            "type_error:simple"
        );
        assert_eq!(
            ok(json!({"height": 5})).unwrap_err().error_type,
            "simple_function_checker:missing_required"
        );
        assert_eq!(
            ok(json!({"base": 10, "height": 5, "x": 1}))
                .unwrap_err()
                .error_type,
            "simple_function_checker:unexpected_param"
        );
        assert_eq!(
            ok(json!({"base": 11, "height": 5})).unwrap_err().error_type,
            "value_error:others"
        );
        assert_eq!(
            ok(json!({"base": 10, "height": 5, "unit": "cm"}))
                .unwrap_err()
                .error_type,
            "value_error:string"
        );
        assert_eq!(
            ok(json!({"base": 10, "height": 5, "dims": [2, 1]}))
                .unwrap_err()
                .error_type,
            "value_error:list/tuple"
        );
        // as in BFCL, an omittable ("") option makes the nested type check pass; the value check fails
        assert_eq!(
            ok(json!({"base": 10, "height": 5, "dims": ["1"]}))
                .unwrap_err()
                .error_type,
            "value_error:list/tuple"
        );
        let strict = item(
            "simple_python",
            json!([{"name": "f", "parameters": {"type": "dict", "properties": {"d": {"type": "array", "items": {"type": "integer"}}}, "required": ["d"]}}]),
            json!([{"f": {"d": [[1, 2]]}}]),
        );
        let e = check(&strict, &[ToolCall::new("f", json!({"d": ["1"]}))]).unwrap_err();
        assert_eq!(e.error_type, "type_error:nested");
        assert!(check(&it, &[]).is_err());
        assert_eq!(
            check(&it, &[ToolCall::new("other", json!({}))])
                .unwrap_err()
                .error_type,
            "simple_function_checker:wrong_func_name"
        );
    }

    #[test]
    fn optional_without_empty_marker_is_required() {
        let it = item(
            "simple_python",
            json!([{"name": "f", "parameters": {"type": "dict", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}}, "required": ["a"]}}]),
            json!([{"f": {"a": [1], "b": [true]}}]),
        );
        let e = check(&it, &[ToolCall::new("f", json!({"a": 1}))]).unwrap_err();
        assert_eq!(e.error_type, "simple_function_checker:missing_optional");
        assert!(check(&it, &[ToolCall::new("f", json!({"a": 1, "b": true}))]).is_ok());
    }

    #[test]
    fn dict_and_list_of_dicts() {
        let it = item(
            "simple_python",
            json!([{"name": "f", "parameters": {"type": "dict", "properties": {
                "loc": {"type": "dict"}, "pts": {"type": "array", "items": {"type": "dict"}}}, "required": ["loc"]}}]),
            json!([{"f": {"loc": [{"city": ["New York", "NYC"], "state": ["NY", ""]}], "pts": [[{"x": [1]}, {"x": [2]}], ""]}}]),
        );
        let c = |args: Value| check(&it, &[ToolCall::new("f", args)]);
        assert!(c(json!({"loc": {"city": "nyc"}})).is_ok());
        assert!(c(
            json!({"loc": {"city": "new york", "state": "NY"}, "pts": [{"x": 1}, {"x": 2}]})
        )
        .is_ok());
        assert_eq!(
            c(json!({"loc": {"city": "LA"}})).unwrap_err().error_type,
            "value_error:dict_value"
        );
        assert_eq!(
            c(json!({"loc": {"state": "NY"}})).unwrap_err().error_type,
            "value_error:dict_key"
        );
        assert_eq!(
            c(json!({"loc": {"city": "NYC"}, "pts": [{"x": 1}]}))
                .unwrap_err()
                .error_type,
            "value_error:list_dict_count"
        );
        assert_eq!(
            gold_calls(&it)[0].arguments["loc"],
            json!({"city": "New York", "state": "NY"})
        );
    }

    #[test]
    fn parallel_any_order_and_irrelevance() {
        let f = json!([{"name": "g", "parameters": {"type": "dict", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}]);
        let it = item(
            "parallel",
            f.clone(),
            json!([{"g": {"n": [1]}}, {"g": {"n": [2]}}]),
        );
        let a = ToolCall::new("g", json!({"n": 1}));
        let b = ToolCall::new("g", json!({"n": 2}));
        assert!(check(&it, &[b.clone(), a.clone()]).is_ok());
        assert!(check(&it, &[a.clone(), a.clone()]).is_err());
        assert_eq!(
            check(&it, std::slice::from_ref(&a)).unwrap_err().error_type,
            "parallel_function_checker_no_order:wrong_count"
        );
        let irr = item("irrelevance", f, json!(null));
        assert!(check(&irr, &[]).is_ok());
        assert!(check(&irr, &[a]).is_err());
    }
}
