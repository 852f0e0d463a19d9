//! Coarse-grained parallelism for small models.
//!
//! A tensor op of a model with a few million parameters takes microseconds; splitting it
//! across threads costs more in hand-offs than it saves (measured on the embedded model: a
//! training step on one thread is faster than on two). Such models are better served by
//! running independent work side by side: the tasks of a step, the micro-batches of an update,
//! the tasks of an evaluation. [`Lanes`] runs items on `n` single-threaded rayon pools, so
//! every kernel inside a lane runs inline on that lane's thread. Results come back in item
//! order, so callers that combine them in that order get the same numbers for any `n`.
//!
//! Large models use one lane: each op then uses all cores (rayon's global pool).
use crate::error::{EngineError, Result};

thread_local! {
    /// Set on the threads of lanes: a `map` from inside a lane runs inline (its one thread is
    /// busy with the caller).
    static ON_LANE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Models up to this many parameters get one lane per core by default.
pub const SMALL_MODEL_PARAMS: usize = 50_000_000;

/// Make candle's own matmuls single-threaded (it reads `RAYON_NUM_THREADS` on every matmul to
/// choose gemm's parallelism). With lanes, every lane is one thread already, and gemm splitting
/// each small product for threads it does not have costs about a fifth of a training step.
/// Process-wide: the binary calls it once it runs more than one lane; a library user decides
/// for themselves. The pool sizes built at start-up are not affected.
pub fn single_threaded_candle_matmuls() {
    std::env::set_var("RAYON_NUM_THREADS", "1");
}

/// `n` single-threaded workers (or none, for `n == 1`: items run on the calling thread).
pub struct Lanes {
    pools: Vec<rayon::ThreadPool>,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lanes({})", self.len())
    }
}

impl Lanes {
    /// `n` lanes (`0` is taken as 1).
    pub fn new(n: usize) -> Result<Self> {
        let n = n.max(1);
        if n == 1 {
            return Ok(Lanes { pools: Vec::new() });
        }
        let pools = (0..n)
            .map(|i| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(move |_| format!("lane-{i}"))
                    .stack_size(crate::model::ops::COMPUTE_STACK_BYTES)
                    .start_handler(|_| {
                        crate::model::ops::set_flush_denormals();
                        ON_LANE.with(|f| f.set(true));
                    })
                    .build()
                    .map_err(|source| EngineError::Lane { lane: i, source })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Lanes { pools })
    }

    /// The default lane count for a model of `params` parameters: one per core (at most 8)
    /// for small models, else 1.
    pub fn auto_count(params: usize) -> usize {
        if params > SMALL_MODEL_PARAMS {
            return 1;
        }
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8)
    }

    pub fn len(&self) -> usize {
        self.pools.len().max(1)
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Apply `f` to every item, item `i` on lane `i % n`; results in item order.
    pub fn map<T, R, F>(&self, items: Vec<T>, f: F) -> Vec<R>
    where
        T: Send,
        R: Send,
        F: Fn(T) -> R + Sync,
    {
        let n = self.pools.len();
        if n <= 1 || items.len() <= 1 || ON_LANE.with(|f| f.get()) {
            return items.into_iter().map(f).collect();
        }
        let total = items.len();
        let mut per_lane: Vec<Vec<(usize, T)>> = (0..n).map(|_| Vec::new()).collect();
        for (i, t) in items.into_iter().enumerate() {
            per_lane[i % n].push((i, t));
        }
        let f = &f;
        let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
            let handles: Vec<_> = per_lane
                .into_iter()
                .zip(&self.pools)
                .filter(|(work, _)| !work.is_empty())
                .map(|(work, pool)| {
                    s.spawn(move || {
                        pool.install(move || {
                            work.into_iter().map(|(i, t)| (i, f(t))).collect::<Vec<_>>()
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| match h.join() {
                    Ok(v) => v,
                    Err(p) => std::panic::resume_unwind(p),
                })
                .collect()
        });
        debug_assert_eq!(done.len(), total);
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_item_order_on_any_lane_count() {
        for n in [1, 2, 3] {
            let lanes = Lanes::new(n).unwrap();
            let out = lanes.map((0..10).collect(), |i: u64| {
                (i * i, rayon::current_num_threads())
            });
            let squares: Vec<u64> = out.iter().map(|(s, _)| *s).collect();
            assert_eq!(squares, (0..10).map(|i| i * i).collect::<Vec<_>>());
            if n > 1 {
                // Each lane is a one-thread pool: kernels inside run inline.
                assert!(out.iter().all(|(_, t)| *t == 1));
            }
        }
    }

    #[test]
    fn map_from_inside_a_lane_runs_inline() {
        let lanes = Lanes::new(2).unwrap();
        let out = lanes.map(vec![1, 2], |x: i32| lanes.map(vec![x, x + 10], |y| y * 2));
        assert_eq!(out, vec![vec![2, 22], vec![4, 24]]);
    }

    #[test]
    fn lanes_run_side_by_side() {
        // Each item waits for the other's message: run one after the other, the first would
        // time out instead of receiving it.
        use std::sync::mpsc::channel;
        use std::time::Duration;
        let lanes = Lanes::new(2).unwrap();
        // Item i receives on rx_i and sends to the other item's channel.
        let (tx0, rx0) = channel::<i32>();
        let (tx1, rx1) = channel::<i32>();
        let links = [
            std::sync::Mutex::new((tx1, rx0)),
            std::sync::Mutex::new((tx0, rx1)),
        ];
        let out = lanes.map(vec![0usize, 1], |i| {
            let link = links[i].lock().unwrap();
            link.0.send(i as i32).unwrap();
            link.1.recv_timeout(Duration::from_secs(10)).ok()
        });
        assert_eq!(out, vec![Some(1), Some(0)]);
    }
}
