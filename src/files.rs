//! Reading files the user or the file system hands us, with a cap: a path
//! may be a device (`/dev/zero` reads forever), a pipe, or a runaway file,
//! and `metadata().len()` says 0 for the first two.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The whole file, or `FileTooLarge` once it passes `max` bytes (nothing
/// past `max + 1` bytes is read).
///
/// # Errors
/// The open or read error, or `FileTooLarge`.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// `DIR/*.EXT` under the current directory whose path starts with `prefix`.
pub fn preferred_files(dir: &str, ext: &str, prefix: &str) -> Vec<String> {
    let suffix = format!(".{ext}");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(&suffix))
                .map(|n| format!("{dir}/{n}"))
                .filter(|p| p.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Write a file only its owner may read (a private key, a trust store),
/// replacing what was there.
///
/// # Errors
/// The OS error.
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_that_never_ends_is_cut_at_the_cap() {
        let e = read_capped(Path::new("/dev/zero"), 1000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn a_file_up_to_the_cap_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_capped(&p, 10).unwrap(), b"0123456789");
        assert_eq!(
            read_capped(&p, 9).unwrap_err().kind(),
            io::ErrorKind::FileTooLarge
        );
        assert_eq!(
            read_capped(&dir.path().join("missing"), 9)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
