//! Wave batching: the rollouts of a step (or the items of an evaluation) decode together.
//!
//! A rollout is sequential code: plan, then each sub-task's executor step, each waiting for
//! the one before. Rather than turn that code inside out, every task (and, inside a task, every
//! execution of a plan) runs on its own thread as a *participant*, and [`Agent::sample`] from a
//! participant hands its request to the wave instead of decoding it. One *driver* thread (the
//! caller of [`run`]) waits until every live participant is waiting on a request, then decodes
//! all of them as one batch ([`crate::sampling::sample_many`]: all planner prompts of a step in the first wave,
//! then, wave by wave, the executor prompts of all plans of all tasks) and hands each its
//! completions. Rows stop independently; each prompt's shared system prefix comes from its
//! cache.
//!
//! Which requests make up a wave does not depend on thread timing (a wave starts only when all
//! live participants wait), and a wave's requests are ordered by the participants' keys (task,
//! then plan and execution), so a run replays exactly. Batched products round differently
//! from one group at a time, so a batched run is not bit-identical to an unbatched one.
//!
//! With a remote backend ([`crate::backend`]), a wave's requests go to the servers at once, one
//! connection each, instead of one after another.
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::agent::Agent;
use crate::backend::SampleRequest;
use crate::error::{EngineError, Result};
use crate::model::Prefix;
use crate::sampling::{sample_many_timed, BatchTiming, Completion, SamplingParams};

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
}

struct Shared {
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
    /// Where the local decodes' time went (zero with a remote backend).
    pub timing: BatchTiming,
    /// Batched decodes run.
    pub batches: usize,
    /// Requests (groups) answered.
    pub requests: usize,
    /// Rows (completions) decoded.
    pub rows: usize,
    /// The most rows in one batched decode.
    pub max_rows: usize,
}

thread_local! {
    static CTX: RefCell<Option<(Arc<Shared>, Key)>> = const { RefCell::new(None) };
}

/// Marks the current thread as a participant until dropped (also when unwinding).
struct Participant {
    shared: Arc<Shared>,
}

impl Participant {
    fn enter(shared: Arc<Shared>, key: Key) -> Participant {
        CTX.with(|c| *c.borrow_mut() = Some((shared.clone(), key)));
        Participant { shared }
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        CTX.with(|c| *c.borrow_mut() = None);
        let mut st = self.shared.lock();
        st.live -= 1;
        st.threads -= 1;
        drop(st);
        self.shared.cv.notify_all();
    }
}

/// While a participant waits for its children ([`map`]) it is not live; dropping this
/// makes it live again.
struct Suspended<'a> {
    shared: &'a Shared,
}

impl Drop for Suspended<'_> {
    fn drop(&mut self) {
        self.shared.lock().live += 1;
    }
}

fn spawn_participants<'s, 'e, T, R, F>(
    s: &'s std::thread::Scope<'s, 'e>,
    shared: &Arc<Shared>,
    parent: &[u32],
    items: Vec<T>,
    f: &'e F,
) -> Vec<std::thread::ScopedJoinHandle<'s, R>>
where
    T: Send + 'e,
    R: Send + 'e,
    F: Fn(T) -> R + Sync,
{
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let shared = shared.clone();
            let mut key = parent.to_vec();
            key.push(i as u32);
            let spawned = std::thread::Builder::new()
                .name(format!("wave-{key:?}"))
                .stack_size(crate::model::ops::COMPUTE_STACK_BYTES)
                .spawn_scoped(s, move || {
                    crate::model::ops::set_flush_denormals();
                    let _p = Participant::enter(shared, key);
                    f(item)
                });
            match spawned {
                Ok(h) => h,
                // Out of threads: nothing sensible is left to do.
                Err(e) => panic!("cannot start a rollout thread: {e}"),
            }
        })
        .collect()
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
        state: Mutex::new(State {
            live: n,
            threads: n,
            ..State::default()
        }),
        cv: Condvar::new(),
        max_rows: max_rows.max(1),
    });
    let out = std::thread::scope(|s| {
        let handles = spawn_participants(s, &shared, &[], items, &f);
        drive(agent, &shared);
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
    {
        let mut st = shared.lock();
        st.live += items.len();
        st.threads += items.len();
        st.live -= 1;
    }
    let _back = Suspended { shared: &shared };
    std::thread::scope(|s| {
        let handles = spawn_participants(s, &shared, &key, items, &f);
        join_all(handles)
    })
}

/// Whether this thread is a participant of a wave.
pub fn in_wave() -> bool {
    CTX.with(|c| c.borrow().is_some())
}

/// [`Agent::sample`] on a participant thread: queue the request for the next wave and wait
/// for its answer. `None` off participant threads.
pub(crate) fn sample_in_wave(req: &SampleRequest<'_>) -> Option<Result<Vec<Completion>>> {
    let (shared, key) = CTX.with(|c| c.borrow().clone())?;
    let mut st = shared.lock();
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
        st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
    }
}

/// The driver: whenever every live participant waits on a request, decode them all.
fn drive(agent: &Agent, shared: &Shared) {
    let mut st = shared.lock();
    loop {
        if st.threads == 0 {
            return;
        }
        if !st.pending.is_empty() && st.pending.len() >= st.live {
            let mut wave = std::mem::take(&mut st.pending);
            drop(st);
            wave.sort_by(|a, b| a.key.cmp(&b.key));
            let (answers, stats) = answer(agent, &wave, shared.max_rows);
            st = shared.lock();
            st.stats.batches += stats.batches;
            st.stats.requests += stats.requests;
            st.stats.rows += stats.rows;
            st.stats.max_rows = st.stats.max_rows.max(stats.max_rows);
            st.stats.timing.add(&stats.timing);
            for (p, a) in wave.into_iter().zip(answers) {
                st.answers.insert(p.key, a);
            }
            shared.cv.notify_all();
            continue;
        }
        st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
    }
}

/// Decode a wave: locally in batches of at most `max_rows` rows (requests kept whole), or on
/// the remote backend one connection per request, all at once.
fn answer(
    agent: &Agent,
    wave: &[Pending],
    max_rows: usize,
) -> (Vec<Result<Vec<Completion>>>, WaveStats) {
    let reqs: Vec<SampleRequest> = wave
        .iter()
        .map(|p| SampleRequest {
            adapter: p.adapter.as_deref(),
            prefix: p.prefix.as_ref(),
            prompt: &p.prompt,
            g: p.g,
            first_stream: p.first_stream,
            params: &p.params,
        })
        .collect();
    let mut stats = WaveStats {
        requests: reqs.len(),
        rows: reqs.iter().map(|r| r.g).sum(),
        ..WaveStats::default()
    };
    if let Some(remote) = &agent.remote {
        stats.batches = 1;
        stats.max_rows = stats.rows;
        let out = std::thread::scope(|s| {
            let handles: Vec<_> = reqs
                .iter()
                .map(|r| s.spawn(move || remote.sample(r)))
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
        });
        return (out, stats);
    }
    let mut out = Vec::with_capacity(reqs.len());
    let mut start = 0;
    while start < reqs.len() {
        let mut end = start;
        let mut rows = 0;
        while end < reqs.len() && (end == start || rows + reqs[end].g <= max_rows) {
            rows += reqs[end].g;
            end += 1;
        }
        stats.batches += 1;
        stats.max_rows = stats.max_rows.max(rows);
        match sample_many_timed(&agent.model, &reqs[start..end], &agent.tok) {
            Ok((done, t)) => {
                stats.timing.add(&t);
                out.extend(done.into_iter().map(Ok));
            }
            Err(e) => {
                let msg = format!("batched sampling of {} requests failed: {e}", end - start);
                out.extend((start..end).map(|_| Err(EngineError::Invalid(msg.clone()))));
            }
        }
        start = end;
    }
    (out, stats)
}
