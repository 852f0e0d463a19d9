//! The `openai` rollout backend: groups sampled on OpenAI-compatible servers.
//!
//! Each group is one `POST {base}/completions` request with the prompt as token ids (the
//! trainer's tokenizer and chat template decide the prompt, exactly as in the local backend),
//! `n` = the group size, the sampling settings, `seed`, `logprobs: 0` (the sampled tokens'
//! log-probs), `return_token_ids: true` (vLLM's `choices[].token_ids`) and
//! `return_tokens_as_token_ids: true` (the log-probs' tokens as `"token_id:N"` strings, read
//! when a server gives no `token_ids`).
//! `cahl_stream` carries the first RNG stream of the group; `cahl-tui serve` uses it so a
//! seeded run gives the local backend's samples, other servers ignore it.
//!
//! Requests go round-robin over the endpoints. A request that fails by connection, timeout,
//! HTTP 5xx or 429 is retried `[backend].retries` times with exponential backoff; then the
//! step fails with [`EngineError::Endpoint`] naming the endpoint. A 4xx answer fails at once.
//!
//! Adapters: [`OpenAiBackend::publish`] writes `planner@V-T` and `executor@V-T` PEFT folders
//! (f32; V the policy version, T a tag of this run) under `adapter_dir/run-T/` and posts
//! `/load_lora_adapter` (`lora_name`, `lora_path`) to every endpoint, then
//! `/unload_lora_adapter` for the previous version, as vLLM documents with
//! `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`. The tag keeps names unique across runs and
//! resumes: vLLM keys its prefix cache by adapter name, so a name must never be reused for
//! other weights. After a failed request the version is forgotten and the next step loads
//! the adapters again (a server may have restarted without them).
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use super::{BackendSection, RolloutBackend, SampleRequest};
use crate::error::{EngineError, Result};
use crate::model::Model;
use crate::sampling::{Completion, FinishReason, SamplingParams};

/// The API base of an endpoint URL: `http://h:p` and `http://h:p/v1` both give
/// `http://h:p/v1`. Only plain HTTP is spoken (put a TLS-terminating proxy in front of a
/// remote server, or tunnel it).
pub fn base_url(url: &str) -> Result<String> {
    let u = url.trim().trim_end_matches('/');
    if u.starts_with("https://") {
        return Err(EngineError::Config(format!(
            "endpoint {url}: https is not supported (this build speaks plain HTTP); use an http:// URL, e.g. through an SSH tunnel"
        )));
    }
    let Some(rest) = u.strip_prefix("http://") else {
        return Err(EngineError::Config(format!(
            "endpoint {url:?}: expected an http://host:port URL"
        )));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(EngineError::Config(format!(
            "endpoint {url:?}: no host in the URL"
        )));
    }
    Ok(if u.ends_with("/v1") {
        u.to_string()
    } else {
        format!("{u}/v1")
    })
}

/// Largest answer read (bytes): a group of long completions with their token ids and
/// log-probs (and the prompt's ids repeated per choice) runs to megabytes.
const MAX_ANSWER: u64 = 1 << 30;

/// Sampling on OpenAI-compatible servers (see the module docs).
pub struct OpenAiBackend {
    /// API bases (`…/v1`), in the order given.
    bases: Vec<String>,
    http: ureq::Agent,
    next: AtomicUsize,
    retries: u32,
    backoff: Duration,
    api_key: Option<String>,
    adapter_dir: PathBuf,
    /// The base model's name on the servers (for requests without an adapter).
    base_model: String,
    /// The model names the first server listed when connecting: the base, then adapters.
    served: Vec<String>,
    /// The policy version whose adapters the servers hold.
    version: Mutex<Option<u64>>,
    /// Distinguishes this run's adapter names and folder from any other run's on the same
    /// servers (vLLM keys its prefix cache by adapter name: a name reused for other weights,
    /// e.g. after a resume, could be answered from blocks computed with the old ones).
    tag: String,
}

/// Eight hex digits from the clock and the process id, fresh for every backend.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let x = crate::train::mix_seed(&[nanos, std::process::id() as u64]);
    format!("{:08x}", x as u32)
}

/// What one attempt of a request gave.
enum Attempt {
    Ok(Value),
    /// Worth retrying (connection, timeout, 5xx, 429).
    Retry(String),
    /// Not worth retrying (4xx, a body that is not JSON).
    Fail(String),
}

impl OpenAiBackend {
    /// Connect to the endpoints of `section`: each must answer `GET /models` (so a wrong URL
    /// fails before the first step). Adapters will be written under `adapter_dir`.
    pub fn connect(section: &BackendSection, adapter_dir: &Path) -> Result<OpenAiBackend> {
        section.validate()?;
        let bases = section
            .endpoints
            .iter()
            .map(|e| base_url(e))
            .collect::<Result<Vec<_>>>()?;
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs_f64(section.timeout_s)))
            .http_status_as_error(false)
            // A fresh connection per request: a group's sampling dwarfs the handshake, and a
            // pooled connection to a server that went away would wait out the timeout.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build()
            .into();
        let api_key = if section.api_key_env.is_empty() {
            None
        } else {
            Some(std::env::var(&section.api_key_env).map_err(|_| {
                EngineError::Config(format!(
                    "[backend].api_key_env names {:?}, which is not set",
                    section.api_key_env
                ))
            })?)
        };
        let mut b = OpenAiBackend {
            bases,
            http,
            next: AtomicUsize::new(0),
            retries: section.retries,
            backoff: Duration::from_secs_f64(section.backoff_s),
            api_key,
            adapter_dir: adapter_dir.to_path_buf(),
            base_model: String::new(),
            served: Vec::new(),
            version: Mutex::new(None),
            tag: run_tag(),
        };
        for i in 0..b.bases.len() {
            let models = b.request(i, "GET", "models", None)?;
            let first = models
                .get("data")
                .and_then(Value::as_array)
                .and_then(|d| {
                    // The base model: the entry without a parent (vLLM lists adapters with one).
                    d.iter()
                        .find(|m| m.get("parent").is_none_or(Value::is_null))
                        .or(d.first())
                })
                .and_then(|m| m.get("id"))
                .and_then(Value::as_str)
                .map(String::from);
            if i == 0 {
                b.served = models
                    .get("data")
                    .and_then(Value::as_array)
                    .map(|d| {
                        d.iter()
                            .filter_map(|m| m.get("id").and_then(Value::as_str).map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
            }
            match (first, i) {
                (Some(id), 0) => b.base_model = id,
                (Some(_), _) => {}
                (None, _) => {
                    return Err(EngineError::Endpoint {
                        endpoint: b.bases[i].clone(),
                        msg: "GET /models lists no model".into(),
                    })
                }
            }
        }
        Ok(b)
    }

    /// Write the adapters under `dir` from now on (e.g. once the session folder is known).
    pub fn set_adapter_dir(&mut self, dir: &Path) {
        self.adapter_dir = dir.to_path_buf();
    }

    /// The base model's name on the (first) server.
    pub fn base_model(&self) -> &str {
        &self.base_model
    }

    /// The model names the first server listed when connecting (`GET /models`): the base,
    /// then adapters.
    pub fn model_ids(&self) -> &[String] {
        &self.served
    }

    /// One chat completion of a system + user conversation under `model`, rendered by the
    /// server's chat template (for models this machine does not hold: no tokenizer here). The
    /// text of the first choice; tool calls a server parsed out are written back as
    /// `<tool_call>` blocks, so the text reads as the model wrote it.
    pub fn chat_text(
        &self,
        model: &str,
        system: &str,
        user: &str,
        p: &SamplingParams,
    ) -> Result<String> {
        let mut body = sampling_fields(p);
        body["model"] = json!(model);
        body["messages"] =
            json!([{"role": "system", "content": system}, {"role": "user", "content": user}]);
        body["n"] = json!(1);
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len();
        let answer = self.request(i, "POST", "chat/completions", Some(&body))?;
        chat_text_of(&answer).map_err(|msg| EngineError::Endpoint {
            endpoint: self.bases[i].clone(),
            msg: format!("POST /chat/completions ({model}): {msg}"),
        })
    }

    /// The API bases in use.
    pub fn endpoints(&self) -> &[String] {
        &self.bases
    }

    /// One request to endpoint `i` with retries; the answer's JSON.
    fn request(&self, i: usize, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}/{path}", self.bases[i]);
        let mut last = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                std::thread::sleep(self.backoff * (1u32 << (attempt - 1).min(16)));
            }
            match self.attempt(&url, method, body) {
                Attempt::Ok(v) => return Ok(v),
                Attempt::Fail(msg) => {
                    return Err(EngineError::Endpoint {
                        endpoint: self.bases[i].clone(),
                        msg: format!("{method} /{path}: {msg}"),
                    })
                }
                Attempt::Retry(msg) => last = msg,
            }
        }
        Err(EngineError::Endpoint {
            endpoint: self.bases[i].clone(),
            msg: format!(
                "{method} /{path} failed {} time(s): {last}",
                self.retries + 1
            ),
        })
    }

    fn attempt(&self, url: &str, method: &str, body: Option<&Value>) -> Attempt {
        let sent = match (method, body) {
            ("GET", _) => {
                let mut r = self.http.get(url);
                if let Some(k) = &self.api_key {
                    r = r.header("Authorization", format!("Bearer {k}"));
                }
                r.call()
            }
            (_, b) => {
                let mut r = self.http.post(url);
                if let Some(k) = &self.api_key {
                    r = r.header("Authorization", format!("Bearer {k}"));
                }
                r.send_json(b.cloned().unwrap_or(Value::Null))
            }
        };
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(e.to_string()),
        };
        let status = resp.status().as_u16();
        let text = match resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
        {
            Ok(t) => t,
            Err(e) => return Attempt::Retry(format!("reading the answer: {e}")),
        };
        if status == 429 || status >= 500 {
            return Attempt::Retry(format!("HTTP {status}: {}", snippet(&text)));
        }
        if status >= 400 {
            return Attempt::Fail(format!("HTTP {status}: {}", snippet(&text)));
        }
        if text.trim().is_empty() {
            return Attempt::Ok(Value::Null);
        }
        match serde_json::from_str(&text) {
            Ok(v) => Attempt::Ok(v),
            // vLLM's LoRA endpoints answer 200 with a plain-text sentence.
            Err(_) if !url.ends_with("completions") => Attempt::Ok(Value::String(text)),
            Err(e) => Attempt::Fail(format!("answer is not JSON ({e}): {}", snippet(&text))),
        }
    }

    /// The served name of `role`'s adapter at `version`: `planner@12-<run tag>`.
    pub fn adapter_name(&self, role: &str, version: u64) -> String {
        format!("{role}@{version}-{}", self.tag)
    }

    /// The folder the adapters are written into (`adapter_dir/run-<tag>`).
    pub fn adapter_folder(&self) -> PathBuf {
        self.adapter_dir.join(format!("run-{}", self.tag))
    }

    /// Forget the published version, so the next [`RolloutBackend::publish`] loads the
    /// adapters again (after a failure: a server may have restarted without them).
    fn forget_version(&self) {
        if let Ok(mut v) = self.version.lock() {
            *v = None;
        }
    }

    /// The model name a request uses: `role@version-tag`, or the base model.
    fn model_name(&self, adapter: Option<&str>) -> Result<String> {
        let Some(role) = adapter else {
            return Ok(self.base_model.clone());
        };
        let v = self
            .version
            .lock()
            .map_err(|_| EngineError::Poisoned("backend version"))?;
        match *v {
            Some(v) => Ok(self.adapter_name(role, v)),
            None => Err(EngineError::Invalid(
                "the openai backend has no adapters published yet".into(),
            )),
        }
    }
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    let mut end = t.len().min(300);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    if end < t.len() {
        format!("{}…", &t[..end])
    } else {
        t.to_string()
    }
}

/// The sampling settings of a request, in vLLM's names: greedy as temperature 0, top-k 0 as
/// -1, and the stop string kept in the text (the parsers read closing tags).
fn sampling_fields(p: &SamplingParams) -> Value {
    json!({
        "max_tokens": p.max_tokens,
        "temperature": if p.greedy { 0.0 } else { p.temperature },
        "top_p": p.top_p,
        "top_k": if p.top_k == 0 { -1 } else { p.top_k as i64 },
        "seed": p.seed,
        "stop": p.stop,
        "include_stop_str_in_output": true,
        "skip_special_tokens": true,
    })
}

/// The request body of one group (see the module docs).
pub fn completion_body(model: &str, req: &SampleRequest<'_>) -> Value {
    let mut body = sampling_fields(req.params);
    body["model"] = json!(model);
    body["prompt"] = json!(req.prompt);
    body["n"] = json!(req.g);
    body["logprobs"] = json!(0);
    body["return_token_ids"] = json!(true);
    body["return_tokens_as_token_ids"] = json!(true);
    body["cahl_stream"] = json!(req.first_stream);
    body
}

/// The completions of an answer to [`completion_body`], in choice-index order.
pub fn parse_completions(answer: &Value, g: usize) -> std::result::Result<Vec<Completion>, String> {
    let choices = answer
        .get("choices")
        .and_then(Value::as_array)
        .ok_or("the answer has no `choices` list")?;
    if choices.len() != g {
        return Err(format!("asked for {g} completions, got {}", choices.len()));
    }
    let mut out: Vec<(u64, Completion)> = Vec::with_capacity(g);
    for (k, c) in choices.iter().enumerate() {
        let index = c.get("index").and_then(Value::as_u64).unwrap_or(k as u64);
        let text = c
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let lp = c.get("logprobs").filter(|v| !v.is_null());
        let tokens: Vec<u32> = match c.get("token_ids").and_then(Value::as_array) {
            Some(ids) => ids
                .iter()
                .map(|v| v.as_u64().map(|x| x as u32))
                .collect::<Option<_>>()
                .ok_or(format!("choice {index}: token_ids holds a non-integer"))?,
            None => lp
                .and_then(|l| l.get("tokens"))
                .and_then(Value::as_array)
                .and_then(|ts| {
                    ts.iter()
                        .map(|t| {
                            t.as_str()
                                .and_then(|s| s.strip_prefix("token_id:"))
                                .and_then(|n| n.parse::<u32>().ok())
                        })
                        .collect::<Option<Vec<u32>>>()
                })
                .ok_or(format!(
                    "choice {index} has no token ids (neither `token_ids` nor `token_id:N` log-prob tokens): the server ignores `return_token_ids` and `return_tokens_as_token_ids`"
                ))?,
        };
        let logprobs: Vec<f32> = lp
            .and_then(|l| l.get("token_logprobs"))
            .and_then(Value::as_array)
            .ok_or(format!("choice {index} has no logprobs.token_logprobs"))?
            .iter()
            .map(|v| v.as_f64().map(|x| x as f32))
            .collect::<Option<_>>()
            .ok_or(format!("choice {index}: a token log-prob is not a number"))?;
        if logprobs.len() != tokens.len() {
            return Err(format!(
                "choice {index}: {} token ids but {} log-probs",
                tokens.len(),
                logprobs.len()
            ));
        }
        let finish = match c.get("finish_reason").and_then(Value::as_str) {
            Some("length") => FinishReason::Length,
            Some(_) => match c.get("stop_reason") {
                Some(Value::String(_)) => FinishReason::Stop,
                _ => FinishReason::Eos,
            },
            None => FinishReason::Length,
        };
        out.push((
            index,
            Completion {
                tokens,
                text,
                logprobs,
                finish,
            },
        ));
    }
    out.sort_by_key(|(i, _)| *i);
    if out.iter().enumerate().any(|(k, (i, _))| *i != k as u64) {
        let idx: Vec<u64> = out.iter().map(|(i, _)| *i).collect();
        return Err(format!("choice indices {idx:?} are not 0..{g}"));
    }
    Ok(out.into_iter().map(|(_, c)| c).collect())
}

/// The text of a chat answer's first choice (see [`OpenAiBackend::chat_text`]).
pub fn chat_text_of(answer: &Value) -> std::result::Result<String, String> {
    let msg = answer
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c.get("message"))
        .ok_or("the answer has no choices[0].message")?;
    let mut text = msg
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    for call in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = call.get("function").ok_or("a tool call has no function")?;
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        let args: Value = match f.get("arguments") {
            Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
            Some(v) => v.clone(),
            None => json!({}),
        };
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text += &format!(
            "<tool_call>\n{}\n</tool_call>",
            json!({"name": name, "arguments": args})
        );
    }
    Ok(text)
}

impl RolloutBackend for OpenAiBackend {
    fn describe(&self) -> String {
        format!(
            "openai ({} endpoint{}: {})",
            self.bases.len(),
            if self.bases.len() == 1 { "" } else { "s" },
            self.bases.join(", ")
        )
    }

    fn sample(&self, req: &SampleRequest<'_>) -> Result<Vec<Completion>> {
        if req.g == 0 {
            return Ok(Vec::new());
        }
        if req.prompt.is_empty() {
            return Err(EngineError::Invalid(
                "cannot sample from an empty prompt".into(),
            ));
        }
        let model = self.model_name(req.adapter)?;
        let body = completion_body(&model, req);
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len();
        let answer = self
            .request(i, "POST", "completions", Some(&body))
            .inspect_err(|_| self.forget_version())?;
        parse_completions(&answer, req.g).map_err(|msg| EngineError::Endpoint {
            endpoint: self.bases[i].clone(),
            msg: format!("POST /completions ({model}): {msg}"),
        })
    }

    fn policy_version(&self) -> Option<u64> {
        self.version.lock().ok().and_then(|v| *v)
    }

    fn publish(&self, version: u64, model: &Model, base_model: &str) -> Result<()> {
        let previous = self.policy_version();
        if previous == Some(version) {
            return Ok(());
        }
        let folder = self.adapter_folder();
        let mut names = Vec::new();
        for role in crate::agent::ROLES {
            let Ok(a) = model.adapter(role) else { continue };
            let name = self.adapter_name(role, version);
            let dir = folder.join(&name);
            a.save_peft(&dir, base_model)?;
            let path = std::fs::canonicalize(&dir).map_err(|e| EngineError::Io {
                path: dir.clone(),
                source: e,
            })?;
            names.push((name, path));
        }
        for i in 0..self.bases.len() {
            for (name, path) in &names {
                let body = json!({ "lora_name": name, "lora_path": path.display().to_string() });
                match self.request(i, "POST", "load_lora_adapter", Some(&body)) {
                    Ok(_) => {}
                    // A retry after a lost answer, or a republish after a failed step: the
                    // name is this run's, so what is loaded is these weights.
                    Err(EngineError::Endpoint { msg, .. })
                        if msg.contains("already been loaded") => {}
                    Err(e) => return Err(e),
                }
            }
        }
        *self
            .version
            .lock()
            .map_err(|_| EngineError::Poisoned("backend version"))? = Some(version);
        // Earlier versions of this run: off the servers (best effort: a server that lost one
        // already is fine) and off the disk.
        let stale: Vec<String> = std::fs::read_dir(&folder)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains('@') && !names.iter().any(|(m, _)| m == n))
                    .collect()
            })
            .unwrap_or_default();
        for name in stale {
            for i in 0..self.bases.len() {
                let _ = self.request(
                    i,
                    "POST",
                    "unload_lora_adapter",
                    Some(&json!({ "lora_name": name })),
                );
            }
            let _ = std::fs::remove_dir_all(folder.join(&name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_one_request_with_the_samplers_settings() {
        let params = SamplingParams {
            greedy: true,
            top_k: 0,
            max_tokens: 9,
            stop: vec!["</plan>".into()],
            seed: 42,
            ..SamplingParams::default()
        };
        let req = SampleRequest {
            adapter: Some("planner"),
            prefix: None,
            prompt: &[1, 2, 3],
            g: 4,
            first_stream: 7,
            params: &params,
        };
        let b = completion_body("planner@3", &req);
        assert_eq!(b["model"], "planner@3");
        assert_eq!(b["prompt"], json!([1, 2, 3]));
        assert_eq!(
            (b["n"].as_u64(), b["max_tokens"].as_u64()),
            (Some(4), Some(9))
        );
        assert_eq!(b["temperature"], 0.0);
        assert_eq!(b["top_k"], -1);
        assert_eq!(b["seed"], 42);
        assert_eq!(b["cahl_stream"], 7);
        assert_eq!(b["include_stop_str_in_output"], true);
        assert_eq!(b["logprobs"], 0);
    }

    #[test]
    fn a_chat_answers_tool_calls_are_written_back_as_blocks() {
        let a = json!({"choices": [{"message": {"role": "assistant", "content": "Looking.",
            "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}}]});
        let t = chat_text_of(&a).unwrap();
        assert_eq!(
            t,
            "Looking.\n<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call>"
        );
        let calls = crate::parse::parse_executor(&t).calls();
        assert_eq!(calls[0].name, "get_weather");
        let plain = json!({"choices": [{"message": {"content": "<plan>a</plan>"}}]});
        assert_eq!(chat_text_of(&plain).unwrap(), "<plan>a</plan>");
        assert!(chat_text_of(&json!({"choices": []})).is_err());
    }

    #[test]
    fn endpoint_urls_get_their_api_base() {
        assert_eq!(
            base_url("http://127.0.0.1:8000").unwrap(),
            "http://127.0.0.1:8000/v1"
        );
        assert_eq!(base_url("http://h:1/v1/").unwrap(), "http://h:1/v1");
        let e = base_url("https://h:1").unwrap_err().to_string();
        assert!(e.contains("https is not supported"), "{e}");
        assert!(base_url("localhost:8000").is_err());
        assert!(base_url("http://").is_err());
    }

    #[test]
    fn completions_are_read_in_index_order_with_vllm_token_strings() {
        let answer = json!({"choices": [
            {"index": 1, "text": "b", "finish_reason": "length",
             "logprobs": {"tokens": ["token_id:7", "token_id:8"], "token_logprobs": [-0.5, -1.0]}},
            {"index": 0, "text": "a</x>", "finish_reason": "stop", "stop_reason": "</x>",
             "token_ids": [3], "logprobs": {"tokens": ["a"], "token_logprobs": [-0.25]}},
        ]});
        let c = parse_completions(&answer, 2).unwrap();
        assert_eq!(c[0].tokens, vec![3]);
        assert_eq!(c[0].finish, FinishReason::Stop);
        assert_eq!(c[0].logprobs, vec![-0.25]);
        assert_eq!(c[1].tokens, vec![7, 8]);
        assert_eq!(c[1].finish, FinishReason::Length);
        let eos = json!({"choices": [{"text": "", "finish_reason": "stop", "stop_reason": null,
            "token_ids": [2], "logprobs": {"token_logprobs": [-0.1]}}]});
        assert_eq!(
            parse_completions(&eos, 1).unwrap()[0].finish,
            FinishReason::Eos
        );
    }

    #[test]
    fn answers_without_ids_or_logprobs_are_refused_saying_what_is_missing() {
        let no_ids = json!({"choices": [{"text": "a", "finish_reason": "stop",
            "logprobs": {"tokens": ["a"], "token_logprobs": [-0.1]}}]});
        let e = parse_completions(&no_ids, 1).unwrap_err();
        assert!(e.contains("return_token_ids"), "{e}");
        let no_lp = json!({"choices": [{"text": "a", "token_ids": [1], "finish_reason": "stop"}]});
        assert!(parse_completions(&no_lp, 1)
            .unwrap_err()
            .contains("token_logprobs"));
        let twice = json!({"choices": [
            {"index": 0, "token_ids": [1], "finish_reason": "length", "logprobs": {"token_logprobs": [-0.1]}},
            {"index": 0, "token_ids": [2], "finish_reason": "length", "logprobs": {"token_logprobs": [-0.1]}}]});
        assert!(parse_completions(&twice, 2)
            .unwrap_err()
            .contains("not 0..2"));
        let short = json!({"choices": []});
        assert!(parse_completions(&short, 2)
            .unwrap_err()
            .contains("asked for 2"));
        let mismatch = json!({"choices": [{"token_ids": [1, 2], "finish_reason": "length",
            "logprobs": {"token_logprobs": [-0.1]}}]});
        assert!(parse_completions(&mismatch, 1)
            .unwrap_err()
            .contains("2 token ids but 1"));
    }

    #[test]
    fn a_dead_endpoint_is_named_after_its_retries() {
        // A port nothing listens on: bind, read the port, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let section = BackendSection {
            kind: super::super::BackendKind::OpenAi,
            endpoints: vec![format!("http://127.0.0.1:{port}")],
            retries: 2,
            backoff_s: 0.01,
            timeout_s: 5.0,
            ..BackendSection::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let e = match OpenAiBackend::connect(&section, dir.path()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("connected to a closed port"),
        };
        assert!(e.contains(&format!("127.0.0.1:{port}/v1")), "{e}");
        assert!(e.contains("failed 3 time(s)"), "{e}");
    }
}
