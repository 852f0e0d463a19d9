//! Wave batching: the rollouts of a step (or the items of an evaluation) decode together.
//!
//! A rollout is sequential code: plan, then each sub-task's executor step, each waiting for
//! the one before. Rather than turn that code inside out, every task (and, inside a task, every
//! execution of a plan) runs on its own thread as a *participant*, and [`Agent::sample`] from a
//! participant hands its request to the wave instead of decoding it. One *driver* thread (the
//! caller of [`run`]) waits until every live participant is waiting (on a queued request or on
//! one being decoded), then admits the queued requests into the running batch
//! ([`crate::sampling::RowDecoder`], one per adapter, at most `max_rows` rows) and decodes one
//! step. A request goes back as soon as its rows have stopped, and its participant's next
//! request joins at a later step boundary: all planner prompts of a step start together, then
//! the executor prompts of all plans of all tasks flow through as they come (continuous
//! batching). Each prompt's shared system prefix comes from its cache.
//!
//! Steps happen only when every live participant waits, and queued requests are admitted in
//! the order of the participants' keys (task, then plan and execution), so which rows share
//! which step does not depend on thread timing and a run replays exactly. Batched products
//! round differently from one group at a time, so a batched run is not bit-identical to an
//! unbatched one.
//!
//! With a remote backend ([`crate::backend`]), the queued requests go to the servers at once,
//! one connection each, instead of one after another.
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::agent::Agent;
use crate::backend::SampleRequest;
use crate::error::{EngineError, Result};
use crate::model::Prefix;
use crate::sampling::{BatchTiming, Completion, RowDecoder, SamplingParams};

/// A participant's place: its item index, then its index in each nested [`map`].
type Key = Vec<u32>;

/// A waiting request, owned (its thread blocks until the answer is in).
struct Pending {
    key: Key,
    adapter: Option<String>,
    prefix: Option<Prefix>,
    prompt: Vec<u32>,
    g: usize,
    first_stream: u64,
    params: SamplingParams,
}

#[derive(Default)]
struct State {
    /// Participants that may still ask for a sample (not finished, not waiting on children).
    live: usize,
    /// Participant threads not yet finished.
    threads: usize,
    pending: Vec<Pending>,
    answers: HashMap<Key, Result<Vec<Completion>>>,
    stats: WaveStats,
    /// The driver is gone (it panicked, or the participants could not all start): requests
    /// fail at once instead of waiting forever.
    closed: bool,
}

struct Shared {
    /// The agent whose samples the wave decodes (its address: another agent's requests on a
    /// participant thread are not the wave's business).
    agent: usize,
    state: Mutex<State>,
    cv: Condvar,
    /// At most this many rows per batched decode.
    max_rows: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A participant that panicked holds no lock while running user code, so a poisoned
        // lock still holds consistent counts.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the waves of one [`run`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WaveStats {
    /// Requests (groups) answered.
    pub requests: usize,
    /// Rows (completions) decoded.
    pub rows: usize,
    /// Batched decode steps (remote: waves of requests sent together).
    pub steps: usize,
    /// Rows decoded summed over steps (the mean batch is `row_steps / steps`).
    pub row_steps: usize,
    /// The most rows in one decode step.
    pub max_rows: usize,
    /// Where the local decodes' time went (zero with a remote backend).
    pub timing: BatchTiming,
}

thread_local! {
    static CTX: RefCell<Option<(Arc<Shared>, Key)>> = const { RefCell::new(None) };
}

/// The children of one [`map`] still running; the last one to finish hands its liveness back
/// to the waiting parent in the same critical section, so no decode step can start in between
/// (the steps' composition stays independent of thread timing). Only changed under the wave's
/// lock.
struct Family {
    running: std::sync::atomic::AtomicUsize,
    handed_back: std::sync::atomic::AtomicBool,
}

/// Marks the current thread as a participant until dropped (also when unwinding).
struct Participant {
    shared: Arc<Shared>,
    family: Option<Arc<Family>>,
}

impl Drop for Participant {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        CTX.with(|c| *c.borrow_mut() = None);
        let mut st = self.shared.lock();
        st.threads -= 1;
        let last = self
            .family
            .as_ref()
            .is_some_and(|f| f.running.fetch_sub(1, SeqCst) == 1);
        if last {
            // The parent is live again from here: the liveness passes on unchanged.
            if let Some(f) = &self.family {
                f.handed_back.store(true, SeqCst);
            }
        } else {
            st.live -= 1;
        }
        drop(st);
        self.shared.cv.notify_all();
    }
}

/// While a participant waits for its children ([`map`]) it is not live. Its last child hands
/// the liveness back; when none does (a child could not start), dropping this restores it.
struct Suspended<'a> {
    shared: &'a Shared,
    family: Arc<Family>,
}

impl Drop for Suspended<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if !self
            .family
            .handed_back
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            st.live += 1;
        }
    }
}

/// Marks the wave closed when dropped: at the end of [`run`], or when the driver or the
/// spawning of participants unwinds, so no participant waits for an answer forever.
struct Closer<'a>(&'a Shared);

impl Drop for Closer<'_> {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.cv.notify_all();
    }
}

/// Start one participant per item (the counts already include them). A thread that cannot be
/// started is taken out of the counts before the panic, so the others can still finish.
fn spawn_participants<'s, 'e, T, R, F>(
    s: &'s std::thread::Scope<'s, 'e>,
    shared: &Arc<Shared>,
    parent: &[u32],
    family: Option<&Arc<Family>>,
    items: Vec<T>,
    f: &'e F,
) -> Vec<std::thread::ScopedJoinHandle<'s, R>>
where
    T: Send + 'e,
    R: Send + 'e,
    F: Fn(T) -> R + Sync,
{
    let n = items.len();
    let mut handles = Vec::with_capacity(n);
    for (i, item) in items.into_iter().enumerate() {
        let shared2 = shared.clone();
        let family2 = family.cloned();
        let mut key = parent.to_vec();
        key.push(i as u32);
        let spawned = std::thread::Builder::new()
            .name(format!("wave-{key:?}"))
            .stack_size(crate::model::ops::COMPUTE_STACK_BYTES)
            .spawn_scoped(s, move || {
                crate::model::ops::set_flush_denormals();
                CTX.with(|c| *c.borrow_mut() = Some((shared2.clone(), key)));
                let _p = Participant {
                    shared: shared2,
                    family: family2,
                };
                f(item)
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                let missing = n - i;
                let mut st = shared.lock();
                st.live -= missing;
                st.threads -= missing;
                if let Some(fam) = family {
                    fam.running
                        .fetch_sub(missing, std::sync::atomic::Ordering::SeqCst);
                }
                drop(st);
                shared.cv.notify_all();
                panic!("cannot start a rollout thread: {e}");
            }
        }
    }
    handles
}

fn join_all<R>(handles: Vec<std::thread::ScopedJoinHandle<'_, R>>) -> Vec<R> {
    let mut out = Vec::with_capacity(handles.len());
    let mut panicked = None;
    for h in handles {
        match h.join() {
            Ok(r) => out.push(r),
            Err(p) => panicked = panicked.or(Some(p)),
        }
    }
    if let Some(p) = panicked {
        std::panic::resume_unwind(p);
    }
    out
}

/// Apply `f` to every item, each on its own participant thread, decoding their samples in
/// waves on this thread with `agent`. Results in item order; also what the waves did.
pub fn run<T, R, F>(agent: &Agent, max_rows: usize, items: Vec<T>, f: F) -> (Vec<R>, WaveStats)
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let n = items.len();
    let shared = Arc::new(Shared {
        agent: agent as *const Agent as usize,
        state: Mutex::new(State {
            live: n,
            threads: n,
            ..State::default()
        }),
        cv: Condvar::new(),
        max_rows: max_rows.max(1),
    });
    let out = std::thread::scope(|s| {
        let closer = Closer(&shared);
        let handles = spawn_participants(s, &shared, &[], None, items, &f);
        drive(agent, &shared);
        drop(closer);
        join_all(handles)
    });
    let stats = shared.lock().stats;
    (out, stats)
}

/// Apply `f` to every item. On a participant thread (inside [`run`]) each item becomes a
/// participant of the same waves, on its own thread; elsewhere the items run one by one here.
/// Results in item order.
pub fn map<T, R, F>(items: Vec<T>, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let ctx = CTX.with(|c| c.borrow().clone());
    let Some((shared, key)) = ctx.filter(|_| items.len() > 1) else {
        return items.into_iter().map(f).collect();
    };
    let family = Arc::new(Family {
        running: std::sync::atomic::AtomicUsize::new(items.len()),
        handed_back: std::sync::atomic::AtomicBool::new(false),
    });
    {
        let mut st = shared.lock();
        st.live += items.len();
        st.threads += items.len();
        st.live -= 1;
    }
    let _back = Suspended {
        shared: &shared,
        family: family.clone(),
    };
    std::thread::scope(|s| {
        let handles = spawn_participants(s, &shared, &key, Some(&family), items, &f);
        join_all(handles)
    })
}

/// Whether this thread is a participant of a wave.
pub fn in_wave() -> bool {
    CTX.with(|c| c.borrow().is_some())
}

/// [`Agent::sample`] of `agent` on a participant thread of its wave: queue the request for the
/// next step and wait for its answer. `None` off participant threads (or for another agent).
pub(crate) fn sample_in_wave(
    agent: &Agent,
    req: &SampleRequest<'_>,
) -> Option<Result<Vec<Completion>>> {
    let (shared, key) = CTX.with(|c| c.borrow().clone())?;
    if shared.agent != agent as *const Agent as usize {
        return None;
    }
    let mut st = shared.lock();
    if st.closed {
        return Some(Err(EngineError::Invalid(
            "the batched sampler stopped (see the error before this one)".into(),
        )));
    }
    st.pending.push(Pending {
        key: key.clone(),
        adapter: req.adapter.map(String::from),
        prefix: req.prefix.map(Prefix::share),
        prompt: req.prompt.to_vec(),
        g: req.g,
        first_stream: req.first_stream,
        params: req.params.clone(),
    });
    shared.cv.notify_all();
    loop {
        if let Some(answer) = st.answers.remove(&key) {
            return Some(answer);
        }
        if st.closed {
            return Some(Err(EngineError::Invalid(
                "the batched sampler stopped (see the error before this one)".into(),
            )));
        }
        st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
    }
}

/// The driver. Locally: whenever every live participant waits (on a queued request or one
/// being decoded), admit the queued requests into the running batch (up to `max_rows` rows)
/// and decode one step; a request goes back as soon as its rows have stopped, and its
/// participant's next request joins the batch at the next step boundary (continuous batching,
/// at deterministic points). With a remote backend: send all queued requests at once.
fn drive(agent: &Agent, shared: &Shared) {
    if agent.remote.is_some() {
        return drive_remote(agent, shared);
    }
    // One decoder per adapter (a forward applies one adapter to all its rows).
    let mut decoders: Vec<RowDecoder> = Vec::new();
    // Requests being decoded: id -> (participant key, decoder index).
    let mut held: HashMap<u64, (Key, usize)> = HashMap::new();
    let mut next_id: u64 = 0;
    let mut stats = WaveStats::default();
    loop {
        let mut st = shared.lock();
        loop {
            if st.threads == 0 && held.is_empty() {
                for dec in &decoders {
                    stats.timing.add(&dec.timing);
                }
                st.stats = stats;
                return;
            }
            let waiting = st.pending.len() + held.len();
            if waiting > 0 && waiting >= st.live {
                break;
            }
            st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.pending.sort_by(|a, b| a.key.cmp(&b.key));
        let mut rows: usize = decoders.iter().map(|d| d.rows()).sum();
        let mut take = 0;
        for p in &st.pending {
            if rows > 0 && rows + p.g > shared.max_rows {
                break;
            }
            rows += p.g;
            take += 1;
        }
        let admitted: Vec<Pending> = st.pending.drain(..take).collect();
        drop(st);
        let mut answers: Vec<(Key, Result<Vec<Completion>>)> = Vec::new();
        // Admit, by adapter.
        let mut by_decoder: Vec<(usize, Vec<(u64, &Pending)>)> = Vec::new();
        for p in &admitted {
            let d = match decoders
                .iter()
                .position(|d| d.adapter() == p.adapter.as_deref())
            {
                Some(d) => d,
                None => {
                    decoders.push(RowDecoder::new(
                        &agent.model,
                        p.adapter.as_deref(),
                        &agent.tok,
                    ));
                    decoders.len() - 1
                }
            };
            let id = next_id;
            next_id += 1;
            held.insert(id, (p.key.clone(), d));
            match by_decoder.iter_mut().find(|(i, _)| *i == d) {
                Some((_, v)) => v.push((id, p)),
                None => by_decoder.push((d, vec![(id, p)])),
            }
            stats.requests += 1;
            stats.rows += p.g;
        }
        for (d, items) in by_decoder {
            let reqs: Vec<(u64, SampleRequest)> =
                items.iter().map(|(id, p)| (*id, p.request())).collect();
            let refs: Vec<(u64, &SampleRequest)> = reqs.iter().map(|(id, r)| (*id, r)).collect();
            match decoders[d].admit(&refs) {
                // Requests that could not be prefilled fail alone.
                Ok(failed) => {
                    for (id, e) in failed {
                        if let Some((key, _)) = held.remove(&id) {
                            answers.push((key, Err(e)));
                        }
                    }
                }
                Err(e) => fail_decoder(agent, &mut decoders, d, &mut held, &mut answers, &e),
            }
        }
        drop(admitted);
        // One step of every decoder with work.
        for d in 0..decoders.len() {
            if decoders[d].is_idle() {
                continue;
            }
            let active = decoders[d].rows();
            match decoders[d].step() {
                Ok(done) => {
                    if active > 0 {
                        stats.steps += 1;
                        stats.row_steps += active;
                        stats.max_rows = stats.max_rows.max(active);
                    }
                    for (id, comps) in done {
                        if let Some((key, _)) = held.remove(&id) {
                            answers.push((key, Ok(comps)));
                        }
                    }
                }
                Err(e) => fail_decoder(agent, &mut decoders, d, &mut held, &mut answers, &e),
            }
        }
        if !answers.is_empty() {
            let mut st = shared.lock();
            for (key, a) in answers {
                st.answers.insert(key, a);
            }
            drop(st);
            shared.cv.notify_all();
        }
    }
}

/// A decoder's step failed: every request in it fails with the error, and it starts afresh.
fn fail_decoder<'a>(
    agent: &'a Agent,
    decoders: &mut [RowDecoder<'a>],
    d: usize,
    held: &mut HashMap<u64, (Key, usize)>,
    answers: &mut Vec<(Key, Result<Vec<Completion>>)>,
    e: &EngineError,
) {
    let ids: Vec<u64> = held
        .iter()
        .filter(|(_, (_, i))| *i == d)
        .map(|(id, _)| *id)
        .collect();
    let msg = format!("batched sampling of {} requests failed: {e}", ids.len());
    for id in ids {
        if let Some((key, _)) = held.remove(&id) {
            answers.push((key, Err(EngineError::Invalid(msg.clone()))));
        }
    }
    let adapter = decoders[d].adapter().map(String::from);
    let timing = decoders[d].timing;
    decoders[d] = RowDecoder::new(&agent.model, adapter.as_deref(), &agent.tok);
    decoders[d].timing = timing;
}

/// The driver with a remote backend: whenever every live participant waits on a request, send
/// them all at once, one connection each.
fn drive_remote(agent: &Agent, shared: &Shared) {
    let mut st = shared.lock();
    loop {
        if st.threads == 0 {
            return;
        }
        if !st.pending.is_empty() && st.pending.len() >= st.live {
            let mut wave = std::mem::take(&mut st.pending);
            drop(st);
            wave.sort_by(|a, b| a.key.cmp(&b.key));
            let answers = answer_remote(agent, &wave);
            st = shared.lock();
            st.stats.steps += 1;
            st.stats.requests += wave.len();
            st.stats.rows += wave.iter().map(|p| p.g).sum::<usize>();
            for (p, a) in wave.into_iter().zip(answers) {
                st.answers.insert(p.key, a);
            }
            shared.cv.notify_all();
            continue;
        }
        st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
    }
}

impl Pending {
    fn request(&self) -> SampleRequest<'_> {
        SampleRequest {
            adapter: self.adapter.as_deref(),
            prefix: self.prefix.as_ref(),
            prompt: &self.prompt,
            g: self.g,
            first_stream: self.first_stream,
            params: &self.params,
        }
    }
}

/// A wave's requests on the remote backend, all at once, one connection each.
fn answer_remote(agent: &Agent, wave: &[Pending]) -> Vec<Result<Vec<Completion>>> {
    let Some(remote) = &agent.remote else {
        return Vec::new();
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = wave
            .iter()
            .map(|p| s.spawn(move || remote.sample(&p.request())))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(EngineError::Invalid(
                        "a request to the server panicked".into(),
                    ))
                })
            })
            .collect()
    })
}
