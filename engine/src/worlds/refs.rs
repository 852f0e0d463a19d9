//! References to earlier results in calls written before any of them ran (delayed execution,
//! `--mode ih-grpo`): a string argument `"$k.path"` stands for the value at `path` in the result
//! of call `k` (1-based) of the same completion, e.g. `"$1.token"` or `"$2.items.0.id"`. A value
//! that is exactly one reference takes the referenced value with its type; a reference inside a
//! longer string is replaced by the value's text.
use serde_json::Value;

use crate::parse::ToolCall;

/// Resolve every reference in `call`'s arguments against `results` (the results of the calls
/// before it: `None` for a call that failed or did not run). Errors name the reference and why
/// it does not resolve.
pub fn resolve_call(call: &ToolCall, results: &[Option<Value>]) -> Result<ToolCall, String> {
    Ok(ToolCall {
        name: call.name.clone(),
        arguments: call
            .arguments
            .iter()
            .map(|(k, v)| Ok((k.clone(), resolve_value(v, results)?)))
            .collect::<Result<_, String>>()?,
    })
}

/// Whether `call` holds any reference.
pub fn has_refs(call: &ToolCall) -> bool {
    fn any(v: &Value) -> bool {
        match v {
            Value::String(s) => find_ref(s, 0).is_some(),
            Value::Array(a) => a.iter().any(any),
            Value::Object(m) => m.values().any(any),
            _ => false,
        }
    }
    call.arguments.values().any(any)
}

fn resolve_value(v: &Value, results: &[Option<Value>]) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => resolve_string(s, results)?,
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| resolve_value(x, results))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), resolve_value(x, results)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// The next reference in `s` at or after byte `from`: (start, end, call index, path).
fn find_ref(s: &str, from: usize) -> Option<(usize, usize, usize, Vec<String>)> {
    let bytes = s.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let digits = bytes[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits > 0 && digits <= 3 {
                let k: usize = s[i + 1..i + 1 + digits].parse().ok()?;
                let mut end = i + 1 + digits;
                let mut path = Vec::new();
                while end < bytes.len() && bytes[end] == b'.' {
                    let seg_len = bytes[end + 1..]
                        .iter()
                        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                        .count();
                    if seg_len == 0 {
                        break;
                    }
                    path.push(s[end + 1..end + 1 + seg_len].to_string());
                    end += 1 + seg_len;
                }
                return Some((i, end, k, path));
            }
        }
        i += 1;
    }
    None
}

fn lookup(results: &[Option<Value>], k: usize, path: &[String]) -> Result<Value, String> {
    let shown = || {
        let mut r = format!("${k}");
        for p in path {
            r.push('.');
            r.push_str(p);
        }
        r
    };
    if k == 0 || k > results.len() {
        return Err(format!(
            "{}: call {k} does not come before this one",
            shown()
        ));
    }
    let Some(mut v) = results[k - 1].as_ref() else {
        return Err(format!("{}: call {k} failed or did not run", shown()));
    };
    for p in path {
        v = match v {
            Value::Object(m) => m.get(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| format!("{}: the result of call {k} has no `{p}`", shown()))?;
    }
    Ok(v.clone())
}

fn resolve_string(s: &str, results: &[Option<Value>]) -> Result<Value, String> {
    let Some(first) = find_ref(s, 0) else {
        return Ok(Value::String(s.to_string()));
    };
    // Exactly one reference: the value with its type.
    if first.0 == 0 && first.1 == s.len() {
        return lookup(results, first.2, &first.3);
    }
    let mut out = String::new();
    let mut at = 0;
    let mut next = Some(first);
    while let Some((start, end, k, path)) = next {
        out.push_str(&s[at..start]);
        match lookup(results, k, &path)? {
            Value::String(x) => out.push_str(&x),
            other => out.push_str(&other.to_string()),
        }
        at = end;
        next = find_ref(s, end);
    }
    out.push_str(&s[at..]);
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_take_the_referenced_value() {
        let results = vec![
            Some(json!({"token": "tok-1", "n": 5})),
            None,
            Some(json!({"items": [{"id": 7}]})),
        ];
        let call = ToolCall::new(
            "f",
            json!({"t": "$1.token", "n": "$1.n", "id": "$3.items.0.id", "s": "to $1.token now", "x": 3}),
        );
        assert!(has_refs(&call));
        let r = resolve_call(&call, &results).unwrap();
        assert_eq!(
            Value::Object(r.arguments),
            json!({"t": "tok-1", "n": 5, "id": 7, "s": "to tok-1 now", "x": 3})
        );
        // A price of "$5" with no path is a reference to call 5: it does not resolve.
        let e = resolve_call(&ToolCall::new("f", json!({"a": "$2.token"})), &results).unwrap_err();
        assert!(e.contains("$2.token") && e.contains("failed"), "{e}");
        let e = resolve_call(&ToolCall::new("f", json!({"a": "$9.x"})), &results).unwrap_err();
        assert!(e.contains("does not come before"), "{e}");
        let e = resolve_call(&ToolCall::new("f", json!({"a": "$1.nope"})), &results).unwrap_err();
        assert!(e.contains("no `nope`"), "{e}");
        let plain = ToolCall::new("f", json!({"a": "cost $ 5", "b": "US$"}));
        assert!(!has_refs(&plain));
        assert_eq!(resolve_call(&plain, &results).unwrap(), plain);
    }
}
