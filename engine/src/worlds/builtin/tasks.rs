//! The task generator: templates of `assets/worlds/builtin/templates.json` instantiated with
//! values from their pools into tasks with gold plans, gold calls and the final state.
use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::tools::num_json;
use super::{BuiltinWorld, WORLD_NAME};
use crate::worlds::{Split, Task, ToolCall, World, WorldError};

const TEMPLATES_JSON: &str = include_str!("../../../../assets/worlds/builtin/templates.json");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    pools: BTreeMap<String, Vec<Value>>,
    templates: Vec<Template>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Template {
    id: String,
    vars: BTreeMap<String, String>,
    request: Vec<String>,
    plan: Vec<String>,
    calls: Vec<ToolCall>,
}

fn templates() -> Result<&'static TemplateFile, WorldError> {
    static T: OnceLock<Result<TemplateFile, serde_json::Error>> = OnceLock::new();
    T.get_or_init(|| serde_json::from_str(TEMPLATES_JSON))
        .as_ref()
        .map_err(|e| WorldError::Data {
            path: "assets/worlds/builtin/templates.json".into(),
            msg: e.to_string(),
        })
}

/// Number of task templates.
pub fn template_count() -> usize {
    templates().map(|t| t.templates.len()).unwrap_or(0)
}

/// Which split a request belongs to: a fixed hash of its text (80% train, 10% dev, 10% test), so
/// splits are disjoint whatever the seed.
pub fn split_of(request: &str) -> Split {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in request.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    match h % 10 {
        8 => Split::Dev,
        9 => Split::Test,
        _ => Split::Train,
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_f64()
            .map(|f| num_json(f).to_string())
            .unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

fn lookup(vars: &BTreeMap<String, Value>, key: &str) -> Option<Value> {
    let (name, field) = match key.split_once('.') {
        Some((n, f)) => (n, Some(f)),
        None => (key, None),
    };
    let v = vars.get(name)?;
    match field {
        Some(f) => v.get(f).cloned(),
        None => Some(v.clone()),
    }
}

/// A placeholder of a template string that cannot be filled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum FillError {
    #[error("unclosed placeholder in {0:?}")]
    Unclosed(String),
    #[error("unknown placeholder {{{0}}}")]
    Unknown(String),
}

/// Replace `{name}` / `{name.field}` placeholders using `get`; `{$…}` is left for later unless
/// `get` resolves it.
fn fill(s: &str, get: &dyn Fn(&str) -> Option<Value>) -> Result<String, FillError> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let j = after
            .find('}')
            .ok_or_else(|| FillError::Unclosed(s.to_string()))?;
        let key = &after[..j];
        match get(key) {
            Some(v) => out.push_str(&value_text(&v)),
            None if key.starts_with('$') => {
                out.push('{');
                out.push_str(key);
                out.push('}');
            }
            None => return Err(FillError::Unknown(key.to_string())),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A whole-string placeholder `{key}` keeps the value's JSON type.
fn fill_value(v: &Value, get: &dyn Fn(&str) -> Option<Value>) -> Result<Value, FillError> {
    match v {
        Value::String(s) => {
            if let Some(key) = s.strip_prefix('{').and_then(|k| k.strip_suffix('}')) {
                if !key.contains('{') && !key.contains('}') {
                    if let Some(v) = get(key) {
                        return Ok(v);
                    }
                }
            }
            Ok(Value::String(fill(s, get)?))
        }
        other => Ok(other.clone()),
    }
}

fn result_lookup(results: &[Value], key: &str) -> Option<Value> {
    let k = key.strip_prefix('$')?;
    let (step, field) = k.split_once('.')?;
    let step: usize = step.parse().ok()?;
    results.get(step.checked_sub(1)?)?.get(field).cloned()
}

fn instantiate(
    t: &Template,
    pools: &BTreeMap<String, Vec<Value>>,
    rng: &mut ChaCha8Rng,
) -> Result<Task, WorldError> {
    let bad = |msg: String| WorldError::BadTemplate {
        template: t.id.clone(),
        msg,
    };
    let mut vars: BTreeMap<String, Value> = BTreeMap::new();
    let mut used: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (var, pool_name) in &t.vars {
        let pool = pools
            .get(pool_name)
            .ok_or_else(|| bad(format!("unknown pool {pool_name:?}")))?;
        if pool.is_empty() {
            return Err(bad(format!("empty pool {pool_name:?}")));
        }
        let taken = used.entry(pool_name.as_str()).or_default();
        let free: Vec<usize> = (0..pool.len()).filter(|i| !taken.contains(i)).collect();
        let idx = if free.is_empty() {
            rng.random_range(0..pool.len())
        } else {
            free[rng.random_range(0..free.len())]
        };
        taken.push(idx);
        vars.insert(var.clone(), pool[idx].clone());
    }
    let getv = |k: &str| lookup(&vars, k);
    if t.request.is_empty() {
        return Err(bad("no request text".into()));
    }
    let request = fill(&t.request[rng.random_range(0..t.request.len())], &getv)
        .map_err(|e| bad(e.to_string()))?;
    let gold_plan = t
        .plan
        .iter()
        .map(|p| fill(p, &getv))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let mut world = BuiltinWorld::new();
    let mut results: Vec<Value> = Vec::new();
    let mut gold_calls = Vec::new();
    let mut gold_derived = Vec::new();
    for call in &t.calls {
        let mut args = Map::new();
        let mut derived = Vec::new();
        for (k, v) in &call.arguments {
            if v.as_str().is_some_and(|s| s.contains("{$")) {
                derived.push(k.clone());
            }
            let get = |key: &str| {
                if key.starts_with('$') {
                    result_lookup(&results, key)
                } else {
                    lookup(&vars, key)
                }
            };
            args.insert(
                k.clone(),
                fill_value(v, &get).map_err(|e| bad(e.to_string()))?,
            );
        }
        let concrete = ToolCall {
            name: call.name.clone(),
            arguments: args,
        };
        let obs = world.execute(&concrete);
        if !obs.ok {
            return Err(bad(format!(
                "gold call {} failed: {}",
                concrete.name, obs.content
            )));
        }
        results.push(obs.content);
        gold_calls.push(concrete);
        gold_derived.push(derived);
    }
    Ok(Task {
        id: String::new(),
        world: WORLD_NAME.into(),
        split: Some(split_of(&request)),
        request,
        tools: Vec::new(),
        gold_plan,
        gold_calls,
        gold_derived,
        gold_final_state: world.final_state(),
        gold_answer: None,
        template: Some(t.id.clone()),
    })
}

/// Generate up to `n` distinct tasks of `split`, deterministically from `seed` (same seed, same
/// tasks). Splits are disjoint (see [`split_of`]). Fewer than `n` come back only when the
/// template space of that split is exhausted.
pub fn generate_tasks(split: Split, n: usize, seed: u64) -> Result<Vec<Task>, WorldError> {
    let file = templates()?;
    if file.templates.is_empty() {
        return Err(WorldError::Data {
            path: "templates.json".into(),
            msg: "no templates".into(),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let max_attempts = n.saturating_mul(60).saturating_add(2000);
    for _ in 0..max_attempts {
        if out.len() >= n {
            break;
        }
        let t = &file.templates[rng.random_range(0..file.templates.len())];
        let mut task = instantiate(t, &file.pools, &mut rng)?;
        if task.split != Some(split) || !seen.insert(task.request.clone()) {
            continue;
        }
        let split_name = match split {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        };
        task.id = format!("builtin-{split_name}-{seed}-{}", out.len());
        out.push(task);
    }
    Ok(out)
}

/// Every template instantiated once per seed in `seeds` (for checks and demos).
pub fn instantiate_all(seed: u64) -> Result<Vec<Task>, WorldError> {
    let file = templates()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    file.templates
        .iter()
        .map(|t| instantiate(t, &file.pools, &mut rng))
        .collect()
}

/// Render a plan as the planner's numbered `<plan>` lines.
pub fn render_plan(subtasks: &[String]) -> String {
    subtasks
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{}. {s}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}
