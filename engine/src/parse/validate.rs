//! Validation of parsed calls against tool schemas (a JSON-Schema subset that also understands
//! BFCL's type names: `dict`, `float`, `tuple`, `any`).
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ParseIssue, ToolCall};

/// A tool signature: name, description and a JSON-Schema `parameters` object
/// (`{"type": "object", "properties": {…}, "required": […]}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSchema {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "empty_params")]
    pub parameters: Value,
}

fn empty_params() -> Value {
    serde_json::json!({"type": "object", "properties": {}, "required": []})
}

impl ToolSchema {
    /// Names of required parameters.
    pub fn required(&self) -> Vec<&str> {
        self.parameters
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// The schema of one parameter.
    pub fn property(&self, name: &str) -> Option<&Value> {
        self.parameters.get("properties").and_then(|p| p.get(name))
    }

    /// Parameter names in declaration order.
    pub fn property_names(&self) -> Vec<&str> {
        self.parameters
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// JSON type name of a value (`integer` and `number` told apart).
pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The schema keyword that lets a parameter take its value written as a string
/// ([`string_reads_as`]). API-Bank's and ToolRL's tool lists get it (their tools, in Python,
/// parse such strings, and about one gold value in seven is written that way); BFCL's and the
/// built-in world's do not, so `"1"` for an integer stays wrong there.
pub const COERCE_STRINGS: &str = "x-coerce-strings";

/// A value written as a string that reads as `ty`: `"3"` as an integer, `"2.5"` as a number,
/// `"true"`/`"True"` as a boolean, `"['a', 'b']"` or `"[1, 2]"` as an array, a dict literal as
/// an object.
fn string_reads_as(s: &str, schema: &Value, ty: &str, depth: usize) -> bool {
    let t = s.trim();
    match ty {
        "integer" => t.parse::<i64>().is_ok(),
        "number" | "float" | "double" => t.parse::<f64>().is_ok_and(f64::is_finite),
        "boolean" | "bool" => matches!(t, "true" | "false" | "True" | "False"),
        "array" | "tuple" | "list" | "object" | "dict" => {
            let parsed = serde_json::from_str::<Value>(t)
                .ok()
                .or_else(|| crate::pyval::py_literal_to_json(t));
            parsed.is_some_and(|v| !v.is_string() && type_ok(&v, schema, depth + 1))
        }
        _ => false,
    }
}

/// Whether `v` has the declared schema type (recursing into `items` of arrays and `properties`
/// of objects); where the schema says [`COERCE_STRINGS`], a string that reads as the type
/// passes. Unknown or missing types accept anything.
pub(crate) fn type_ok(v: &Value, schema: &Value, depth: usize) -> bool {
    if depth > 16 {
        return true;
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("any");
    if let Value::String(s) = v {
        let coerce = schema.get(COERCE_STRINGS).and_then(Value::as_bool) == Some(true);
        if coerce && ty != "string" && string_reads_as(s, schema, ty, depth) {
            return true;
        }
    }
    let ok = match ty {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" | "float" | "double" => v.is_number(),
        "boolean" | "bool" => v.is_boolean(),
        "array" | "tuple" | "list" => v.is_array(),
        "object" | "dict" => v.is_object(),
        "null" => v.is_null(),
        _ => true,
    };
    if !ok {
        return false;
    }
    match v {
        Value::Array(items) => match schema.get("items") {
            Some(item_schema) => items.iter().all(|i| type_ok(i, item_schema, depth + 1)),
            None => true,
        },
        Value::Object(m) => match schema.get("properties").and_then(Value::as_object) {
            Some(props) => m
                .iter()
                .all(|(k, x)| props.get(k).is_none_or(|s| type_ok(x, s, depth + 1))),
            None => true,
        },
        _ => true,
    }
}

/// The JSON Schema of a type as tool lists write it, and whether the type says the parameter
/// is optional. Understood: JSON Schema's names (`string`, `integer`, `number`, `boolean`,
/// `array`, `object`), Python's (`str`, `int`, `float`, `bool`, `list`, `dict`, `tuple`, `set`),
/// typing's (`List[int]`, `List[List[float]]`, `Dict`, `Tuple[float, float]`,
/// `Union[int, float]`, `Optional[str]`, `Any`), API-Bank's `list(str)`, and a trailing
/// `, optional` (ToolRL's `str, optional`). `Any` and `Callable[...]` accept anything; a name
/// not understood is kept as the `type` (which [`validate_call`] does not check).
pub fn schema_of_type_name(name: &str) -> (Value, bool) {
    let mut t = name.trim();
    let mut optional = false;
    let lower = t.to_ascii_lowercase();
    if lower.ends_with(", optional") || lower.ends_with(",optional") {
        optional = true;
        t = t[..t.rfind(',').unwrap_or(t.len())].trim();
    }
    let (schema, opt) = type_schema(t, 0);
    (schema, optional || opt)
}

/// Splits `a, b[c, d], e` at its top-level commas.
fn split_args(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out.retain(|a| !a.is_empty());
    out
}

fn type_schema(t: &str, depth: usize) -> (Value, bool) {
    use serde_json::json;
    let t = t.trim();
    if depth > 8 {
        return (json!({}), false);
    }
    // `Base[args]` or `base(args)`
    let (base, args) = match t.find(['[', '(']) {
        Some(i) if t.ends_with(']') || t.ends_with(')') => {
            (&t[..i], split_args(&t[i + 1..t.len() - 1]))
        }
        _ => (t, Vec::new()),
    };
    let sub = |a: &str| type_schema(a, depth + 1).0;
    let simple = |ty: &str| json!({ "type": ty });
    let schema = match base.trim().to_ascii_lowercase().as_str() {
        "str" | "string" => simple("string"),
        "int" | "integer" => simple("integer"),
        "float" | "number" | "double" => simple("number"),
        "bool" | "boolean" => simple("boolean"),
        "dict" | "object" | "mapping" => simple("object"),
        "none" | "null" => simple("null"),
        "any" | "callable" => json!({}),
        "optional" => {
            let inner = args.first().map(|a| sub(a)).unwrap_or_else(|| json!({}));
            return (inner, true);
        }
        "list" | "array" | "sequence" | "set" | "tuple" => {
            let items: Vec<Value> = args.iter().map(|a| sub(a)).collect();
            match items.first() {
                // A tuple's items must share one schema to be checked (else any items).
                Some(first) if items.iter().all(|i| i == first) => {
                    json!({"type": "array", "items": first})
                }
                _ => simple("array"),
            }
        }
        "union" => {
            let items: Vec<Value> = args.iter().map(|a| sub(a)).collect();
            let ty = |v: &Value| v.get("type").and_then(Value::as_str).map(str::to_string);
            let tys: Vec<Option<String>> = items.iter().map(ty).collect();
            if items.is_empty() {
                json!({})
            } else if tys
                .iter()
                .all(|t| matches!(t.as_deref(), Some("integer" | "number")))
            {
                simple("number")
            } else if items.first().is_some_and(|f| items.iter().all(|i| i == f)) {
                items[0].clone()
            } else {
                json!({})
            }
        }
        _ => json!({ "type": t }),
    };
    (schema, false)
}

/// Schema issues of one call: unknown tool, missing required parameter, wrong type, value not in
/// `enum`, extra parameter.
pub fn validate_call(call: &ToolCall, tools: &[ToolSchema]) -> Vec<ParseIssue> {
    let Some(tool) = tools.iter().find(|t| t.name == call.name) else {
        return vec![ParseIssue::UnknownTool {
            name: call.name.clone(),
        }];
    };
    let mut issues = Vec::new();
    for r in tool.required() {
        if !call.arguments.contains_key(r) {
            issues.push(ParseIssue::MissingRequired {
                tool: tool.name.clone(),
                param: r.to_string(),
            });
        }
    }
    for (k, v) in &call.arguments {
        let Some(prop) = tool.property(k) else {
            issues.push(ParseIssue::ExtraParameter {
                tool: tool.name.clone(),
                param: k.clone(),
            });
            continue;
        };
        if !type_ok(v, prop, 0) {
            let expected = prop
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("any")
                .to_string();
            issues.push(ParseIssue::WrongType {
                tool: tool.name.clone(),
                param: k.clone(),
                expected,
                got: json_type_name(v).to_string(),
            });
            continue;
        }
        if let Some(allowed) = prop.get("enum").and_then(Value::as_array) {
            if !allowed.contains(v) {
                issues.push(ParseIssue::NotInEnum {
                    tool: tool.name.clone(),
                    param: k.clone(),
                });
            }
        }
    }
    issues
}

/// [`validate_call`] for every call.
pub fn validate_calls(calls: &[ToolCall], tools: &[ToolSchema]) -> Vec<Vec<ParseIssue>> {
    calls.iter().map(|c| validate_call(c, tools)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools() -> Vec<ToolSchema> {
        vec![ToolSchema {
            name: "transfer".into(),
            description: String::new(),
            parameters: json!({"type": "object", "properties": {
                "amount": {"type": "number"}, "to": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "unit": {"type": "string", "enum": ["usd", "eur"]}
            }, "required": ["amount", "to"]}),
        }]
    }

    #[test]
    fn type_names_of_tool_lists_become_schemas() {
        let cases = [
            ("str", json!({"type": "string"}), false),
            ("string", json!({"type": "string"}), false),
            ("int, optional", json!({"type": "integer"}), true),
            ("bool, optional", json!({"type": "boolean"}), true),
            (
                "List[int]",
                json!({"type": "array", "items": {"type": "integer"}}),
                false,
            ),
            (
                "List[List[float]]",
                json!({"type": "array", "items": {"type": "array", "items": {"type": "number"}}}),
                false,
            ),
            (
                "list(str)",
                json!({"type": "array", "items": {"type": "string"}}),
                false,
            ),
            (
                "Tuple[float, float]",
                json!({"type": "array", "items": {"type": "number"}}),
                false,
            ),
            ("Tuple[str, int]", json!({"type": "array"}), false),
            (
                "List[Union[int, float]]",
                json!({"type": "array", "items": {"type": "number"}}),
                false,
            ),
            ("Dict", json!({"type": "object"}), false),
            ("Optional[str]", json!({"type": "string"}), true),
            ("Callable[[float], float]", json!({}), false),
            ("Union", json!({}), false),
            ("List", json!({"type": "array"}), false),
            ("weird thing", json!({"type": "weird thing"}), false),
        ];
        for (name, want, opt) in cases {
            assert_eq!(schema_of_type_name(name), (want, opt), "{name}");
        }
        // And they check values: List[int] refuses a string item, accepts integers.
        let tool = ToolSchema {
            name: "f".into(),
            description: String::new(),
            parameters: json!({"type": "object", "properties": {
                "xs": schema_of_type_name("List[int]").0,
                "y": schema_of_type_name("float, optional").0,
            }, "required": ["xs"]}),
        };
        assert!(validate_call(
            &ToolCall::new("f", json!({"xs": [1, 2], "y": 2})),
            std::slice::from_ref(&tool)
        )
        .is_empty());
        assert!(!validate_call(
            &ToolCall::new("f", json!({"xs": ["a"]})),
            std::slice::from_ref(&tool)
        )
        .is_empty());
        assert!(
            !validate_call(&ToolCall::new("f", json!({"xs": [1], "y": "two"})), &[tool]).is_empty()
        );
    }

    #[test]
    fn strings_that_read_as_the_declared_type_pass() {
        let tool = ToolSchema {
            name: "f".into(),
            description: String::new(),
            parameters: json!({"type": "object", "properties": {
                "n": {"type": "integer", COERCE_STRINGS: true},
                "x": {"type": "number", COERCE_STRINGS: true},
                "b": {"type": "boolean", COERCE_STRINGS: true},
                "xs": {"type": "array", "items": {"type": "string"}, COERCE_STRINGS: true},
                "o": {"type": "object", COERCE_STRINGS: true},
                "strict": {"type": "integer"}
            }}),
        };
        let ok = |v: Value| {
            validate_call(&ToolCall::new("f", v), std::slice::from_ref(&tool)).is_empty()
        };
        assert!(ok(
            json!({"n": "3", "x": "2.5", "b": "True", "xs": "['a', 'b']", "o": "{\"k\": 1}"})
        ));
        assert!(!ok(json!({"n": "3.5"})));
        assert!(!ok(json!({"x": "many"})));
        assert!(!ok(json!({"b": "yes"})));
        assert!(!ok(json!({"xs": "[1, 2]"})), "the items are checked too");
        assert!(!ok(json!({"xs": "a, b"})));
        assert!(
            !ok(json!({"strict": "3"})),
            "without the keyword a string is not an integer"
        );
    }

    #[test]
    fn valid_call_has_no_issues() {
        let c = ToolCall::new(
            "transfer",
            json!({"amount": 5, "to": "bob", "tags": ["a"], "unit": "usd"}),
        );
        assert!(validate_call(&c, &tools()).is_empty());
    }

    #[test]
    fn each_schema_issue_is_reported() {
        let c = ToolCall::new("nope", json!({}));
        assert_eq!(
            validate_call(&c, &tools()),
            vec![ParseIssue::UnknownTool {
                name: "nope".into()
            }]
        );
        let c = ToolCall::new(
            "transfer",
            json!({"amount": "five", "tags": [1], "x": 1, "unit": "gbp"}),
        );
        let issues = validate_call(&c, &tools());
        assert!(issues.contains(&ParseIssue::MissingRequired {
            tool: "transfer".into(),
            param: "to".into()
        }));
        assert!(issues.contains(&ParseIssue::WrongType {
            tool: "transfer".into(),
            param: "amount".into(),
            expected: "number".into(),
            got: "string".into()
        }));
        assert!(issues
            .iter()
            .any(|i| matches!(i, ParseIssue::WrongType { param, .. } if param == "tags")));
        assert!(issues.contains(&ParseIssue::ExtraParameter {
            tool: "transfer".into(),
            param: "x".into()
        }));
        assert!(issues.contains(&ParseIssue::NotInEnum {
            tool: "transfer".into(),
            param: "unit".into()
        }));
    }
}
