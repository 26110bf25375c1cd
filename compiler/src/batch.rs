//! Batch builds: one independent job per object, spread over worker threads, results in input order.
//!
//! In: a slice of jobs (objects to build) and a thread count. Out: one result per job, in the order of the input,
//! whatever the thread count and whatever order the jobs finish in. Every stage of a build is a pure function of
//! its object and options (no build reads another's state; signatures are deterministic PKCS#1 v1.5 with no
//! signing time), so a batch's outputs are byte-identical to serial builds: `bpf2sys build` and
//! `cargo xtask build-driver` print and write in input order.
//!
//! Scheduling is a shared atomic cursor: a worker takes the next unstarted job when it finishes one, so a few large
//! objects do not leave the other cores idle, and the only shared write while jobs run is that counter (results
//! stay in each worker's own vector until the workers are joined). Work beyond one machine is sharded by CI (a
//! build-matrix job per shard of objects), not here.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The number of threads a batch uses when none is given: every core this process may run on.
pub fn default_threads() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// Runs `job` on every item with up to `threads` worker threads and returns the results in input order.
///
/// With one thread (or one item) the jobs run on the calling thread, in order. A panicking job propagates its
/// panic to the caller once the other workers have stopped.
pub fn map_in_order<T, R, F>(items: &[T], threads: NonZeroUsize, job: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let workers = threads.get().min(items.len());
    if workers <= 1 {
        return items.iter().map(&job).collect();
    }
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            done.push((i, job(item)));
        }
        done
    };
    let per_worker: Vec<Vec<(usize, R)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers).map(|_| scope.spawn(worker)).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|payload| std::panic::resume_unwind(payload))).collect()
    });
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    for (i, result) in per_worker.into_iter().flatten() {
        slots[i] = Some(result);
    }
    // Every index below `items.len()` was taken by exactly one worker, which pushed its result.
    slots.into_iter().map(|r| r.expect("every job ran")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn results_come_back_in_input_order_for_any_thread_count() {
        let items: Vec<u64> = (0..257).collect();
        // Uneven job lengths so workers finish out of order.
        let job = |&x: &u64| {
            let mut h = x;
            for _ in 0..(x % 7) * 1000 {
                h = h.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            }
            (x, h)
        };
        let serial = map_in_order(&items, threads(1), job);
        for n in [2, 3, 8, 300] {
            assert_eq!(map_in_order(&items, threads(n), job), serial, "{n} threads");
        }
        assert!(serial.iter().enumerate().all(|(i, (x, _))| *x == i as u64));
    }

    #[test]
    fn every_job_runs_exactly_once() {
        let runs = AtomicUsize::new(0);
        let items = vec![(); 100];
        let out = map_in_order(&items, threads(4), |_| runs.fetch_add(1, Ordering::Relaxed));
        assert_eq!(runs.load(Ordering::Relaxed), 100);
        let mut seen = out.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn an_empty_batch_has_no_results() {
        assert!(map_in_order(&[] as &[u8], threads(4), |&b| b).is_empty());
    }

    #[test]
    #[should_panic(expected = "job 5 failed")]
    fn a_panicking_job_reaches_the_caller() {
        let items: Vec<u32> = (0..10).collect();
        map_in_order(&items, threads(3), |&i| assert!(i != 5, "job {i} failed"));
    }
}
