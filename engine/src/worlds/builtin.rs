//! The built-in world: 22 stateful tools simulated in Rust, in the spirit of API-Bank (alarms,
//! reminders, agenda, contacts + email, bank accounts, health records, login tokens, unit
//! conversion, a calculator, fixed weather and stock tables), and a seeded task generator driven
//! by the templates in `assets/worlds/builtin/templates.json`.
use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{calc, Observation, Split, Task, ToolCall, ToolSchema, World, WorldError};

const TOOLS_JSON: &str = include_str!("../../../assets/worlds/builtin/tools.json");
const STATE_JSON: &str = include_str!("../../../assets/worlds/builtin/state.json");
const TEMPLATES_JSON: &str = include_str!("../../../assets/worlds/builtin/templates.json");

/// Longest string argument a builtin tool accepts.
pub const MAX_ARG_LEN: usize = 200;
/// Most entries a list in the state (alarms, reminders, …) may hold.
pub const MAX_LIST_LEN: usize = 64;

/// Name of the world in [`Task::world`].
pub const WORLD_NAME: &str = "builtin";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reminder {
    text: String,
    time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Meeting {
    title: String,
    day: String,
    time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Contact {
    email: String,
    #[serde(default)]
    phone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Email {
    to: String,
    subject: String,
    #[serde(default)]
    body: String,
}

/// The whole mutable state of the built-in world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinState {
    users: BTreeMap<String, String>,
    sessions: BTreeMap<String, String>,
    next_token: u64,
    alarms: Vec<String>,
    reminders: Vec<Reminder>,
    meetings: Vec<Meeting>,
    contacts: BTreeMap<String, Contact>,
    outbox: Vec<Email>,
    accounts: BTreeMap<String, BTreeMap<String, i64>>,
    health: BTreeMap<String, BTreeMap<String, f64>>,
}

fn initial_state() -> &'static BuiltinState {
    static S: OnceLock<BuiltinState> = OnceLock::new();
    S.get_or_init(|| {
        serde_json::from_str(STATE_JSON).expect("embedded state.json is valid (checked by tests)")
    })
}

/// Tool schemas of the built-in world.
pub fn builtin_tools() -> &'static [ToolSchema] {
    static T: OnceLock<Vec<ToolSchema>> = OnceLock::new();
    T.get_or_init(|| {
        serde_json::from_str(TOOLS_JSON).expect("embedded tools.json is valid (checked by tests)")
    })
}

/// The built-in world; each [`World::reset`] starts from a fresh copy of the initial state.
#[derive(Debug, Clone)]
pub struct BuiltinWorld {
    state: BuiltinState,
}

impl Default for BuiltinWorld {
    fn default() -> Self {
        Self::new()
    }
}

impl BuiltinWorld {
    pub fn new() -> Self {
        BuiltinWorld {
            state: initial_state().clone(),
        }
    }

    /// The state as JSON (what [`World::final_state`] returns).
    pub fn state_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.state).unwrap_or(Value::Null);
        // passwords and the token counter are not part of the compared state
        if let Value::Object(m) = &mut v {
            m.remove("users");
            m.remove("next_token");
        }
        v
    }
}

const CITIES: [&str; 8] = [
    "paris", "london", "tokyo", "rome", "cairo", "oslo", "lima", "delhi",
];
const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];
const SKIES: [&str; 5] = ["sunny", "cloudy", "rainy", "windy", "snowy"];
const STOCKS: [(&str, i64); 6] = [
    ("acme", 120),
    ("globex", 85),
    ("initech", 42),
    ("hooli", 310),
    ("umbrella", 230),
    ("wayne", 150),
];

fn unit_factor(u: &str) -> Option<(&'static str, f64)> {
    Some(match u {
        "m" | "meter" | "meters" => ("length", 1.0),
        "km" | "kilometer" | "kilometers" => ("length", 1000.0),
        "mile" | "miles" => ("length", 1609.344),
        "ft" | "foot" | "feet" => ("length", 0.3048),
        "kg" | "kilogram" | "kilograms" => ("mass", 1.0),
        "g" | "gram" | "grams" => ("mass", 0.001),
        "lb" | "pound" | "pounds" => ("mass", 0.45359237),
        "l" | "liter" | "liters" => ("volume", 1.0),
        "ml" => ("volume", 0.001),
        "gallon" | "gallons" => ("volume", 3.785411784),
        _ => return None,
    })
}

/// Deterministic but not guessable-by-pattern login token.
fn make_token(user: &str, n: u64) -> String {
    let mut h: u64 = 0xcbf29ce484222325 ^ n.wrapping_mul(0x9e3779b97f4a7c15);
    for b in user.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("t{:05x}", h & 0xfffff)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A number as JSON: integral values become integers.
pub(crate) fn num_json(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

type ToolResult = Result<Value, String>;

struct Args<'a> {
    tool: &'a str,
    m: &'a Map<String, Value>,
}

impl Args<'_> {
    fn s(&self, k: &str) -> Result<String, String> {
        match self.m.get(k) {
            Some(Value::String(s)) if s.len() <= MAX_ARG_LEN => Ok(s.trim().to_lowercase()),
            Some(Value::String(_)) => Err(format!("{}: {k} is too long", self.tool)),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(_) => Err(format!("{}: {k} must be a string", self.tool)),
            None => Err(format!("{}: missing {k}", self.tool)),
        }
    }
    fn opt_s(&self, k: &str) -> Result<String, String> {
        if self.m.contains_key(k) {
            self.s(k)
        } else {
            Ok(String::new())
        }
    }
    fn n(&self, k: &str) -> Result<f64, String> {
        match self.m.get(k) {
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| format!("{}: bad number {k}", self.tool)),
            Some(Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("{}: {k} must be a number", self.tool)),
            Some(_) => Err(format!("{}: {k} must be a number", self.tool)),
            None => Err(format!("{}: missing {k}", self.tool)),
        }
    }
}

fn check_time(t: &str) -> Result<(), String> {
    let ok = t.len() == 5
        && t.as_bytes()[2] == b':'
        && t[..2].parse::<u32>().is_ok_and(|h| h < 24)
        && t[3..].parse::<u32>().is_ok_and(|m| m < 60);
    if ok {
        Ok(())
    } else {
        Err(format!("bad time {t:?}, use hh:mm"))
    }
}

fn check_day(d: &str) -> Result<(), String> {
    if DAYS.contains(&d) {
        Ok(())
    } else {
        Err(format!("unknown day {d:?}"))
    }
}

impl BuiltinWorld {
    fn user_of(&self, token: &str) -> Result<String, String> {
        self.state
            .sessions
            .get(token)
            .cloned()
            .ok_or_else(|| "invalid or expired token".to_string())
    }

    fn run(&mut self, call: &ToolCall) -> ToolResult {
        let tool = call.name.as_str();
        let known: HashSet<&str> = call.arguments.keys().map(String::as_str).collect();
        let schema = builtin_tools()
            .iter()
            .find(|t| t.name == tool)
            .ok_or_else(|| format!("unknown tool {tool:?}"))?;
        for k in &known {
            if schema.property(k).is_none() {
                return Err(format!("{tool}: unexpected parameter {k:?}"));
            }
        }
        let a = Args {
            tool,
            m: &call.arguments,
        };
        let st = &mut self.state;
        match tool {
            "login" => {
                let (u, p) = (a.s("username")?, a.s("password")?);
                if st.users.get(&u).is_none_or(|pw| *pw != p) {
                    return Err("wrong username or password".into());
                }
                let token = make_token(&u, st.next_token);
                st.next_token += 1;
                st.sessions.insert(token.clone(), u);
                Ok(json!({ "token": token }))
            }
            "logout" => {
                let t = a.s("token")?;
                st.sessions.remove(&t).ok_or("invalid or expired token")?;
                Ok(json!({"status": "logged out"}))
            }
            "add_alarm" => {
                let t = a.s("time")?;
                check_time(&t)?;
                if st.alarms.contains(&t) {
                    return Err(format!("alarm at {t} already exists"));
                }
                if st.alarms.len() >= MAX_LIST_LEN {
                    return Err("too many alarms".into());
                }
                st.alarms.push(t.clone());
                st.alarms.sort();
                Ok(json!({"status": "added", "time": t}))
            }
            "delete_alarm" => {
                let t = a.s("time")?;
                let before = st.alarms.len();
                st.alarms.retain(|x| *x != t);
                if st.alarms.len() == before {
                    return Err(format!("no alarm at {t}"));
                }
                Ok(json!({"status": "deleted", "time": t}))
            }
            "list_alarms" => Ok(json!({"alarms": st.alarms})),
            "add_reminder" => {
                let (text, time) = (a.s("text")?, a.s("time")?);
                check_time(&time)?;
                if text.is_empty() {
                    return Err("add_reminder: empty text".into());
                }
                if st.reminders.len() >= MAX_LIST_LEN {
                    return Err("too many reminders".into());
                }
                st.reminders.push(Reminder {
                    text: text.clone(),
                    time: time.clone(),
                });
                Ok(json!({"status": "added", "text": text, "time": time}))
            }
            "delete_reminder" => {
                let text = a.s("text")?;
                let before = st.reminders.len();
                st.reminders.retain(|r| r.text != text);
                if st.reminders.len() == before {
                    return Err(format!("no reminder {text:?}"));
                }
                Ok(json!({"status": "deleted", "text": text}))
            }
            "list_reminders" => Ok(json!({"reminders": st.reminders})),
            "add_meeting" => {
                let (title, day, time) = (a.s("title")?, a.s("day")?, a.s("time")?);
                check_day(&day)?;
                check_time(&time)?;
                if st.meetings.iter().any(|m| m.title == title) {
                    return Err(format!("meeting {title:?} already exists"));
                }
                if st.meetings.len() >= MAX_LIST_LEN {
                    return Err("too many meetings".into());
                }
                st.meetings.push(Meeting {
                    title: title.clone(),
                    day: day.clone(),
                    time: time.clone(),
                });
                Ok(json!({"status": "added", "title": title, "day": day, "time": time}))
            }
            "cancel_meeting" => {
                let title = a.s("title")?;
                let before = st.meetings.len();
                st.meetings.retain(|m| m.title != title);
                if st.meetings.len() == before {
                    return Err(format!("no meeting {title:?}"));
                }
                Ok(json!({"status": "cancelled", "title": title}))
            }
            "list_meetings" => {
                let day = a.s("day")?;
                check_day(&day)?;
                let ms: Vec<&Meeting> = st.meetings.iter().filter(|m| m.day == day).collect();
                Ok(json!({"day": day, "meetings": ms}))
            }
            "get_contact" => {
                let name = a.s("name")?;
                let c = st
                    .contacts
                    .get(&name)
                    .ok_or_else(|| format!("no contact {name:?}"))?;
                Ok(json!({"name": name, "email": c.email, "phone": c.phone}))
            }
            "add_contact" => {
                let (name, email, phone) = (a.s("name")?, a.s("email")?, a.opt_s("phone")?);
                if !email.contains('@') {
                    return Err(format!("bad email {email:?}"));
                }
                if st.contacts.contains_key(&name) {
                    return Err(format!("contact {name:?} already exists"));
                }
                if st.contacts.len() >= MAX_LIST_LEN {
                    return Err("too many contacts".into());
                }
                st.contacts.insert(name.clone(), Contact { email, phone });
                Ok(json!({"status": "added", "name": name}))
            }
            "send_email" => {
                let (to, subject, body) = (a.s("to")?, a.s("subject")?, a.opt_s("body")?);
                if !to.contains('@') {
                    return Err(format!("bad email address {to:?}"));
                }
                if st.outbox.len() >= MAX_LIST_LEN {
                    return Err("outbox full".into());
                }
                st.outbox.push(Email {
                    to: to.clone(),
                    subject,
                    body,
                });
                Ok(json!({"status": "sent", "to": to}))
            }
            "get_balance" => {
                let (token, account) = (a.s("token")?, a.s("account")?);
                let u = self.user_of(&token)?;
                let bal = self
                    .state
                    .accounts
                    .get(&u)
                    .and_then(|a| a.get(&account))
                    .ok_or_else(|| format!("no account {account:?}"))?;
                Ok(json!({"account": account, "balance": bal}))
            }
            "transfer" => {
                let (token, from, to) = (a.s("token")?, a.s("from_account")?, a.s("to_account")?);
                let amount = a.n("amount")?;
                let u = self.user_of(&token)?;
                if amount.fract() != 0.0 || amount <= 0.0 || amount > 1e9 {
                    return Err("amount must be a positive whole number".into());
                }
                let amount = amount as i64;
                let accts = self.state.accounts.get_mut(&u).ok_or("no accounts")?;
                if from == to || !accts.contains_key(&from) || !accts.contains_key(&to) {
                    return Err("from_account and to_account must be two different accounts".into());
                }
                let fb = accts.get(&from).copied().unwrap_or(0);
                if fb < amount {
                    return Err("insufficient funds".into());
                }
                accts.insert(from.clone(), fb - amount);
                let tb = accts.get(&to).copied().unwrap_or(0) + amount;
                accts.insert(to.clone(), tb);
                Ok(json!({"status": "done", "from_balance": fb - amount, "to_balance": tb}))
            }
            "get_health" => {
                let (token, metric) = (a.s("token")?, a.s("metric")?);
                let u = self.user_of(&token)?;
                let v = self
                    .state
                    .health
                    .get(&u)
                    .and_then(|h| h.get(&metric))
                    .ok_or_else(|| format!("no record {metric:?}"))?;
                Ok(json!({"metric": metric, "value": num_json(*v)}))
            }
            "add_health" => {
                let (token, metric) = (a.s("token")?, a.s("metric")?);
                let value = a.n("value")?;
                let u = self.user_of(&token)?;
                if !["steps", "weight", "heart_rate", "sleep"].contains(&metric.as_str()) {
                    return Err(format!("unknown metric {metric:?}"));
                }
                if !value.is_finite() || !(0.0..=1e6).contains(&value) {
                    return Err("value out of range".into());
                }
                self.state
                    .health
                    .entry(u)
                    .or_default()
                    .insert(metric.clone(), value);
                Ok(json!({"status": "recorded", "metric": metric, "value": num_json(value)}))
            }
            "convert_units" => {
                let value = a.n("value")?;
                let (from, to) = (a.s("from_unit")?, a.s("to_unit")?);
                if !value.is_finite() || value.abs() > 1e12 {
                    return Err("value out of range".into());
                }
                let out = match (from.as_str(), to.as_str()) {
                    ("c", "f") => value * 9.0 / 5.0 + 32.0,
                    ("f", "c") => (value - 32.0) * 5.0 / 9.0,
                    (f, t) => {
                        let (fk, ff) =
                            unit_factor(f).ok_or_else(|| format!("unknown unit {f:?}"))?;
                        let (tk, tf) =
                            unit_factor(t).ok_or_else(|| format!("unknown unit {t:?}"))?;
                        if fk != tk {
                            return Err(format!("cannot convert {fk} to {tk}"));
                        }
                        value * ff / tf
                    }
                };
                Ok(json!({"value": num_json(round2(out)), "unit": to}))
            }
            "calculate" => {
                let e = a.s("expression")?;
                let r = calc::eval(&e)?;
                Ok(json!({"result": num_json((r * 10000.0).round() / 10000.0)}))
            }
            "get_weather" => {
                let (city, day) = (a.s("city")?, a.s("day")?);
                check_day(&day)?;
                let ci = CITIES
                    .iter()
                    .position(|c| *c == city)
                    .ok_or_else(|| format!("no forecast for {city:?}"))?;
                let di = DAYS.iter().position(|d| *d == day).unwrap_or(0);
                let h = ci * 7 + di * 3;
                Ok(
                    json!({"city": city, "day": day, "sky": SKIES[h % SKIES.len()], "high": 4 + (h * 5) % 27}),
                )
            }
            "get_stock_price" => {
                let s = a.s("symbol")?;
                let p = STOCKS
                    .iter()
                    .find(|(n, _)| *n == s)
                    .ok_or_else(|| format!("unknown symbol {s:?}"))?;
                Ok(json!({"symbol": s, "price": p.1}))
            }
            other => Err(format!("unknown tool {other:?}")),
        }
    }
}

impl World for BuiltinWorld {
    fn name(&self) -> &str {
        WORLD_NAME
    }
    fn tools(&self) -> Vec<ToolSchema> {
        builtin_tools().to_vec()
    }
    fn reset(&mut self, task: &Task) -> Result<(), WorldError> {
        if task.world != WORLD_NAME {
            return Err(WorldError::WrongWorld {
                task: task.id.clone(),
                world: WORLD_NAME.into(),
            });
        }
        self.state = initial_state().clone();
        Ok(())
    }
    fn execute(&mut self, call: &ToolCall) -> Observation {
        match self.run(call) {
            Ok(v) => Observation::ok(v),
            Err(e) => Observation::error(e),
        }
    }
    fn final_state(&self) -> Option<Value> {
        Some(self.state_json())
    }

    fn fork(&self) -> Box<dyn World> {
        Box::new(self.clone())
    }
}

// ---------------------------------------------------------------------------------------------
// Task generator

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
    static T: OnceLock<Result<TemplateFile, String>> = OnceLock::new();
    T.get_or_init(|| serde_json::from_str(TEMPLATES_JSON).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| WorldError::Data {
            path: "assets/worlds/builtin/templates.json".into(),
            msg: e.clone(),
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

/// Replace `{name}` / `{name.field}` placeholders using `get`; `{$…}` is left for later unless
/// `get` resolves it.
fn fill(s: &str, get: &dyn Fn(&str) -> Option<Value>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let j = after
            .find('}')
            .ok_or_else(|| format!("unclosed placeholder in {s:?}"))?;
        let key = &after[..j];
        match get(key) {
            Some(v) => out.push_str(&value_text(&v)),
            None if key.starts_with('$') => {
                out.push('{');
                out.push_str(key);
                out.push('}');
            }
            None => return Err(format!("unknown placeholder {{{key}}}")),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A whole-string placeholder `{key}` keeps the value's JSON type.
fn fill_value(v: &Value, get: &dyn Fn(&str) -> Option<Value>) -> Result<Value, String> {
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
    let request = fill(&t.request[rng.random_range(0..t.request.len())], &getv).map_err(bad)?;
    let gold_plan = t
        .plan
        .iter()
        .map(|p| fill(p, &getv))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
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
            args.insert(k.clone(), fill_value(v, &get).map_err(bad)?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::validate_call;

    #[test]
    fn assets_parse_and_have_enough_tools_and_templates() {
        assert!(builtin_tools().len() >= 20);
        assert!(template_count() >= 30);
        let names: HashSet<_> = builtin_tools().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), builtin_tools().len(), "tool names unique");
    }

    #[test]
    fn every_template_instantiates_and_gold_calls_are_schema_valid() {
        for seed in 0..20 {
            let tasks = instantiate_all(seed).unwrap();
            for t in &tasks {
                assert!((1..=5).contains(&t.gold_calls.len()), "{:?}", t.template);
                assert_eq!(t.gold_plan.len(), t.gold_calls.len(), "{:?}", t.template);
                for c in &t.gold_calls {
                    assert!(
                        validate_call(c, builtin_tools()).is_empty(),
                        "{:?} {c:?}",
                        t.template
                    );
                }
                assert!(!t.request.contains('{') && t.gold_plan.iter().all(|p| !p.contains('{')));
            }
        }
    }

    #[test]
    fn generation_is_deterministic_and_splits_disjoint() {
        let a = generate_tasks(Split::Train, 200, 1).unwrap();
        let b = generate_tasks(Split::Train, 200, 1).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 200);
        let dev = generate_tasks(Split::Dev, 50, 1).unwrap();
        let test = generate_tasks(Split::Test, 50, 2).unwrap();
        assert_eq!(dev.len(), 50);
        let train_req: HashSet<_> = generate_tasks(Split::Train, 1000, 3)
            .unwrap()
            .into_iter()
            .map(|t| t.request)
            .collect();
        for t in dev.iter().chain(test.iter()) {
            assert!(!train_req.contains(&t.request));
        }
        assert!(dev
            .iter()
            .all(|t| !test.iter().any(|u| u.request == t.request)));
        let c = generate_tasks(Split::Train, 200, 2).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn dependent_calls_use_earlier_results() {
        let tasks = generate_tasks(Split::Train, 400, 5).unwrap();
        let t = tasks
            .iter()
            .find(|t| t.template.as_deref() == Some("balance"))
            .unwrap();
        assert_eq!(t.gold_derived[1], vec!["token".to_string()]);
        let mut w = BuiltinWorld::new();
        w.reset(t).unwrap();
        let tok = w.execute(&t.gold_calls[0]).content["token"].clone();
        assert_eq!(t.gold_calls[1].arguments["token"], tok);
    }

    #[test]
    fn episodes_do_not_leak_state() {
        let tasks = generate_tasks(Split::Train, 5, 9).unwrap();
        let mut w = BuiltinWorld::new();
        w.reset(&tasks[0]).unwrap();
        let s0 = w.final_state();
        assert!(
            w.execute(&ToolCall::new("add_alarm", json!({"time": "11:11"})))
                .ok
        );
        assert_ne!(w.final_state(), s0);
        w.reset(&tasks[1]).unwrap();
        assert_eq!(w.final_state(), s0);
        assert_eq!(BuiltinWorld::new().final_state(), s0);
    }

    #[test]
    fn tools_behave() {
        let mut w = BuiltinWorld::new();
        let bad = w.execute(&ToolCall::new(
            "login",
            json!({"username": "alice", "password": "nope"}),
        ));
        assert!(!bad.ok);
        let tok = w
            .execute(&ToolCall::new(
                "login",
                json!({"username": "alice", "password": "red7"}),
            ))
            .content["token"]
            .as_str()
            .unwrap()
            .to_string();
        let t = w.execute(&ToolCall::new(
            "transfer",
            json!({"token": tok, "from_account": "checking", "to_account": "savings", "amount": 100}),
        ));
        assert!(t.ok, "{t:?}");
        let b = w.execute(&ToolCall::new(
            "get_balance",
            json!({"token": tok, "account": "savings"}),
        ));
        assert_eq!(b.content["balance"], 1300);
        let over = w.execute(&ToolCall::new(
            "transfer",
            json!({"token": tok, "from_account": "checking", "to_account": "savings", "amount": 100000}),
        ));
        assert_eq!(over.content["error"], "insufficient funds");
        let c = w.execute(&ToolCall::new(
            "convert_units",
            json!({"value": 20, "from_unit": "c", "to_unit": "f"}),
        ));
        assert_eq!(c.content["value"], 68);
        let k = w.execute(&ToolCall::new(
            "calculate",
            json!({"expression": "120 * 3"}),
        ));
        assert_eq!(k.content["result"], 360);
        assert!(
            !w.execute(&ToolCall::new(
                "calculate",
                json!({"expression": "__import__('os')"})
            ))
            .ok
        );
        assert!(
            !w.execute(&ToolCall::new("add_alarm", json!({"time": "25:00"})))
                .ok
        );
        assert!(
            !w.execute(&ToolCall::new(
                "add_alarm",
                json!({"time": "10:00", "x": 1})
            ))
            .ok
        );
        assert!(
            !w.execute(&ToolCall::new(
                "get_balance",
                json!({"token": "forged", "account": "checking"})
            ))
            .ok
        );
        let long = "a".repeat(MAX_ARG_LEN + 1);
        assert!(
            !w.execute(&ToolCall::new("get_contact", json!({ "name": long })))
                .ok
        );
        assert!(
            w.execute(&ToolCall::new("logout", json!({"token": tok})))
                .ok
        );
        assert!(
            !w.execute(&ToolCall::new("logout", json!({"token": tok})))
                .ok
        );
    }
}
