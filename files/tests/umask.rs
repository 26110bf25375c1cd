//! New outputs get 0644 less the umask (its own test binary: the umask is process-wide).

use std::os::unix::fs::PermissionsExt;

#[test]
fn new_files_get_0644_less_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let old = unsafe { libc::umask(0o022) };
    let a = dir.path().join("a.sys");
    bpf2sys_files::write_atomically(&a, b"a").unwrap();
    unsafe { libc::umask(0o077) };
    let b = dir.path().join("b.sys");
    bpf2sys_files::write_atomically(&b, b"b").unwrap();
    unsafe { libc::umask(old) };
    assert_eq!(mode(&a), 0o644);
    assert_eq!(mode(&b), 0o600);
}
