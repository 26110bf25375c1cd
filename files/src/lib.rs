//! The files bpf2sys reads and writes, handled the same way by every entry point.
//!
//! In: a path a user named. Out: its bytes ([`read_input`]) or a file replaced as one step
//! ([`write_atomically`]). Inputs must be regular files no larger than a cap, checked before anything is read:
//! reading `/dev/zero` or a FIFO would otherwise never end or exhaust memory. Outputs go through a temporary file
//! in the target's directory, fsync and a rename, so a reader never sees a half-written driver and a failure
//! leaves nothing behind; an output never replaces a device node, FIFO, directory or (without `--force`) a
//! symbolic link, nor the file the output was made from.

use std::fs::{File, Metadata};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Default cap on the size of an input object or image (256 MiB): far above any real eBPF object or driver,
/// far below what would exhaust memory.
pub const DEFAULT_MAX_INPUT_SIZE: u64 = 256 << 20;

/// Why a file could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: is {kind}, not a regular file", path.display())]
    NotRegularInput { path: PathBuf, kind: &'static str },
    #[error("{}: {size} bytes is over the input size limit of {limit} bytes (--max-input-size)", path.display())]
    TooLarge { path: PathBuf, size: u64, limit: u64 },
    #[error("{}: is {kind}; refusing to replace it with a regular file", path.display())]
    NotRegularOutput { path: PathBuf, kind: &'static str },
    #[error("{}: is a symbolic link; refusing to replace it (--force replaces the link with the output)", path.display())]
    SymlinkOutput { path: PathBuf },
    #[error("{}: is the input file {}; refusing to overwrite it", path.display(), input.display())]
    OverwritesInput { path: PathBuf, input: PathBuf },
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What kind of file system object `meta` describes, for messages ("a directory", "a FIFO").
fn kind_of(meta: &Metadata) -> &'static str {
    let file_type = meta.file_type();
    if file_type.is_dir() {
        return "a directory";
    }
    if file_type.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_fifo() {
            return "a FIFO";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// Reads a whole input file of at most `limit` bytes. Symbolic links are followed; what they lead to must be a
/// regular file.
pub fn read_input(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let read_error = |source| FileError::Read { path: path.to_path_buf(), source };
    // Checked before opening: opening a FIFO for reading blocks until a writer appears.
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if !meta.is_file() {
        return Err(FileError::NotRegularInput { path: path.to_path_buf(), kind: kind_of(&meta) });
    }
    let file = open_for_reading(path).map_err(read_error)?;
    // Checked again on the opened file: the path may have been replaced in between.
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(FileError::NotRegularInput { path: path.to_path_buf(), kind: kind_of(&meta) });
    }
    if meta.len() > limit {
        return Err(FileError::TooLarge { path: path.to_path_buf(), size: meta.len(), limit });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file growing while it is read stops at limit + 1 bytes and is refused.
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge { path: path.to_path_buf(), size: bytes.len() as u64, limit });
    }
    Ok(bytes)
}

#[cfg(unix)]
fn open_for_reading(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: if a FIFO was swapped in after the check, the open returns instead of waiting for a writer.
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)
}

#[cfg(not(unix))]
fn open_for_reading(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// Parses a size for `--max-input-size`: bytes, or a number with a binary suffix `K`, `M`, `G` (optionally
/// followed by `iB`, `B`): `1048576`, `1024K`, `256M`, `1GiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(split);
    let number: u64 = digits.parse().map_err(|_| format!("`{text}` is not a size (e.g. 1048576, 512K, 256M, 1G)"))?;
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        other => return Err(format!("unknown size unit `{other}` in `{text}` (use K, M or G)")),
    };
    number.checked_mul(1 << shift).ok_or_else(|| format!("`{text}` is too large"))
}

/// How [`write_atomically_with`] may replace the file at the output path.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Replace a symbolic link at the output path with the output (the link's target is left alone).
    pub replace_symlink: bool,
    /// Files the output was made from: the output may not be any of them (compared by file identity, so a hard
    /// link or another spelling of the path is caught too).
    pub inputs: Vec<PathBuf>,
    /// Unix permissions of the file, applied whether it is new or replaces one (0600 for private keys). Default:
    /// a replaced file keeps its permissions, a new one gets 0644 less the umask.
    pub mode: Option<u32>,
}

/// [`write_atomically_with`] with the default options.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomically_with(path, bytes, &WriteOptions::default())
}

/// Replaces `path` with `bytes` as one step: a temporary file in the same directory, written, given its mode,
/// fsynced, renamed over `path`, and the directory fsynced. On any failure the temporary file is removed and
/// `path` is untouched.
pub fn write_atomically_with(path: &Path, bytes: &[u8], options: &WriteOptions) -> Result<(), FileError> {
    let write_error = |source| FileError::Write { path: path.to_path_buf(), source };
    let existing_mode = check_output_path(path, options)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let stem = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{stem}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Given to open(2), so the umask applies, as for any file a tool creates.
        builder.permissions(std::fs::Permissions::from_mode(options.mode.unwrap_or(0o644)));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(write_error)?;
    tmp.write_all(bytes).map_err(write_error)?;
    #[cfg(unix)]
    if let Some(mode) = options.mode.or(existing_mode) {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode)).map_err(write_error)?;
    }
    #[cfg(not(unix))]
    let _ = existing_mode;
    tmp.as_file().sync_all().map_err(write_error)?;
    // On failure the PersistError owns the temporary file and deletes it when dropped.
    tmp.persist(path).map_err(|e| write_error(e.error))?;
    sync_directory(dir).map_err(write_error)
}

/// Refuses an output path that is not a regular file (or absent), or that is one of the inputs. Returns the
/// permissions of the file being replaced, if any.
fn check_output_path(path: &Path, options: &WriteOptions) -> Result<Option<u32>, FileError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(FileError::Write { path: path.to_path_buf(), source }),
    };
    if meta.file_type().is_symlink() {
        if options.replace_symlink {
            return Ok(None);
        }
        return Err(FileError::SymlinkOutput { path: path.to_path_buf() });
    }
    if !meta.is_file() {
        return Err(FileError::NotRegularOutput { path: path.to_path_buf(), kind: kind_of(&meta) });
    }
    for input in &options.inputs {
        if std::fs::metadata(input).is_ok_and(|input_meta| same_file(&meta, &input_meta)) {
            return Err(FileError::OverwritesInput { path: path.to_path_buf(), input: input.clone() });
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(Some(meta.permissions().mode() & 0o7777))
    }
    #[cfg(not(unix))]
    Ok(None)
}

#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len() && a.modified().ok() == b.modified().ok() && a.created().ok() == b.created().ok()
}

/// Makes the rename durable: on Unix a rename is only on disk once its directory is synced.
#[cfg(unix)]
fn sync_directory(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_directory(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests;
