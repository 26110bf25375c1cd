//! Setup shared by the CLI integration tests (`cli_build_sign`, `cli_sign`, `cli_hardening`): running the
//! `bpf2sys` binary, external tools (under `CI` a missing one fails the test instead of skipping it), test
//! certificates, PFX files, raw signatures made with openssl, and osslsigncode as the independent verifier.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `samples/NAME`.
pub fn sample(name: &str) -> PathBuf {
    repo().join("samples").join(name)
}

/// Every committed `samples/*.o`, sorted.
pub fn sample_objects() -> Vec<PathBuf> {
    let mut objects: Vec<PathBuf> = std::fs::read_dir(repo().join("samples"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    objects.sort();
    assert!(!objects.is_empty());
    objects
}

/// Runs the `bpf2sys` binary with `args`.
pub fn bpf2sys(args: &[&dyn AsRef<OsStr>]) -> Output {
    bpf2sys_env(args, &[])
}

/// Runs the `bpf2sys` binary with `args` and extra environment variables.
pub fn bpf2sys_env(args: &[&dyn AsRef<OsStr>], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bpf2sys"));
    for arg in args {
        command.arg(arg);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run bpf2sys")
}

/// stdout then stderr.
pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Whether external tool `name` runs (`name probe`); prints why not. Under `CI` a missing tool fails the test.
pub fn tool(name: &str, probe: &str) -> bool {
    if Command::new(name).arg(probe).output().is_ok() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{name} is not installed (.ci/run installs it)");
    eprintln!("SKIP part: {name} not installed");
    false
}

/// `bpf2sys cert new --name NAME --bits 2048` in `dir`: the paths of the key and the certificate.
pub fn new_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = bpf2sys(&[&"cert", &"new", &"--out-dir", &dir, &"--name", &name, &"--bits", &"2048"]);
    assert!(out.status.success(), "{}", text(&out));
    (dir.join(format!("{name}.key.pem")), dir.join(format!("{name}.cert.pem")))
}

/// A PFX of `key` and `cert` protected by `password`, made by openssl (None if openssl is missing outside CI).
pub fn pfx(dir: &Path, key: &Path, cert: &Path, password: &str) -> Option<PathBuf> {
    if !tool("openssl", "version") {
        return None;
    }
    let pfx = dir.join("k.pfx");
    let status = Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", &format!("pass:{password}"), "-inkey"])
        .arg(key)
        .arg("-in")
        .arg(cert)
        .arg("-out")
        .arg(&pfx)
        .status()
        .unwrap();
    assert!(status.success(), "openssl pkcs12 -export");
    Some(pfx)
}

/// Step 2 of external signing done the way an HSM operator would: openssl signs the `--digest-out` digest with
/// `key` (RSA PKCS#1 v1.5 over SHA-256) into `signature`. False if openssl is missing outside CI.
pub fn sign_digest_with_openssl(key: &Path, digest: &Path, signature: &Path) -> bool {
    if !tool("openssl", "version") {
        return false;
    }
    let status = Command::new("openssl")
        .args(["pkeyutl", "-sign", "-pkeyopt", "digest:sha256", "-inkey"])
        .arg(key)
        .arg("-in")
        .arg(digest)
        .arg("-out")
        .arg(signature)
        .status()
        .unwrap();
    assert!(status.success(), "openssl pkeyutl -sign");
    true
}

/// `osslsigncode verify` of `driver` against CA `ca`, or None if osslsigncode is missing outside CI.
pub fn osslsigncode_verify(driver: &Path, ca: &Path) -> Option<Output> {
    if !tool("osslsigncode", "--version") {
        return None;
    }
    Some(Command::new("osslsigncode").arg("verify").arg("-in").arg(driver).arg("-CAfile").arg(ca).output().unwrap())
}

/// Asserts osslsigncode accepts `driver`'s signature chaining to `ca` (skipped where it is not installed).
pub fn osslsigncode_accepts(driver: &Path, ca: &Path) {
    if let Some(out) = osslsigncode_verify(driver, ca) {
        assert!(out.status.success(), "osslsigncode rejects {}:\n{}", driver.display(), text(&out));
    }
}
