//! Steady-state timing per ../shared/docs/benchmarks.md "Measurement method": one core, one warm-up call,
//! 5 batches of N calls with N sized so a batch takes at least 30 ms, minimum batch time ÷ N. Every call's r0 is
//! compared with the first call's, and the first with the expected value: a wrong result is a failure, never a
//! time.

use std::time::{Duration, Instant};

/// How long one batch must take at least (method: "≥ 30 ms").
pub const MIN_BATCH: Duration = Duration::from_millis(30);

/// Batches per measurement (method: 5).
pub const BATCHES: usize = 5;

/// How thoroughly to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The method above.
    Full,
    /// CI: a couple of short batches; every result is still checked.
    Quick,
}

impl Mode {
    /// Batch count and minimum batch duration for this mode.
    pub fn plan(self) -> (usize, Duration) {
        match self {
            Mode::Full => (BATCHES, MIN_BATCH),
            Mode::Quick => (2, Duration::from_millis(2)),
        }
    }
}

/// One measured cell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// Minimum batch time ÷ calls per batch.
    pub ns_per_run: f64,
    /// Calls per batch.
    pub calls_per_batch: u64,
    /// The result every call returned.
    pub r0: u64,
}

/// Why a cell has no time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeasureError {
    #[error("wrong result: r0 = {actual:#018x}, expected {expected:#018x}")]
    WrongResult { actual: u64, expected: u64 },
    #[error("unstable result: call {call} returned {actual:#018x}, the first call {first:#018x}")]
    UnstableResult { call: u64, first: u64, actual: u64 },
    #[error("{0}")]
    Engine(String),
}

/// Times `run` (one call of the program, returning r0 or an engine error) per the method.
pub fn measure(
    mode: Mode,
    expected: u64,
    mut run: impl FnMut() -> Result<u64, String>,
) -> Result<Measurement, MeasureError> {
    let (batches, min_batch) = mode.plan();
    // Warm-up call, which is also the correctness check against the native value.
    let first = run().map_err(MeasureError::Engine)?;
    if first != expected {
        return Err(MeasureError::WrongResult { actual: first, expected });
    }
    let mut call: u64 = 1;
    let check = |r: Result<u64, String>, call: &mut u64| -> Result<(), MeasureError> {
        let r = r.map_err(MeasureError::Engine)?;
        *call += 1;
        if r != first {
            return Err(MeasureError::UnstableResult { call: *call, first, actual: r });
        }
        Ok(())
    };
    // Size N: double until a batch takes at least `min_batch`.
    let mut n: u64 = 1;
    loop {
        let start = Instant::now();
        for _ in 0..n {
            check(run(), &mut call)?;
        }
        let elapsed = start.elapsed();
        if elapsed >= min_batch {
            // Scale to the target with a little headroom so the timed batches are not shorter than it.
            let per_call = elapsed.as_secs_f64() / n as f64;
            n = ((min_batch.as_secs_f64() * 1.1) / per_call).ceil().max(1.0) as u64;
            break;
        }
        n *= 2;
    }
    let mut best = Duration::MAX;
    for _ in 0..batches {
        let start = Instant::now();
        for _ in 0..n {
            check(run(), &mut call)?;
        }
        best = best.min(start.elapsed());
    }
    Ok(Measurement { ns_per_run: best.as_nanos() as f64 / n as f64, calls_per_batch: n, r0: first })
}

/// Pins the calling thread (and every process it starts later) to one CPU, per the method's `taskset -c 1`: the
/// last online CPU, so CPU 0 keeps the machine's interrupts and housekeeping. Returns the CPU chosen.
pub fn pin_to_one_core() -> std::io::Result<usize> {
    // SAFETY: sysconf has no preconditions; the cpu_set_t is zero-initialised and only touched through the
    // libc macros, and sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes from it.
    unsafe {
        let online = libc::sysconf(libc::_SC_NPROCESSORS_ONLN);
        let cpu = if online > 1 { online as usize - 1 } else { 0 };
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(cpu)
    }
}

/// Pins this process (and the threads and children it starts later) to the first `count` online CPUs, at least
/// one; returns how many it may run on.
pub fn pin_to_cpus(count: usize) -> std::io::Result<usize> {
    // SAFETY: as in `pin_to_one_core`.
    unsafe {
        let online = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
        let n = count.clamp(1, online.min(libc::CPU_SETSIZE as usize));
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..n {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n)
    }
}

/// Online CPUs of the machine (not of this process's affinity mask).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize }
}

/// Peak resident set size of this process so far, in KiB (`getrusage` `ru_maxrss`).
pub fn peak_rss_kib() -> u64 {
    // SAFETY: getrusage writes a complete rusage into the zeroed struct.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0;
        }
        usage.ru_maxrss as u64
    }
}

/// Geometric mean of positive ratios; `None` for an empty list.
pub fn geometric_mean(ratios: &[f64]) -> Option<f64> {
    if ratios.is_empty() {
        return None;
    }
    Some((ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_reports_a_wrong_first_result() {
        let err = measure(Mode::Quick, 7, || Ok(8)).unwrap_err();
        assert_eq!(err, MeasureError::WrongResult { actual: 8, expected: 7 });
    }

    #[test]
    fn measure_reports_a_result_that_changes_between_calls() {
        let mut calls = 0u64;
        let err = measure(Mode::Quick, 1, || {
            calls += 1;
            Ok(if calls == 5 { 2 } else { 1 })
        })
        .unwrap_err();
        assert_eq!(err, MeasureError::UnstableResult { call: 5, first: 1, actual: 2 });
    }

    #[test]
    fn measure_times_a_correct_engine() {
        let m = measure(Mode::Quick, 3, || Ok(std::hint::black_box(3))).unwrap();
        assert_eq!(m.r0, 3);
        assert!(m.ns_per_run > 0.0 && m.calls_per_batch >= 1);
    }

    #[test]
    fn geometric_mean_of_ratios() {
        assert_eq!(geometric_mean(&[]), None);
        let g = geometric_mean(&[2.0, 8.0]).unwrap();
        assert!((g - 4.0).abs() < 1e-12);
    }
}
