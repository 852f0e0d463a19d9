//! The built-in world's tools: argument checks and each tool's effect on the state.
use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::{builtin_tools, BuiltinWorld, Contact, Email, Meeting, Reminder};
use super::{MAX_ARG_LEN, MAX_LIST_LEN};
use crate::worlds::{calc, ToolCall};

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
pub(super) fn num_json(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// A tool call's failure: the message the observation shows the model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub(super) struct ToolError(pub(super) String);

impl From<String> for ToolError {
    fn from(s: String) -> Self {
        ToolError(s)
    }
}

impl From<&str> for ToolError {
    fn from(s: &str) -> Self {
        ToolError(s.to_string())
    }
}

impl From<calc::CalcError> for ToolError {
    fn from(e: calc::CalcError) -> Self {
        ToolError(e.to_string())
    }
}

/// A [`ToolError`] from a format string.
macro_rules! fail {
    ($($t:tt)*) => {
        ToolError(format!($($t)*))
    };
}

type ToolResult = Result<Value, ToolError>;

struct Args<'a> {
    tool: &'a str,
    m: &'a Map<String, Value>,
}

impl Args<'_> {
    fn s(&self, k: &str) -> Result<String, ToolError> {
        match self.m.get(k) {
            Some(Value::String(s)) if s.len() <= MAX_ARG_LEN => Ok(s.trim().to_lowercase()),
            Some(Value::String(_)) => Err(fail!("{}: {k} is too long", self.tool)),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(_) => Err(fail!("{}: {k} must be a string", self.tool)),
            None => Err(fail!("{}: missing {k}", self.tool)),
        }
    }
    fn opt_s(&self, k: &str) -> Result<String, ToolError> {
        if self.m.contains_key(k) {
            self.s(k)
        } else {
            Ok(String::new())
        }
    }
    fn n(&self, k: &str) -> Result<f64, ToolError> {
        match self.m.get(k) {
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| fail!("{}: bad number {k}", self.tool)),
            Some(Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| fail!("{}: {k} must be a number", self.tool)),
            Some(_) => Err(fail!("{}: {k} must be a number", self.tool)),
            None => Err(fail!("{}: missing {k}", self.tool)),
        }
    }
}

fn check_time(t: &str) -> Result<(), ToolError> {
    let ok = t.len() == 5
        && t.as_bytes()[2] == b':'
        && t[..2].parse::<u32>().is_ok_and(|h| h < 24)
        && t[3..].parse::<u32>().is_ok_and(|m| m < 60);
    if ok {
        Ok(())
    } else {
        Err(fail!("bad time {t:?}, use hh:mm"))
    }
}

fn check_day(d: &str) -> Result<(), ToolError> {
    if DAYS.contains(&d) {
        Ok(())
    } else {
        Err(fail!("unknown day {d:?}"))
    }
}

impl BuiltinWorld {
    fn user_of(&self, token: &str) -> Result<String, ToolError> {
        self.state
            .sessions
            .get(token)
            .cloned()
            .ok_or_else(|| "invalid or expired token".into())
    }

    /// Run one call against the state: its JSON result, or the error the observation shows.
    pub(super) fn run(&mut self, call: &ToolCall) -> ToolResult {
        let tool = call.name.as_str();
        let known: HashSet<&str> = call.arguments.keys().map(String::as_str).collect();
        let schema = builtin_tools()
            .iter()
            .find(|t| t.name == tool)
            .ok_or_else(|| fail!("unknown tool {tool:?}"))?;
        for k in &known {
            if schema.property(k).is_none() {
                return Err(fail!("{tool}: unexpected parameter {k:?}"));
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
                    return Err(fail!("alarm at {t} already exists"));
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
                    return Err(fail!("no alarm at {t}"));
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
                    return Err(fail!("no reminder {text:?}"));
                }
                Ok(json!({"status": "deleted", "text": text}))
            }
            "list_reminders" => Ok(json!({"reminders": st.reminders})),
            "add_meeting" => {
                let (title, day, time) = (a.s("title")?, a.s("day")?, a.s("time")?);
                check_day(&day)?;
                check_time(&time)?;
                if st.meetings.iter().any(|m| m.title == title) {
                    return Err(fail!("meeting {title:?} already exists"));
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
                    return Err(fail!("no meeting {title:?}"));
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
                    .ok_or_else(|| fail!("no contact {name:?}"))?;
                Ok(json!({"name": name, "email": c.email, "phone": c.phone}))
            }
            "add_contact" => {
                let (name, email, phone) = (a.s("name")?, a.s("email")?, a.opt_s("phone")?);
                if !email.contains('@') {
                    return Err(fail!("bad email {email:?}"));
                }
                if st.contacts.contains_key(&name) {
                    return Err(fail!("contact {name:?} already exists"));
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
                    return Err(fail!("bad email address {to:?}"));
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
                    .ok_or_else(|| fail!("no account {account:?}"))?;
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
                    .ok_or_else(|| fail!("no record {metric:?}"))?;
                Ok(json!({"metric": metric, "value": num_json(*v)}))
            }
            "add_health" => {
                let (token, metric) = (a.s("token")?, a.s("metric")?);
                let value = a.n("value")?;
                let u = self.user_of(&token)?;
                if !["steps", "weight", "heart_rate", "sleep"].contains(&metric.as_str()) {
                    return Err(fail!("unknown metric {metric:?}"));
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
                        let (fk, ff) = unit_factor(f).ok_or_else(|| fail!("unknown unit {f:?}"))?;
                        let (tk, tf) = unit_factor(t).ok_or_else(|| fail!("unknown unit {t:?}"))?;
                        if fk != tk {
                            return Err(fail!("cannot convert {fk} to {tk}"));
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
                    .ok_or_else(|| fail!("no forecast for {city:?}"))?;
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
                    .ok_or_else(|| fail!("unknown symbol {s:?}"))?;
                Ok(json!({"symbol": s, "price": p.1}))
            }
            other => Err(fail!("unknown tool {other:?}")),
        }
    }
}
