use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn fifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

#[test]
fn reads_a_regular_file_and_follows_symlinks_to_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.o");
    std::fs::write(&file, b"abc").unwrap();
    std::os::unix::fs::symlink(&file, dir.path().join("link.o")).unwrap();
    assert_eq!(read_input(&file, 3).unwrap(), b"abc");
    assert_eq!(read_input(&dir.path().join("link.o"), 3).unwrap(), b"abc");
}

#[test]
fn refuses_an_input_over_the_limit_before_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.o");
    std::fs::write(&file, [0u8; 10]).unwrap();
    let e = read_input(&file, 9).unwrap_err();
    assert!(matches!(e, FileError::TooLarge { size: 10, limit: 9, .. }), "{e}");
    assert!(e.to_string().contains("big.o") && e.to_string().contains("--max-input-size"), "{e}");
}

#[test]
fn refuses_fifos_directories_and_device_nodes_as_input_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = dir.path().join("pipe");
    fifo(&pipe);
    let e = read_input(&pipe, DEFAULT_MAX_INPUT_SIZE).unwrap_err();
    assert_eq!(e.to_string(), format!("{}: is a FIFO, not a regular file", pipe.display()));
    let e = read_input(dir.path(), DEFAULT_MAX_INPUT_SIZE).unwrap_err();
    assert!(e.to_string().ends_with("is a directory, not a regular file"), "{e}");
    // A device node reached through a symbolic link (never /dev itself as the named path).
    let link = dir.path().join("zero.o");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let e = read_input(&link, DEFAULT_MAX_INPUT_SIZE).unwrap_err();
    assert!(e.to_string().ends_with("is a character device, not a regular file"), "{e}");
}

#[test]
fn missing_input_names_the_file() {
    let e = read_input(Path::new("/nonexistent/x.o"), 1).unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/x.o: cannot read: "), "{e}");
}

#[test]
fn parses_sizes_with_binary_suffixes() {
    assert_eq!(parse_size("1048576"), Ok(1 << 20));
    assert_eq!(parse_size("512K"), Ok(512 << 10));
    assert_eq!(parse_size("256M"), Ok(256 << 20));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert!(parse_size("12X").is_err());
    assert!(parse_size("").is_err());
    assert!(parse_size("99999999999999999999G").is_err());
}

#[test]
fn replaces_a_file_keeping_its_mode_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.sys");
    std::fs::write(&out, b"old").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o640)).unwrap();
    write_atomically(&out, b"new").unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"new");
    assert_eq!(mode(&out), 0o640);
    assert_eq!(entries(dir.path()), ["x.sys"]);
}

#[test]
fn explicit_mode_applies_to_new_and_replaced_files() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    write_atomically_with(&key, b"k", &WriteOptions { mode: Some(0o600), ..Default::default() }).unwrap();
    assert_eq!(mode(&key), 0o600);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_atomically_with(&key, b"k", &WriteOptions { mode: Some(0o600), ..Default::default() }).unwrap();
    assert_eq!(mode(&key), 0o600);
}

#[test]
fn refuses_to_replace_a_fifo_or_a_device_node_and_leaves_it_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = dir.path().join("out.sys");
    fifo(&pipe);
    let e = write_atomically(&pipe, b"x").unwrap_err();
    assert_eq!(e.to_string(), format!("{}: is a FIFO; refusing to replace it with a regular file", pipe.display()));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&pipe).unwrap().file_type().is_fifo());
    let e = write_atomically(dir.path(), b"x").unwrap_err();
    assert!(matches!(e, FileError::NotRegularOutput { kind: "a directory", .. }), "{e}");
    assert_eq!(entries(dir.path()), ["out.sys"]);
}

#[test]
fn refuses_to_replace_a_symlink_unless_asked_and_then_replaces_only_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.sys");
    std::fs::write(&target, b"target").unwrap();
    let link = dir.path().join("link.sys");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = write_atomically(&link, b"x").unwrap_err();
    assert!(matches!(e, FileError::SymlinkOutput { .. }), "{e}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    // A link to a device node is refused the same way (the /dev/null case, without touching /dev).
    let dev = dir.path().join("null.sys");
    std::os::unix::fs::symlink("/dev/null", &dev).unwrap();
    assert!(matches!(write_atomically(&dev, b"x").unwrap_err(), FileError::SymlinkOutput { .. }));
    write_atomically_with(&link, b"new", &WriteOptions { replace_symlink: true, ..Default::default() }).unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
    assert_eq!(std::fs::read(&link).unwrap(), b"new");
    assert_eq!(std::fs::read(&target).unwrap(), b"target");
}

#[test]
fn refuses_to_overwrite_an_input_even_through_a_hard_link() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("prog.o");
    std::fs::write(&input, b"elf").unwrap();
    let options = WriteOptions { inputs: vec![input.clone()], ..Default::default() };
    let e = write_atomically_with(&input, b"sys", &options).unwrap_err();
    assert!(matches!(e, FileError::OverwritesInput { .. }), "{e}");
    let hard = dir.path().join("alias.sys");
    std::fs::hard_link(&input, &hard).unwrap();
    assert!(matches!(write_atomically_with(&hard, b"sys", &options).unwrap_err(), FileError::OverwritesInput { .. }));
    assert_eq!(std::fs::read(&input).unwrap(), b"elf");
    write_atomically_with(&dir.path().join("prog.sys"), b"sys", &options).unwrap();
}

#[test]
fn a_failed_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let missing_dir = dir.path().join("no/such/dir/x.sys");
    let e = write_atomically(&missing_dir, b"x").unwrap_err();
    assert!(e.to_string().starts_with(&format!("{}: cannot write: ", missing_dir.display())), "{e}");
    // Rename onto a non-empty directory fails after the temporary file was written.
    let occupied = dir.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("f"), b"").unwrap();
    assert!(write_atomically(&occupied, b"x").is_err());
    assert_eq!(entries(dir.path()), ["occupied"]);
}
