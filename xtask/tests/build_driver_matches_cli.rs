//! CI's way of making a driver is the user's: `bpf2sys build X.o -o X.sys --test-sign`, run from the repository
//! root, writes exactly the bytes `cargo xtask build-driver X.o` writes (same pipeline, same test certificate in
//! target/test-signing/, deterministic signing).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The bpf2sys binary beside this xtask binary (same profile), built if this test runs before it exists.
fn bpf2sys_binary() -> PathBuf {
    let xtask = PathBuf::from(env!("CARGO_BIN_EXE_xtask"));
    let path = xtask.with_file_name(format!("bpf2sys{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status =
            Command::new(cargo).current_dir(repo()).args(["build", "-q", "-p", "bpf2sys", "--bin", "bpf2sys"]).status();
        assert!(status.is_ok_and(|s| s.success()), "cargo build -p bpf2sys");
    }
    path
}

#[test]
fn bpf2sys_build_test_sign_writes_what_xtask_build_driver_writes() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["droppacket", "bpf_calls"] {
        let object = format!("samples/{name}.o");
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .current_dir(repo())
            .args(["build-driver", &object, "--out"])
            .arg(dir.path().join("xtask"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let cli = dir.path().join(format!("{name}-cli.sys"));
        let out = Command::new(bpf2sys_binary())
            .current_dir(repo())
            .args(["build", &object, "--test-sign", "-o"])
            .arg(&cli)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let from_xtask = std::fs::read(dir.path().join("xtask").join(format!("{name}.sys"))).unwrap();
        assert!(bpf2sys_signing::lint::is_signed(&from_xtask));
        assert!(std::fs::read(&cli).unwrap() == from_xtask, "{name}: bpf2sys build --test-sign differs from xtask");
    }
}
