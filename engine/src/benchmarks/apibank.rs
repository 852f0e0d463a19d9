//! API-Bank as processed by ToolRL (`level-1.json`, `level-2.json`): item id
//! `<file stem>-<index>`; a prediction is correct iff its call list equals the answer exactly
//! (same length and order, same names, same parameters and values), as in ToolRL's evaluator.
//! The items run as [`Task`]s in the static world, with the tools listed in their system prompt.
use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::score::{verdict, Prediction, ScoreError, Verdict};
use super::{data_err, LoadError};
use crate::parse::{schema_of_type_name, ToolCall, ToolSchema, COERCE_STRINGS};
use crate::pyval::{py_eq, py_literal_to_json};
use crate::worlds::{Task, WorldError};

/// Name of the world in [`Task::world`].
pub const WORLD_NAME: &str = "api-bank";

/// One API-Bank item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiBankItem {
    pub id: String,
    /// File stem (`level-1`, `level-2`).
    pub category: String,
    pub system: String,
    pub user: String,
    pub answer: Vec<ToolCall>,
}

/// Load every `level-*.json` in `dir` (or only `category`).
pub fn load(dir: &Path, category: Option<&str>) -> Result<Vec<ApiBankItem>, LoadError> {
    let rd = std::fs::read_dir(dir).map_err(LoadError::io(dir))?;
    let mut files: Vec<_> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| {
            p.file_stem()
                .is_some_and(|s| s.to_string_lossy().starts_with("level-"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        if category.is_some_and(|c| c != stem) {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(LoadError::io(&path))?;
        let items: Vec<Value> = serde_json::from_slice(&bytes).map_err(LoadError::json(&path))?;
        for (i, it) in items.iter().enumerate() {
            let answer = match it.get("answer") {
                Some(Value::Array(a)) => a.clone(),
                Some(o @ Value::Object(_)) => vec![o.clone()],
                _ => return Err(LoadError::bad(&path, format!("item {i} has no answer"))),
            };
            let answer = answer
                .into_iter()
                .map(serde_json::from_value::<ToolCall>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| LoadError::bad(&path, format!("item {i}: {e}")))?;
            out.push(ApiBankItem {
                id: format!("{stem}-{i}"),
                category: stem.clone(),
                system: it
                    .get("system")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                user: it
                    .get("user")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                answer,
            });
        }
    }
    if out.is_empty() {
        return Err(LoadError::bad(
            dir,
            format!(
                "no API-Bank items{}",
                category.map(|c| format!(" for {c}")).unwrap_or_default()
            ),
        ));
    }
    Ok(out)
}

/// The first difference between predicted and gold calls.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    #[error("expected {expected} call(s), got {got}")]
    Count { expected: usize, got: usize },
    #[error("call {index}: expected {expected:?}, got {got:?}")]
    Name {
        index: usize,
        expected: String,
        got: String,
    },
    #[error("call {index} ({name}): expected parameters {expected}, got {got}")]
    Arguments {
        index: usize,
        name: String,
        expected: Box<Value>,
        got: Box<Value>,
    },
}

/// Exact match of the call list; `Err` says what differs first.
pub fn check(item: &ApiBankItem, calls: &[ToolCall]) -> Result<(), Mismatch> {
    if calls.len() != item.answer.len() {
        return Err(Mismatch::Count {
            expected: item.answer.len(),
            got: calls.len(),
        });
    }
    for (i, (p, g)) in calls.iter().zip(&item.answer).enumerate() {
        if p.name != g.name {
            return Err(Mismatch::Name {
                index: i,
                expected: g.name.clone(),
                got: p.name.clone(),
            });
        }
        let pa = Value::Object(p.arguments.clone());
        let ga = Value::Object(g.arguments.clone());
        if !py_eq(&pa, &ga) {
            return Err(Mismatch::Arguments {
                index: i,
                name: g.name.clone(),
                expected: Box::new(ga),
                got: Box::new(pa),
            });
        }
    }
    Ok(())
}

/// Tool names and descriptions listed in an API-Bank system prompt (`N. Name: …` /
/// `Description: …` / `Parameters: {python dict}`); parameters are read when the Python literal
/// converts cleanly to JSON.
pub fn tools(system: &str) -> Vec<ToolSchema> {
    let mut tools: Vec<ToolSchema> = Vec::new();
    // Per tool, the parameters that are optional: with a default, or typed `…, optional`.
    let mut optional: Vec<Vec<String>> = Vec::new();
    for line in system.lines() {
        let l = line.trim();
        if let Some(rest) = l.split_once(". Name: ").map(|(_, r)| r) {
            tools.push(ToolSchema {
                name: rest.trim().to_string(),
                description: String::new(),
                parameters: Value::Null,
            });
            optional.push(Vec::new());
        } else if let (Some(d), Some(t)) = (l.strip_prefix("Description: "), tools.last_mut()) {
            t.description = d.to_string();
        } else if let (Some(p), Some(t), Some(opt)) = (
            l.strip_prefix("Parameters: "),
            tools.last_mut(),
            optional.last_mut(),
        ) {
            // The list is a Python literal in API-Bank and JSON in most of ToolRL's data.
            let props = py_literal_to_json(p)
                .or_else(|| serde_json::from_str::<Value>(p).ok())
                .unwrap_or(Value::Object(Default::default()));
            let mut names = Vec::new();
            let props = match props {
                Value::Object(m) => Value::Object(
                    m.into_iter()
                        .map(|(k, mut v)| {
                            names.push(k.clone());
                            // A parameter with a default value is optional (ToolRL's lists).
                            if v.get("default").is_some() {
                                opt.push(k.clone());
                            }
                            if let Some(ty) = v.get("type").and_then(Value::as_str) {
                                let (schema, is_opt) = schema_of_type_name(ty);
                                if is_opt {
                                    opt.push(k.clone());
                                }
                                if let (Value::Object(dst), Value::Object(src)) = (&mut v, schema) {
                                    dst.remove("type");
                                    dst.extend(src);
                                }
                            }
                            if let Value::Object(m) = &mut v {
                                m.insert(COERCE_STRINGS.into(), Value::Bool(true));
                            }
                            (k, v)
                        })
                        .collect(),
                ),
                other => other,
            };
            let required: Vec<&String> = match required_of(&t.name) {
                // API-Bank's own tools: what their `call` signature requires, where the list
                // names those parameters.
                Some(req) if req.iter().all(|r| names.iter().any(|n| n == r)) => {
                    names.iter().filter(|n| req.contains(&n.as_str())).collect()
                }
                // Otherwise every parameter without a default whose type does not say optional.
                _ => names.iter().filter(|n| !opt.contains(n)).collect(),
            };
            t.parameters =
                serde_json::json!({"type": "object", "properties": props, "required": required});
        }
    }
    for t in &mut tools {
        if t.parameters.is_null() {
            t.parameters = serde_json::json!({"type": "object", "properties": {}, "required": []});
        }
    }
    tools
}

/// The required parameters of API-Bank's tools: those without a default in each API's `call`
/// signature in API-Bank's source (AlibabaResearch/DAMO-ConvAI, `api-bank/apis/*.py`, read at
/// commit 483554e). Two have defaults: ModifyRegistration (the new date and doctor) and
/// RecordHealthData (`health_data`); ForgotPassword, Translate and GetToday take further
/// arguments through `**kwargs`, which are optional here.
const API_BANK_REQUIRED: &[(&str, &[&str])] = &[
    ("AddAgenda", &["token", "content", "time", "location"]),
    ("AddAlarm", &["token", "time"]),
    (
        "AddMeeting",
        &[
            "token",
            "meeting_topic",
            "start_time",
            "end_time",
            "location",
            "attendees",
        ],
    ),
    ("AddReminder", &["token", "content", "time"]),
    (
        "AppointmentRegistration",
        &["patient_name", "date", "doctor_name"],
    ),
    (
        "BookHotel",
        &[
            "hotel_name",
            "check_in_time",
            "check_out_time",
            "room_count",
            "adult_count",
            "child_count",
        ],
    ),
    ("Calculator", &["formula"]),
    ("CancelRegistration", &["appointment_id"]),
    ("CancelTimedSwitch", &["name", "time"]),
    ("DeleteAccount", &["token"]),
    ("DeleteAgenda", &["token", "content", "time", "location"]),
    ("DeleteAlarm", &["token", "time"]),
    (
        "DeleteMeeting",
        &[
            "token",
            "meeting_topic",
            "start_time",
            "end_time",
            "location",
            "attendees",
        ],
    ),
    ("DeleteReminder", &["token", "content", "time"]),
    ("DeleteScene", &["name"]),
    ("Dictionary", &["keyword"]),
    ("DocumentQA", &["url", "question"]),
    ("EmergencyKnowledge", &["symptom"]),
    ("ForgotPassword", &["status"]),
    ("GetToday", &[]),
    ("GetUserToken", &["username", "password"]),
    ("ImageCaption", &["url"]),
    ("ModifyAgenda", &["token", "content", "time", "location"]),
    ("ModifyAlarm", &["token", "from_time", "to_time"]),
    (
        "ModifyMeeting",
        &[
            "token",
            "meeting_topic",
            "start_time",
            "end_time",
            "location",
            "attendees",
        ],
    ),
    ("ModifyPassword", &["token", "old_password", "new_password"]),
    ("ModifyRegistration", &["appointment_id"]),
    ("ModifyReminder", &["token", "content", "time"]),
    ("OpenBankAccount", &["account", "password", "name"]),
    ("PlayMusic", &["music_name"]),
    ("QueryAgenda", &["token", "content", "time", "location"]),
    ("QueryAlarm", &["token", "time"]),
    ("QueryBalance", &["token"]),
    ("QueryHealthData", &["user_id", "start_time", "end_time"]),
    ("QueryHistoryToday", &["date"]),
    (
        "QueryMeeting",
        &[
            "token",
            "meeting_topic",
            "start_time",
            "end_time",
            "location",
            "attendees",
        ],
    ),
    ("QueryRegistration", &["patient_name", "date"]),
    ("QueryReminder", &["token", "content", "time"]),
    ("QueryScene", &["name"]),
    ("QueryStock", &["stock_code", "date"]),
    ("RecordHealthData", &["user_id", "time"]),
    ("RegisterUser", &["username", "password", "email"]),
    ("SearchEngine", &["keyword"]),
    ("SendEmail", &["receiver", "subject", "content"]),
    ("SpeechRecognition", &["url"]),
    ("SymptomSearch", &["symptom"]),
    ("TimedSwitch", &["name", "time", "on"]),
    ("Translate", &["src"]),
    ("Wiki", &["keyword"]),
];

fn required_of(tool: &str) -> Option<&'static [&'static str]> {
    API_BANK_REQUIRED
        .iter()
        .find(|(n, _)| *n == tool)
        .map(|(_, r)| *r)
}

/// API-Bank items (world `api-bank`): the dialogue is the request, the tools come from the
/// system prompt.
pub fn load_tasks(dir: &Path, category: Option<&str>) -> Result<Vec<Task>, WorldError> {
    let items = load(dir, category).map_err(|e| data_err(dir, e.to_string()))?;
    Ok(items
        .into_iter()
        .map(|it| Task {
            id: it.id.clone(),
            world: WORLD_NAME.into(),
            split: None,
            request: it.user.clone(),
            tools: tools(&it.system),
            gold_plan: Vec::new(),
            gold_derived: vec![Vec::new(); it.answer.len()],
            gold_calls: it.answer,
            gold_final_state: None,
            gold_answer: None,
            template: Some(it.category),
        })
        .collect())
}

/// One verdict per item of `dir` (or of `category`): exact match of the call list.
pub fn verdicts(
    dir: &Path,
    category: Option<&str>,
    by_id: &HashMap<&str, &Prediction>,
) -> Result<Vec<Verdict>, ScoreError> {
    Ok(load(dir, category)?
        .iter()
        .map(|item| {
            let r = match by_id.get(item.id.as_str()) {
                Some(p) => check(item, &p.to_calls()).map_err(|e| e.to_string()),
                None => Err("no prediction".to_string()),
            };
            verdict(&item.id, &item.category, r.err(), None)
        })
        .collect())
}

/// The answers of every item as predictions.
pub fn gold_predictions(dir: &Path, category: Option<&str>) -> Result<Vec<Prediction>, ScoreError> {
    Ok(load(dir, category)?
        .into_iter()
        .map(|i| Prediction::from_calls(i.id, i.answer))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exact_match_only() {
        let it = ApiBankItem {
            id: "level-1-0".into(),
            category: "level-1".into(),
            system: String::new(),
            user: String::new(),
            answer: vec![ToolCall::new("A", json!({"x": "1", "y": "b"}))],
        };
        assert!(check(&it, &[ToolCall::new("A", json!({"y": "b", "x": "1"}))]).is_ok());
        assert!(check(&it, &[ToolCall::new("A", json!({"x": "1"}))]).is_err());
        assert!(check(&it, &[ToolCall::new("A", json!({"x": "1", "y": "B"}))]).is_err());
        assert!(check(&it, &[ToolCall::new("B", json!({"x": "1", "y": "b"}))]).is_err());
        assert!(check(&it, &[]).is_err());
    }

    #[test]
    fn apibank_system_prompt_tools() {
        let sys = "**Available Tools**\n1. Name: QueryHealthData\nDescription: Queries data.\nParameters: {'user_id': {'type': 'str', 'description': 'The id.'}}\n2. Name: Cancel\nDescription: Cancels.\nParameters: {}\n";
        let t = tools(sys);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "QueryHealthData");
        assert_eq!(t[0].property("user_id").unwrap()["type"], "string");
        assert_eq!(t[1].description, "Cancels.");
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;
    use crate::parse::{validate_call, ParseIssue};
    use std::path::PathBuf;

    fn shared(sub: &str) -> Option<PathBuf> {
        let d = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data")
            .join(sub);
        if d.exists() {
            Some(d)
        } else {
            println!("SKIP: {} is absent (benchmark data)", d.display());
            None
        }
    }

    #[test]
    fn tool_lists_carry_required_parameters_and_real_types() {
        let system = "1. Name: ModifyRegistration\nDescription: d\nParameters: {'appointment_id': {'type': 'str', 'description': 'id'}, 'new_appointment_date': {'type': 'str', 'description': 'x'}}\n2. Name: Stats\nDescription: s\nParameters: {\"xs\": {\"type\": \"List[int]\", \"description\": \"\"}, \"k\": {\"type\": \"int, optional\", \"default\": 3}}";
        let t = tools(system);
        assert_eq!(t[0].required(), vec!["appointment_id"]);
        assert_eq!(t[1].required(), vec!["xs"]);
        assert_eq!(
            t[1].property("xs").unwrap(),
            &serde_json::json!({"type": "array", "items": {"type": "integer"}, "description": "",
                COERCE_STRINGS: true})
        );
        assert_eq!(t[1].property("k").unwrap()["type"], "integer");
        let bad = ToolCall::new("Stats", serde_json::json!({"k": "three"}));
        let issues = validate_call(&bad, &t);
        assert!(issues.contains(&ParseIssue::MissingRequired {
            tool: "Stats".into(),
            param: "xs".into()
        }));
        assert!(issues
            .iter()
            .any(|i| matches!(i, ParseIssue::WrongType { param, .. } if param == "k")));
    }

    /// The gold calls of the real data mostly pass the schemas built from their own tool lists:
    /// the required parameters and types are not stricter than the data. What remains are the
    /// data's own inconsistencies (a parameter named otherwise than in the list, a list written
    /// as free text, a gold line that does not parse as one call), printed here.
    #[test]
    fn gold_calls_of_api_bank_and_toolrl_pass_their_schemas() {
        let mut tasks = Vec::new();
        if let Some(d) = shared("api-bank") {
            tasks.extend(load_tasks(&d, None).unwrap());
        }
        if let Some(d) = shared("toolrl") {
            tasks.extend(crate::benchmarks::toolrl::load_tasks(&d).unwrap());
        }
        let (mut total, mut report) = (0usize, Vec::new());
        for t in &tasks {
            for c in &t.gold_calls {
                total += 1;
                let issues = validate_call(c, &t.tools);
                if !issues.is_empty() {
                    report.push(format!("{} {}: {issues:?}", t.id, c.name));
                }
            }
        }
        println!("{} of {total} gold calls with schema issues", report.len());
        for r in &report {
            println!("  {r}");
        }
        assert!(
            report.len() * 10 <= total,
            "more than one gold call in ten fails its own tool list's schema: {} of {total}",
            report.len()
        );
    }
}
