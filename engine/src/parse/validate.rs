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

/// Whether `v` has the declared schema type (recursing into `items` of arrays and `properties`
/// of objects). Unknown or missing types accept anything.
pub(crate) fn type_ok(v: &Value, schema: &Value, depth: usize) -> bool {
    if depth > 16 {
        return true;
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("any");
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
            json!({"amount": "5", "tags": [1], "x": 1, "unit": "gbp"}),
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
