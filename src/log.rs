//! Append-only log files under `logs/` with a size cap: when a file passes its
//! cap it is renamed to `NAME.1` (replacing the previous one) and a new file is
//! started, so logs never fill the disk. A log that cannot be written is the
//! caller's to report once; logging never stops a command.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::proto::escape::escape_controls;

/// Size at which `errors.log` is rotated.
pub const ERROR_LOG_CAP: u64 = 1 << 20;

/// An append-only, size-capped log file.
#[derive(Debug)]
pub struct AppendLog {
    path: PathBuf,
    cap: u64,
    /// For [`AppendLog::append_kept`]: the file held open.
    kept: Option<Kept>,
}

/// A log file held open by [`AppendLog::append_kept`].
#[derive(Debug)]
struct Kept {
    file: fs::File,
    /// Its size, as counted here since the last look.
    len: u64,
    /// Which file it is (device, inode): another process that shares the
    /// log may rotate it away from under us.
    id: (u64, u64),
    /// When the path was last looked at.
    looked: Instant,
}

/// How often a kept log looks whether its path is still its file.
const LOOK_EVERY: Duration = Duration::from_secs(1);

impl Clone for AppendLog {
    /// Another writer of the same file (it opens its own).
    fn clone(&self) -> Self {
        AppendLog::new(self.path.clone(), self.cap)
    }
}

impl AppendLog {
    /// A log at `path`, rotated past `cap` bytes.
    pub fn new(path: PathBuf, cap: u64) -> Self {
        AppendLog {
            path,
            cap,
            kept: None,
        }
    }

    /// Where the log lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one line (a newline is added). Creates the directory if
    /// needed. The file is opened for each line, so several processes can
    /// share it (the error log).
    ///
    /// # Errors
    /// The OS error when the directory or file cannot be written (full disk,
    /// permissions).
    pub fn append(&self, line: &str) -> io::Result<()> {
        let (mut f, _) = self.open_rotated()?;
        // One write per line: concurrent netsh processes do not interleave lines.
        f.write_all(format!("{line}\n").as_bytes())
    }

    /// As [`AppendLog::append`], for a log one process writes many lines
    /// to (the server's console): the file stays open and its size is
    /// counted here, so a line costs one `write`, not a directory check, a
    /// `stat` and an open. A failed write drops the handle; the next line
    /// opens the file again.
    ///
    /// # Errors
    /// As [`AppendLog::append`].
    pub fn append_kept(&mut self, line: &str) -> io::Result<()> {
        self.look();
        if self.kept.as_ref().is_none_or(|k| k.len >= self.cap) {
            self.kept = None;
            self.kept = Some(self.open_kept_file()?);
        }
        let record = format!("{line}\n");
        let Some(k) = self.kept.as_mut() else {
            return Err(io::Error::other("log not open"));
        };
        match k.file.write_all(record.as_bytes()) {
            Ok(()) => {
                k.len += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.kept = None;
                Err(e)
            }
        }
    }

    /// At most every [`LOOK_EVERY`]: if the path is no longer the kept file
    /// (another netsh sharing the directory rotated it), let go of it, so
    /// the next line opens the new one instead of growing `NAME.1`; and take
    /// the file's real size, which counts the other writers' lines too.
    fn look(&mut self) {
        let Some(k) = self.kept.as_mut() else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(k.looked) < LOOK_EVERY {
            return;
        }
        k.looked = now;
        match fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == k.id => k.len = k.len.max(m.len()),
            _ => self.kept = None,
        }
    }

    /// Look at the path on the next line, whatever the time.
    #[cfg(test)]
    fn look_next(&mut self) {
        if let Some(k) = self.kept.as_mut() {
            k.looked = Instant::now() - LOOK_EVERY;
        }
    }

    fn open_kept_file(&self) -> io::Result<Kept> {
        let (file, len) = self.open_rotated()?;
        let m = file.metadata()?;
        Ok(Kept {
            file,
            len,
            id: (m.dev(), m.ino()),
            looked: Instant::now(),
        })
    }

    /// Open the file [`AppendLog::append_kept`] writes to now, if it can
    /// be (if not, the first line reports why).
    pub fn open_kept(&mut self) {
        if self.kept.is_none() {
            self.kept = self.open_kept_file().ok();
        }
    }

    /// Open the file for appending, rotating it first if it is past the
    /// cap; with its size.
    fn open_rotated(&self) -> io::Result<(fs::File, u64)> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        if let Ok(m) = fs::metadata(&self.path)
            && m.len() >= self.cap
        {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            fs::rename(&self.path, old)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let len = f.metadata()?.len();
        Ok((f, len))
    }
}

/// Most characters of the command line and of the error kept in one
/// error-log record: a 70 KB chat argument is not a record.
pub const RECORD_PART_MAX: usize = 512;

/// Format an error-log line: timestamp, the command that failed, the error,
/// each cut to [`RECORD_PART_MAX`] characters (with the length it had).
pub fn error_line(command: &str, err: &Error) -> String {
    format!(
        "{} [{}] {}",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        clip(&escape_controls(command)),
        clip(&escape_controls(&err.to_string()))
    )
}

/// At most [`RECORD_PART_MAX`] characters, and the length it had if longer.
fn clip(s: &str) -> String {
    if s.chars().count() <= RECORD_PART_MAX {
        return s.to_string();
    }
    let kept: String = s.chars().take(RECORD_PART_MAX).collect();
    format!("{kept}… ({} bytes)", s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let log = AppendLog::new(dir.path().join("logs/x.log"), 100);
        for i in 0..30 {
            log.append(&format!("line {i:04}")).unwrap();
        }
        let cur = fs::metadata(log.path()).unwrap().len();
        let old = fs::metadata(dir.path().join("logs/x.log.1")).unwrap().len();
        assert!(cur <= 110 && old <= 110, "{cur} {old}");
        let text = fs::read_to_string(log.path()).unwrap();
        assert!(text.ends_with("line 0029\n"));
    }

    #[test]
    fn a_kept_log_rotates_too_and_a_bad_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AppendLog::new(dir.path().join("logs/x.log"), 100);
        for i in 0..30 {
            log.append_kept(&format!("line {i:04}")).unwrap();
        }
        let cur = fs::metadata(log.path()).unwrap().len();
        let old = fs::read_to_string(dir.path().join("logs/x.log.1")).unwrap();
        assert!(cur <= 110 && old.len() <= 110, "{cur} {}", old.len());
        let text = fs::read_to_string(log.path()).unwrap();
        assert!(text.ends_with("line 0029\n"), "{text}");
        // Every line is in one of the two files, whole and in order.
        let all: Vec<&str> = old.lines().chain(text.lines()).collect();
        let want: Vec<String> = (30 - all.len()..30)
            .map(|i| format!("line {i:04}"))
            .collect();
        assert_eq!(all, want);
        // A directory that cannot be written is an error each time, never
        // a panic.
        let mut bad = AppendLog::new(PathBuf::from("/proc/netsh-cannot/x.log"), 100);
        assert!(bad.append_kept("x").is_err());
        assert!(bad.append_kept("y").is_err());
    }

    #[test]
    fn two_writers_of_one_kept_log_follow_each_others_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.log");
        let (mut a, mut b) = (
            AppendLog::new(path.clone(), 100),
            AppendLog::new(path.clone(), 100),
        );
        b.append_kept("b first").unwrap();
        // a fills the file and rotates it: b's open file is now server.log.1.
        for i in 0..12 {
            a.append_kept(&format!("a line {i:02}")).unwrap();
        }
        let old = dir.path().join("server.log.1");
        assert!(old.is_file());
        b.look_next();
        b.append_kept("b after").unwrap();
        let cur = fs::read_to_string(&path).unwrap();
        assert!(cur.ends_with("b after\n"), "{cur}");
        assert!(!fs::read_to_string(&old).unwrap().contains("b after"));
        // And b counts a's lines: its next look sees the real size.
        for i in 0..12 {
            a.append_kept(&format!("a more {i:02}")).unwrap();
            b.look_next();
            b.append_kept(&format!("b more {i:02}")).unwrap();
        }
        assert!(
            fs::metadata(&path).unwrap().len() <= 100 + 20,
            "the cap holds for both"
        );
    }

    #[test]
    fn a_record_is_cut_to_its_cap() {
        let long = "x".repeat(70_000);
        let line = error_line(&format!("chat --send {long}"), &Error::usage(long.clone()));
        assert!(line.len() < 2 * RECORD_PART_MAX + 200, "{}", line.len());
        assert!(line.contains("… (70012 bytes)"), "{line}");
        let short = error_line("ifno", &Error::usage("unknown"));
        assert!(
            short.ends_with("[ifno] error[usage]: unknown — type 'help COMMAND' for its usage"),
            "{short}"
        );
    }

    #[test]
    fn unwritable_is_an_error_not_a_panic() {
        let log = AppendLog::new(PathBuf::from("/proc/netsh-cannot/x.log"), 100);
        assert!(log.append("x").is_err());
    }
}
