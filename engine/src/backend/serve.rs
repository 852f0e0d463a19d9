//! `cahl-tui serve`: the engine behind an OpenAI-compatible HTTP API, so the `openai` rollout
//! backend is tested end to end here, other clients can use the engine, and a second machine
//! can sample rollouts for the first.
//!
//! Routes (all JSON; errors as vLLM writes them: `{"object": "error", "message", "type", "code"}`):
//! - `GET /v1/models`: the base model, then each loaded adapter with `parent` = the base (as
//!   vLLM lists LoRA modules). `GET /health`: 200.
//! - `POST /v1/completions`: `prompt` as text or token ids; `n`, `max_tokens` (16),
//!   `temperature` (1; 0 = greedy), `top_p`, `top_k` (-1 or 0 = off), `seed`, `stop`,
//!   `logprobs` (the sampled tokens' log-probs; no alternatives are listed),
//!   `include_stop_str_in_output`, `return_token_ids` (vLLM's names), and `cahl_stream`: the
//!   first RNG stream of the `n` rows (the rollout's `first_stream`, 0 by default). Row `i`
//!   draws from stream `cahl_stream + i` of `seed`, so a request replays a local
//!   [`crate::sampling::sample_group`] call exactly.
//! - `POST /v1/chat/completions`: `messages` (text content), `tools`, `n`, `max_tokens` (256),
//!   `temperature`, `top_p`, `top_k`, `seed`, `stop`, `logprobs` (bool),
//!   `include_stop_str_in_output`, `return_token_ids`. The conversation goes through the
//!   model's chat template with the tools; when the request offers tools, `<tool_call>` blocks
//!   in the answer become `message.tool_calls` (arguments as a JSON string, `finish_reason:
//!   "tool_calls"`) and the text before them `content`; without tools the raw text is the
//!   content.
//! - `POST /v1/load_lora_adapter` (`lora_name`, `lora_path`: a PEFT folder) and
//!   `POST /v1/unload_lora_adapter` (`lora_name`), as vLLM's runtime LoRA updating.
//!
//! Log-probs are the sampling policy's: the model's distribution at the request's temperature
//! (1 when greedy), before top-p/top-k truncation (vLLM: `--logprobs-mode processed_logprobs`
//! without truncation).
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::agent::Agent;
use crate::chat::Message;
use crate::error::{EngineError, Result};
use crate::model::LoraAdapter;
use crate::parse::parse_executor;
use crate::sampling::{sample_group, Completion, FinishReason, SamplingParams};

/// Largest request body read (bytes).
const MAX_BODY: u64 = 64 << 20;
/// Largest `n` of one request.
const MAX_N: usize = 256;

struct State {
    agent: RwLock<Agent>,
    /// The base model's id in `/v1/models`.
    model_id: String,
    requests: AtomicU64,
    started: u64,
}

/// A bound server; [`Server::spawn`] starts its worker threads.
pub struct Server {
    http: Arc<tiny_http::Server>,
    state: Arc<State>,
    addr: SocketAddr,
}

/// A running server: its address, and [`ServerHandle::stop`].
pub struct ServerHandle {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// An HTTP error answer.
struct HttpError {
    code: u16,
    message: String,
}

impl HttpError {
    fn bad(message: impl Into<String>) -> Self {
        HttpError {
            code: 400,
            message: message.into(),
        }
    }
    fn not_found(message: impl Into<String>) -> Self {
        HttpError {
            code: 404,
            message: message.into(),
        }
    }
    fn body(&self) -> Value {
        let kind = match self.code {
            400 => "BadRequestError",
            404 => "NotFoundError",
            _ => "InternalServerError",
        };
        json!({"object": "error", "message": self.message, "type": kind, "code": self.code})
    }
}

impl From<EngineError> for HttpError {
    fn from(e: EngineError) -> Self {
        let code = match e {
            EngineError::Invalid(_) | EngineError::Tokenizer(_) | EngineError::Template(_) => 400,
            EngineError::NoAdapter(_) => 404,
            _ => 500,
        };
        HttpError {
            code,
            message: e.to_string(),
        }
    }
}

type Answer = std::result::Result<Value, HttpError>;

impl Server {
    /// Bind `addr` (e.g. `127.0.0.1:8000`; port 0 picks a free one) to serve `agent` as
    /// `model_id`.
    pub fn bind(agent: Agent, addr: &str, model_id: &str) -> Result<Server> {
        let http = tiny_http::Server::http(addr)
            .map_err(|e| EngineError::Config(format!("serve: cannot listen on {addr}: {e}")))?;
        let addr = http
            .server_addr()
            .to_ip()
            .ok_or_else(|| EngineError::Config(format!("serve: {addr} is not an IP address")))?;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Server {
            http: Arc::new(http),
            state: Arc::new(State {
                agent: RwLock::new(agent),
                model_id: model_id.to_string(),
                requests: AtomicU64::new(0),
                started,
            }),
            addr,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answer requests on `workers` threads until [`ServerHandle::stop`].
    pub fn spawn(self, workers: usize) -> Result<ServerHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            let (http, state, stop) = (self.http.clone(), self.state.clone(), stop.clone());
            let t = std::thread::Builder::new()
                .name(format!("serve-{i}"))
                .spawn(move || {
                    crate::model::ops::set_flush_denormals();
                    while !stop.load(Ordering::Relaxed) {
                        match http.recv_timeout(Duration::from_millis(100)) {
                            // On this thread, not on the compute pool: a pool thread waiting
                            // inside a matmul may run other queued pool work, and a second
                            // request handled there would take the model lock it holds.
                            Ok(Some(req)) => handle(&state, req),
                            Ok(None) => {}
                            Err(e) => tracing::warn!("serve: {e}"),
                        }
                    }
                })
                .map_err(EngineError::TrainerThread)?;
            threads.push(t);
        }
        Ok(ServerHandle {
            addr: self.addr,
            stop,
            threads,
        })
    }
}

impl ServerHandle {
    /// Stop taking requests and wait for the workers (each finishes its request first).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// Block until the workers end (never, unless one panics).
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn handle(state: &State, mut req: tiny_http::Request) {
    let method = req.method().as_str().to_ascii_uppercase();
    let url = req.url().split('?').next().unwrap_or_default().to_string();
    let mut body = String::new();
    let read = req
        .as_reader()
        .take(MAX_BODY)
        .read_to_string(&mut body)
        .map_err(|e| HttpError::bad(format!("reading the request body: {e}")));
    // A panic answers 500 and leaves the worker alive.
    let answer = read.and_then(|_| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            route(state, &method, &url, &body)
        }))
        .unwrap_or_else(|_| {
            Err(HttpError {
                code: 500,
                message: "the request panicked (see the server's log)".into(),
            })
        })
    });
    let (code, value) = match answer {
        Ok(v) => (200, v),
        Err(e) => {
            tracing::info!("serve: {method} {url}: {} {}", e.code, e.message);
            (e.code, e.body())
        }
    };
    let text = match &value {
        // The LoRA routes answer with a sentence, as vLLM's do.
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let ctype = if value.is_string() {
        &b"text/plain; charset=utf-8"[..]
    } else {
        &b"application/json"[..]
    };
    let mut resp = tiny_http::Response::from_string(text).with_status_code(code);
    if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype) {
        resp = resp.with_header(h);
    }
    if let Err(e) = req.respond(resp) {
        tracing::warn!("serve: answering {method} {url}: {e}");
    }
}

fn route(state: &State, method: &str, url: &str, body: &str) -> Answer {
    let parse = || -> std::result::Result<Map<String, Value>, HttpError> {
        match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(HttpError::bad("the request body must be a JSON object")),
            Err(e) => Err(HttpError::bad(format!("the request body is not JSON: {e}"))),
        }
    };
    match (method, url.trim_end_matches('/')) {
        ("GET", "/health") => Ok(json!({})),
        ("GET", "/v1/models") => Ok(models(state)),
        ("POST", "/v1/completions") => completions(state, &parse()?),
        ("POST", "/v1/chat/completions") => chat_completions(state, &parse()?),
        ("POST", "/v1/load_lora_adapter") => load_lora(state, &parse()?),
        ("POST", "/v1/unload_lora_adapter") => unload_lora(state, &parse()?),
        (_, u) => Err(HttpError::not_found(format!("no route {method} {u}"))),
    }
}

fn models(state: &State) -> Value {
    let mut data = vec![json!({
        "id": state.model_id, "object": "model", "created": state.started,
        "owned_by": "cahl-tui", "root": state.model_id, "parent": null,
    })];
    if let Ok(a) = state.agent.read() {
        for name in a.model.adapter_names() {
            data.push(json!({
                "id": name, "object": "model", "created": state.started,
                "owned_by": "cahl-tui", "root": name, "parent": state.model_id,
            }));
        }
    }
    json!({"object": "list", "data": data})
}

fn load_lora(state: &State, b: &Map<String, Value>) -> Answer {
    let name = str_field(b, "lora_name")?;
    let path = PathBuf::from(str_field(b, "lora_path")?);
    if name.is_empty() || name == state.model_id {
        return Err(HttpError::bad(format!("lora_name {name:?} is not usable")));
    }
    // Read the weights outside the lock; swap them in under it.
    let (cfg, dtype, device) = {
        let a = state.agent.read().map_err(poisoned)?;
        if a.model.adapter(name).is_ok() {
            return Err(HttpError::bad(format!(
                "The lora adapter '{name}' has already been loaded."
            )));
        }
        (
            a.model.config().clone(),
            a.model.dtype(),
            a.model.device().clone(),
        )
    };
    let adapter = LoraAdapter::load_peft(name, &path, &cfg, dtype, &device)
        .map_err(|e| HttpError::bad(format!("loading {}: {e}", path.display())))?;
    let mut agent = state.agent.write().map_err(poisoned)?;
    if agent.model.adapter(name).is_ok() {
        // Another request loaded the same name meanwhile.
        return Err(HttpError::bad(format!(
            "The lora adapter '{name}' has already been loaded."
        )));
    }
    agent.model.insert_adapter(adapter);
    drop(agent);
    tracing::info!("serve: loaded adapter {name} from {}", path.display());
    Ok(Value::String(format!(
        "Success: LoRA adapter '{name}' added successfully."
    )))
}

fn unload_lora(state: &State, b: &Map<String, Value>) -> Answer {
    let name = str_field(b, "lora_name")?;
    match state
        .agent
        .write()
        .map_err(poisoned)?
        .model
        .remove_adapter(name)
    {
        Some(_) => Ok(Value::String(format!(
            "Success: LoRA adapter '{name}' removed successfully."
        ))),
        None => Err(HttpError::not_found(format!(
            "The lora adapter '{name}' cannot be found."
        ))),
    }
}

fn poisoned<T>(_: T) -> HttpError {
    HttpError {
        code: 500,
        message: "the model lock is poisoned (a request panicked)".into(),
    }
}

fn str_field<'a>(b: &'a Map<String, Value>, key: &str) -> std::result::Result<&'a str, HttpError> {
    b.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| HttpError::bad(format!("`{key}` (a string) is required")))
}

/// The sampling settings of a request (completions and chat share the names).
fn sampling_params(
    b: &Map<String, Value>,
    default_max: usize,
    seq: u64,
) -> std::result::Result<(SamplingParams, usize, u64), HttpError> {
    let num = |k: &str, d: f64| -> std::result::Result<f64, HttpError> {
        match b.get(k) {
            None | Some(Value::Null) => Ok(d),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| HttpError::bad(format!("`{k}` must be a number"))),
        }
    };
    let temperature = num("temperature", 1.0)?;
    let top_p = num("top_p", 1.0)?;
    let top_k = num("top_k", -1.0)?;
    let max_tokens = num("max_tokens", default_max as f64)?;
    let n = num("n", 1.0)?;
    if !(0.0..=100.0).contains(&temperature) {
        return Err(HttpError::bad("`temperature` must be in [0, 100]"));
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(HttpError::bad("`top_p` must be in (0, 1]"));
    }
    if max_tokens < 1.0 || max_tokens.fract() != 0.0 {
        return Err(HttpError::bad("`max_tokens` must be a positive integer"));
    }
    if n < 1.0 || n.fract() != 0.0 || n as usize > MAX_N {
        return Err(HttpError::bad(format!(
            "`n` must be an integer in [1, {MAX_N}]"
        )));
    }
    let stop = match b.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<_>>()
            .ok_or_else(|| HttpError::bad("`stop` must be a string or a list of strings"))?,
        Some(_) => {
            return Err(HttpError::bad(
                "`stop` must be a string or a list of strings",
            ))
        }
    };
    let seed = match b.get("seed") {
        None | Some(Value::Null) => crate::train::mix_seed(&[seq, 0x5e7e]),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_i64().map(|x| x as u64))
            .ok_or_else(|| HttpError::bad("`seed` must be an integer"))?,
    };
    let stream = match b.get("cahl_stream") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .filter(|s| s.checked_add(n as u64).is_some())
            .ok_or_else(|| HttpError::bad("`cahl_stream` must be an integer below 2^64 - n"))?,
    };
    Ok((
        SamplingParams {
            temperature,
            top_p,
            top_k: if top_k <= 0.0 { 0 } else { top_k as usize },
            max_tokens: max_tokens as usize,
            stop,
            greedy: temperature == 0.0,
            seed,
        },
        n as usize,
        stream,
    ))
}

/// The adapter a request's `model` names (`None`: the base model).
fn adapter_of<'a>(
    state: &State,
    agent: &Agent,
    b: &'a Map<String, Value>,
) -> std::result::Result<Option<&'a str>, HttpError> {
    let name = b.get("model").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() || name == state.model_id {
        return Ok(None);
    }
    if agent.model.adapter(name).is_ok() {
        return Ok(Some(name));
    }
    let mut known = vec![state.model_id.clone()];
    known.extend(agent.model.adapter_names());
    Err(HttpError::not_found(format!(
        "The model `{name}` does not exist (served: {}).",
        known.join(", ")
    )))
}

/// The stop string a completion ended on (for `stop_reason`), if any.
fn stop_hit<'a>(c: &Completion, p: &'a SamplingParams) -> Option<&'a str> {
    if c.finish != FinishReason::Stop {
        return None;
    }
    // The longest stop string the text ends with (one may end another: "n>" and "</plan>").
    p.stop
        .iter()
        .filter(|s| !s.is_empty() && c.text.ends_with(s.as_str()))
        .max_by_key(|s| s.len())
        .map(String::as_str)
}

/// A completion's text as answered (without the stop string that ended it, unless
/// `include_stop`), and that stop string.
fn visible_text<'a>(
    c: &Completion,
    p: &'a SamplingParams,
    include_stop: bool,
) -> (String, Option<&'a str>) {
    let hit = stop_hit(c, p);
    let mut text = c.text.clone();
    if let (Some(s), false) = (hit, include_stop) {
        // `stop_hit` found `s` at the end of the text: the cut is on a char boundary.
        text.truncate(text.len() - s.len());
    }
    (text, hit)
}

/// A boolean field of a request (absent: false).
fn flag(b: &Map<String, Value>, key: &str) -> bool {
    b.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn finish_name(c: &Completion) -> &'static str {
    match c.finish {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

/// vLLM's `return_token_ids`: the choice's and the prompt's token ids.
fn with_ids(choice: &mut Value, c: &Completion, prompt: &[u32]) {
    choice["token_ids"] = json!(c.tokens);
    choice["prompt_token_ids"] = json!(prompt);
}

/// The answer around `choices`: id (`<prefix>-<seq>`), object, model, usage.
fn answer(
    state: &State,
    b: &Map<String, Value>,
    (prefix, object): (&str, &str),
    seq: u64,
    choices: Vec<Value>,
    prompt: &[u32],
    comps: &[Completion],
) -> Value {
    json!({
        "id": format!("{prefix}-{seq}"), "object": object, "created": now(),
        "model": b.get("model").cloned().unwrap_or(Value::String(state.model_id.clone())),
        "choices": choices, "usage": usage(prompt.len(), comps),
    })
}

fn usage(prompt: usize, comps: &[Completion]) -> Value {
    let done: usize = comps.iter().map(|c| c.tokens.len()).sum();
    json!({"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done})
}

fn completions(state: &State, b: &Map<String, Value>) -> Answer {
    let seq = state.requests.fetch_add(1, Ordering::Relaxed);
    if b.get("echo").and_then(Value::as_bool) == Some(true) {
        return Err(HttpError::bad("`echo` is not supported"));
    }
    let (params, n, stream) = sampling_params(b, 16, seq)?;
    let agent = state.agent.read().map_err(poisoned)?;
    let adapter = adapter_of(state, &agent, b)?;
    let prompt: Vec<u32> = match b.get("prompt") {
        Some(Value::String(s)) => agent.tok.encode(s, true)?,
        Some(Value::Array(a)) if a.iter().all(Value::is_u64) => a
            .iter()
            .map(|v| u32::try_from(v.as_u64().unwrap_or_default()).unwrap_or(u32::MAX))
            .collect(),
        Some(Value::Array(_)) => {
            return Err(HttpError::bad(
                "`prompt` must be one text or one list of token ids (one prompt per request)",
            ))
        }
        _ => return Err(HttpError::bad("`prompt` is required")),
    };
    let vocab = agent.model.config().vocab_size;
    if let Some(bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(HttpError::bad(format!(
            "prompt token id {bad} is outside the vocabulary ({vocab})"
        )));
    }
    check_length(&agent, prompt.len(), &params)?;
    let comps = sample_group(
        &agent.model,
        adapter,
        &prompt,
        n,
        stream,
        &params,
        &agent.tok,
    )?;
    let include_stop = flag(b, "include_stop_str_in_output");
    let want_lp = b.get("logprobs").is_some_and(|v| !v.is_null());
    let want_ids = flag(b, "return_token_ids");
    let choices: Vec<Value> = comps
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (text, hit) = visible_text(c, &params, include_stop);
            let mut ch = json!({
                "index": i, "text": text, "finish_reason": finish_name(c), "stop_reason": hit,
                "logprobs": null,
            });
            if want_lp {
                let pieces: Vec<String> = c
                    .tokens
                    .iter()
                    .map(|&t| agent.tok.decode(&[t], false).unwrap_or_default())
                    .collect();
                let mut offset = 0usize;
                let offsets: Vec<usize> = pieces
                    .iter()
                    .map(|p| {
                        let o = offset;
                        offset += p.len();
                        o
                    })
                    .collect();
                ch["logprobs"] = json!({
                    "tokens": pieces, "token_logprobs": c.logprobs,
                    "top_logprobs": null, "text_offset": offsets,
                });
            }
            if want_ids {
                with_ids(&mut ch, c, &prompt);
            }
            ch
        })
        .collect();
    Ok(answer(
        state,
        b,
        ("cmpl", "text_completion"),
        seq,
        choices,
        &prompt,
        &comps,
    ))
}

/// The prompt and `max_tokens` must fit the model's context (as vLLM checks).
fn check_length(
    agent: &Agent,
    prompt: usize,
    p: &SamplingParams,
) -> std::result::Result<(), HttpError> {
    let ctx = agent.model.config().max_position_embeddings;
    let want = prompt.saturating_add(p.max_tokens);
    if want > ctx {
        return Err(HttpError::bad(format!(
            "This model's maximum context length is {ctx} tokens. However, you requested {want} tokens ({prompt} in the prompt, {} in the completion).",
            p.max_tokens
        )));
    }
    Ok(())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A chat message of a request as the chat template sees it (text content; content parts of
/// type `text` are joined).
fn message_of(v: &Value, i: usize) -> std::result::Result<Message, HttpError> {
    let obj = v
        .as_object()
        .ok_or_else(|| HttpError::bad(format!("messages[{i}] is not an object")))?;
    let role = obj
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| HttpError::bad(format!("messages[{i}] has no role")))?;
    let content = match obj.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => p
                    .get("text")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| {
                        HttpError::bad(format!("messages[{i}]: a text part has no text"))
                    }),
                other => Err(HttpError::bad(format!(
                    "messages[{i}]: content parts of type {other:?} are not supported (text only)"
                ))),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?
            .join(""),
        Some(_) => {
            return Err(HttpError::bad(format!(
                "messages[{i}].content must be text"
            )))
        }
    };
    let mut m = Message::new(role, content);
    for (k, val) in obj {
        if k != "role" && k != "content" {
            m = m.with(k, val.clone());
        }
    }
    Ok(m)
}

/// The assistant message of a chat answer: text before the first `<tool_call>` as content,
/// the parsed calls as `tool_calls`.
fn assistant_message(text: &str, seq: u64, row: usize) -> (Value, bool) {
    let out = parse_executor(text);
    let calls = out.calls();
    if calls.is_empty() {
        return (json!({"role": "assistant", "content": text}), false);
    }
    let before = text.split("<tool_call>").next().unwrap_or_default().trim();
    let tool_calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(k, c)| {
            json!({
                "id": format!("call-{seq}-{row}-{k}"), "type": "function",
                "function": {"name": c.name, "arguments": Value::Object(c.arguments.clone()).to_string()},
            })
        })
        .collect();
    let content = if before.is_empty() {
        Value::Null
    } else {
        Value::String(before.to_string())
    };
    (
        json!({"role": "assistant", "content": content, "tool_calls": tool_calls}),
        true,
    )
}

fn chat_completions(state: &State, b: &Map<String, Value>) -> Answer {
    let seq = state.requests.fetch_add(1, Ordering::Relaxed);
    let (params, n, stream) = sampling_params(b, 256, seq)?;
    let messages = b
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| HttpError::bad("`messages` (a list) is required"))?
        .iter()
        .enumerate()
        .map(|(i, m)| message_of(m, i))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if messages.is_empty() {
        return Err(HttpError::bad("`messages` is empty"));
    }
    let tools: Option<Vec<Value>> = match b.get("tools") {
        None | Some(Value::Null) => None,
        Some(Value::Array(t)) if !t.is_empty() => Some(t.clone()),
        Some(Value::Array(_)) => None,
        Some(_) => return Err(HttpError::bad("`tools` must be a list")),
    };
    let agent = state.agent.read().map_err(poisoned)?;
    let adapter = adapter_of(state, &agent, b)?;
    let text = agent.template.render(&messages, tools.as_deref(), true)?;
    let prompt = agent.tok.encode(&text, false)?;
    check_length(&agent, prompt.len(), &params)?;
    let comps = sample_group(
        &agent.model,
        adapter,
        &prompt,
        n,
        stream,
        &params,
        &agent.tok,
    )?;
    let want_lp = b.get("logprobs").and_then(Value::as_bool) == Some(true);
    let include_stop = flag(b, "include_stop_str_in_output");
    let want_ids = flag(b, "return_token_ids");
    let choices: Vec<Value> = comps
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (text, hit) = visible_text(c, &params, include_stop);
            // Tool calls are parsed out only for a request that offers tools (as vLLM's tool
            // parsers); otherwise the raw text is the content.
            let (message, called) = if tools.is_some() {
                assistant_message(&text, seq, i)
            } else {
                (json!({"role": "assistant", "content": text}), false)
            };
            let finish = if called { "tool_calls" } else { finish_name(c) };
            let mut ch = json!({
                "index": i, "message": message, "finish_reason": finish,
                "stop_reason": hit, "logprobs": null,
            });
            if want_lp {
                let content: Vec<Value> = c
                    .tokens
                    .iter()
                    .zip(&c.logprobs)
                    .map(|(&t, &lp)| {
                        let piece = agent.tok.decode(&[t], false).unwrap_or_default();
                        json!({"token": piece, "logprob": lp, "bytes": piece.as_bytes(), "top_logprobs": []})
                    })
                    .collect();
                ch["logprobs"] = json!({"content": content});
            }
            if want_ids {
                with_ids(&mut ch, c, &prompt);
            }
            ch
        })
        .collect();
    Ok(answer(
        state,
        b,
        ("chatcmpl", "chat.completion"),
        seq,
        choices,
        &prompt,
        &comps,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::ModelSection;

    fn state() -> State {
        State {
            agent: RwLock::new(Agent::load(&ModelSection::cpu_f32("embedded")).unwrap()),
            model_id: "embedded".into(),
            requests: AtomicU64::new(0),
            started: 0,
        }
    }

    fn post(s: &State, url: &str, body: Value) -> Answer {
        route(s, "POST", url, &body.to_string())
    }

    #[test]
    fn tool_call_blocks_become_openai_tool_calls() {
        let text = "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
        let (m, called) = assistant_message(text, 3, 1);
        assert!(called);
        assert_eq!(m["content"], "Let me look.");
        let call = &m["tool_calls"][0];
        assert_eq!(call["id"], "call-3-1-0");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris"}));
        let (m, called) = assistant_message("It is sunny.", 0, 0);
        assert!(!called);
        assert_eq!(m["content"], "It is sunny.");
        assert!(m.get("tool_calls").is_none());
    }

    #[test]
    fn sampling_settings_are_read_and_checked() {
        let b = |v: Value| v.as_object().unwrap().clone();
        let (p, n, stream) = sampling_params(
            &b(json!({"temperature": 0, "n": 3, "stop": "</x>", "seed": 9, "cahl_stream": 4})),
            16,
            0,
        )
        .map_err(|e| e.message)
        .unwrap();
        assert!(p.greedy);
        assert_eq!((n, stream, p.seed, p.max_tokens), (3, 4, 9, 16));
        assert_eq!(p.stop, ["</x>"]);
        for bad in [
            json!({"n": 0}),
            json!({"n": 1.5}),
            json!({"top_p": 0}),
            json!({"max_tokens": -1}),
            json!({"temperature": "hot"}),
            json!({"stop": [1]}),
        ] {
            let e = sampling_params(&b(bad.clone()), 16, 0).err().unwrap();
            assert_eq!(e.code, 400, "{bad}");
        }
    }

    #[test]
    fn completions_replay_with_their_seed_and_stream_and_give_ids_and_logprobs() {
        let s = state();
        let req = json!({"prompt": "Book a table", "max_tokens": 6, "n": 2, "seed": 5,
            "cahl_stream": 1, "logprobs": 0, "return_token_ids": true});
        let a = post(&s, "/v1/completions", req.clone())
            .map_err(|e| e.message)
            .unwrap();
        let b = post(&s, "/v1/completions", req)
            .map_err(|e| e.message)
            .unwrap();
        assert_eq!(a["choices"], b["choices"]);
        let c = &a["choices"][1];
        let ids = c["token_ids"].as_array().unwrap();
        assert_eq!(
            ids.len(),
            c["logprobs"]["token_logprobs"].as_array().unwrap().len()
        );
        // Row 1 of stream 1 is row 0 of stream 2.
        let shifted = post(
            &s,
            "/v1/completions",
            json!({"prompt": "Book a table", "max_tokens": 6, "seed": 5, "cahl_stream": 2,
                "return_token_ids": true}),
        )
        .map_err(|e| e.message)
        .unwrap();
        assert_eq!(shifted["choices"][0]["token_ids"], c["token_ids"]);
        assert_eq!(
            a["usage"]["completion_tokens"],
            json!(ids.len() + a["choices"][0]["token_ids"].as_array().unwrap().len())
        );
    }

    #[test]
    fn chat_completions_render_the_template_with_tools() {
        let s = state();
        // The embedded model's own template has no tool block; the ChatML fallback's has.
        s.agent.write().unwrap().template =
            crate::chat::ChatTemplate::chatml_fallback(None, Some("<|im_end|>")).unwrap();
        let tools = json!([{"type": "function", "function": {"name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
        let a = post(
            &s,
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}],
                "tools": tools, "max_tokens": 12, "n": 2, "seed": 1, "logprobs": true,
                "return_token_ids": true}),
        )
        .map_err(|e| e.message)
        .unwrap();
        assert_eq!(a["object"], "chat.completion");
        for c in a["choices"].as_array().unwrap() {
            assert_eq!(c["message"]["role"], "assistant");
            assert_eq!(
                c["logprobs"]["content"].as_array().unwrap().len(),
                c["token_ids"].as_array().unwrap().len()
            );
        }
        // The prompt holds the tool list as the template renders it.
        let prompt: Vec<u32> = a["choices"][0]["prompt_token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let text = s.agent.read().unwrap().tok.decode(&prompt, false).unwrap();
        assert!(text.contains("get_weather"), "{text}");
    }

    #[test]
    fn bad_requests_get_vllm_style_errors() {
        let s = state();
        let cases = [
            ("POST", "/v1/completions", "{not json", 400, "not JSON"),
            ("POST", "/v1/completions", "{}", 400, "`prompt` is required"),
            (
                "POST",
                "/v1/completions",
                r#"{"prompt": [[1], [2]]}"#,
                400,
                "one prompt per request",
            ),
            (
                "POST",
                "/v1/completions",
                r#"{"prompt": [99999999]}"#,
                400,
                "outside the vocabulary",
            ),
            (
                "POST",
                "/v1/completions",
                r#"{"prompt": "x", "model": "planner@3"}"#,
                404,
                "does not exist (served: embedded)",
            ),
            (
                "POST",
                "/v1/completions",
                r#"{"prompt": "x", "echo": true}"#,
                400,
                "echo",
            ),
            (
                "POST",
                "/v1/chat/completions",
                r#"{"messages": []}"#,
                400,
                "empty",
            ),
            (
                "POST",
                "/v1/chat/completions",
                r#"{"messages": [{"content": "x"}]}"#,
                400,
                "no role",
            ),
            (
                "POST",
                "/v1/load_lora_adapter",
                r#"{"lora_name": "p"}"#,
                400,
                "lora_path",
            ),
            (
                "POST",
                "/v1/load_lora_adapter",
                r#"{"lora_name": "p", "lora_path": "/nonexistent"}"#,
                400,
                "/nonexistent",
            ),
            (
                "POST",
                "/v1/unload_lora_adapter",
                r#"{"lora_name": "p"}"#,
                404,
                "cannot be found",
            ),
            ("GET", "/v1/nothing", "", 404, "no route"),
            (
                "POST",
                "/v1/completions",
                r#"{"prompt": "x", "max_tokens": 100000000}"#,
                400,
                "maximum context length",
            ),
            (
                "POST",
                "/v1/completions",
                r#"{"prompt": [4294967301]}"#,
                400,
                "outside the vocabulary",
            ),
            (
                "POST",
                "/v1/completions",
                r#"{"prompt": "x", "n": 2, "cahl_stream": 18446744073709551615}"#,
                400,
                "cahl_stream",
            ),
        ];
        for (m, u, body, code, says) in cases {
            let e = route(&s, m, u, body)
                .err()
                .unwrap_or_else(|| panic!("{u} {body} passed"));
            assert_eq!(e.code, code, "{u} {body}: {}", e.message);
            assert!(e.message.contains(says), "{u} {body}: {}", e.message);
            assert_eq!(e.body()["object"], "error");
        }
    }

    #[test]
    fn adapters_load_list_and_unload() {
        let s = state();
        let dir = tempfile::tempdir().unwrap();
        {
            let mut a = s.agent.write().unwrap();
            a.model
                .add_adapter("tmp", &crate::model::LoraConfig::default(), 3)
                .unwrap();
            a.model
                .adapter("tmp")
                .unwrap()
                .save_peft(dir.path(), "embedded")
                .unwrap();
            a.model.remove_adapter("tmp");
        }
        let path = dir.path().display().to_string();
        let ok = post(
            &s,
            "/v1/load_lora_adapter",
            json!({"lora_name": "planner@1", "lora_path": path}),
        )
        .map_err(|e| e.message)
        .unwrap();
        assert!(ok.as_str().unwrap().starts_with("Success"));
        let again = post(
            &s,
            "/v1/load_lora_adapter",
            json!({"lora_name": "planner@1", "lora_path": path}),
        );
        assert!(again.err().unwrap().message.contains("already been loaded"));
        let m = models(&s);
        assert_eq!(m["data"][1]["id"], "planner@1");
        assert_eq!(m["data"][1]["parent"], "embedded");
        post(
            &s,
            "/v1/completions",
            json!({"model": "planner@1", "prompt": "x", "max_tokens": 2}),
        )
        .map_err(|e| e.message)
        .unwrap();
        post(
            &s,
            "/v1/unload_lora_adapter",
            json!({"lora_name": "planner@1"}),
        )
        .map_err(|e| e.message)
        .unwrap();
        assert_eq!(models(&s)["data"].as_array().unwrap().len(), 1);
    }
}
