//! Batch-build throughput: objects per second for a batch of [`BATCH_OBJECTS`] objects, each built and signed in
//! memory (`Session::build` + `Session::sign`, as `cargo xtask build-driver` does, without the file writes)
//! through [`bpf2sys::batch::map_in_order`] with a given number of worker threads, plus a SHA-256 over every output
//! in input order, so a run on one thread and a run on every core can be shown to produce the same bytes.
//!
//! The batch is the sample objects (`samples/*.o`) in rotation: real programs of every program type, so the mix of
//! verifier, lowering, link and signing work is a fleet's, not one program's. The caller chooses the cores (it
//! runs this in a process pinned with [`super::timing::pin_to_cpus`]).

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Instant;

use bpf2sys::driver::{default_runtime_version, Session, SessionOptions};
use bpf2sys_signing::{SignOptions, Signer};
use sha2::{Digest, Sha256};

/// Objects in the measured batch (issue 16).
pub const BATCH_OBJECTS: usize = 200;

/// One object of the batch: its file name and bytes.
#[derive(Clone, Debug)]
pub struct BatchObject {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The throughput of one batch configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchRun {
    pub threads: usize,
    pub objects: usize,
    /// Best wall time of the timed repetitions, in seconds.
    pub seconds: f64,
    pub objects_per_second: f64,
    /// SHA-256 (hex) over every signed image, in input order, each preceded by its length (u64 LE).
    pub outputs_sha256: String,
}

/// Why the batch could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("cannot read {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("no sample objects in {0}")]
    NoSamples(std::path::PathBuf),
    #[error("{object}: {message}")]
    Build { object: String, message: String },
    #[error(transparent)]
    Session(#[from] bpf2sys::driver::DriverError),
}

/// `count` objects: the sample objects of `samples/` (sorted by name) in rotation.
pub fn batch_objects(repo_root: &Path, count: usize) -> Result<Vec<BatchObject>, BatchError> {
    let dir = repo_root.join("samples");
    let io = |source| BatchError::Io { path: dir.clone(), source };
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(BatchError::NoSamples(dir));
    }
    let mut samples = Vec::new();
    for path in paths {
        let bytes = std::fs::read(&path).map_err(|source| BatchError::Io { path: path.clone(), source })?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        samples.push(BatchObject { name, bytes });
    }
    Ok(samples.iter().cycle().take(count).cloned().collect())
}

/// Builds and signs every object with `threads` workers, `repeats` times after one untimed warm-up pass over the
/// distinct objects; the best repetition's throughput and the outputs' digest (identical in every repetition,
/// checked).
pub fn measure(
    objects: &[BatchObject],
    signer: &Signer,
    threads: NonZeroUsize,
    repeats: usize,
) -> Result<BatchRun, BatchError> {
    // One session per runtime version the objects need (kfunc objects need 1.5.0), as build-driver picks them.
    let mut sessions: Vec<Session> = Vec::new();
    for o in objects {
        let runtime_version = default_runtime_version(&o.bytes, &o.name);
        if !sessions.iter().any(|s| s.options().runtime_version == runtime_version) {
            sessions.push(Session::new(SessionOptions { runtime_version, ..SessionOptions::default() })?);
        }
    }
    let options = SignOptions::default();
    let build = |o: &BatchObject| -> Result<Vec<u8>, BatchError> {
        let failed = |message: String| BatchError::Build { object: o.name.clone(), message };
        let runtime_version = default_runtime_version(&o.bytes, &o.name);
        let session = sessions
            .iter()
            .find(|s| s.options().runtime_version == runtime_version)
            .expect("a session was made for every object's runtime version");
        let image = session.build(&o.bytes, &o.name).map_err(|e| failed(e.to_string()))?;
        session.sign(&o.name, &image, signer, &options).map_err(|e| failed(e.to_string()))
    };
    let mut seen = std::collections::HashSet::new();
    for o in objects.iter().filter(|o| seen.insert(o.name.as_str())) {
        build(o)?;
    }
    let mut best = f64::INFINITY;
    let mut digest: Option<String> = None;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        let outputs = bpf2sys::batch::map_in_order(objects, threads, build);
        let seconds = start.elapsed().as_secs_f64();
        let mut hasher = Sha256::new();
        for output in outputs {
            let image = output?;
            hasher.update((image.len() as u64).to_le_bytes());
            hasher.update(&image);
        }
        let hex: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if let Some(previous) = &digest {
            if *previous != hex {
                return Err(BatchError::Build {
                    object: "the batch".into(),
                    message: "two repetitions produced different outputs".into(),
                });
            }
        }
        digest = Some(hex);
        best = best.min(seconds);
    }
    Ok(BatchRun {
        threads: threads.get(),
        objects: objects.len(),
        seconds: best,
        objects_per_second: objects.len() as f64 / best,
        outputs_sha256: digest.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_on_two_threads_writes_the_bytes_of_a_batch_on_one() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let signer = super::super::compile::bench_signer(keys.path()).unwrap();
        let objects = batch_objects(root, 30).unwrap();
        assert_eq!(objects.len(), 30);
        let one = measure(&objects, &signer, NonZeroUsize::new(1).unwrap(), 1).unwrap();
        let two = measure(&objects, &signer, NonZeroUsize::new(2).unwrap(), 1).unwrap();
        assert_eq!((one.objects, one.threads, two.threads), (30, 1, 2));
        assert_eq!(one.outputs_sha256.len(), 64);
        assert_eq!(one.outputs_sha256, two.outputs_sha256);
        assert!(one.objects_per_second > 0.0 && two.objects_per_second > 0.0);
    }
}
