//! Where settings come from besides `set`: the settings file (`netsh.conf`:
//! one `key = value` per line, `#` comments, written atomically by a
//! temporary file and a rename, so an interrupted write leaves the old file)
//! and the `NETSH_*` environment variables.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Key, Settings, Source};
use crate::error::{Error, ErrorKind, Result};

/// A settings file larger than this is not a settings file.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The settings file: what it holds (kept verbatim so `set` rewrites only the
/// key it changes) and where it lives.
#[derive(Debug)]
pub struct SettingsFile {
    path: PathBuf,
    values: BTreeMap<Key, String>,
}

impl SettingsFile {
    /// Read the file at `path` into `settings` (missing is fine). Returns the
    /// file and one warning per problem: unreadable file, unknown key, bad
    /// value. Bad lines are skipped, so their keys keep the defaults.
    pub fn load(path: &Path, settings: &mut Settings) -> (SettingsFile, Vec<Error>) {
        let mut file = SettingsFile {
            path: path.to_path_buf(),
            values: BTreeMap::new(),
        };
        let mut warnings = Vec::new();
        let warn = |msg: String| {
            Error::new(ErrorKind::Settings, msg).with_hint(format!(
                "fix or delete {}; the default is used meanwhile",
                path.display()
            ))
        };
        let text = match crate::files::read_capped(path, MAX_FILE_BYTES) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (file, warnings),
            Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => {
                warnings.push(warn(format!(
                    "settings file {} is over {MAX_FILE_BYTES} bytes, ignored",
                    path.display(),
                )));
                return (file, warnings);
            }
            Err(e) => {
                warnings.push(Error::io("read settings", path.display(), &e));
                return (file, warnings);
            }
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{}:{}", path.display(), n + 1);
            let Some((k, v)) = line.split_once('=') else {
                warnings.push(warn(format!("{at}: not 'key = value': '{}'", clip(line))));
                continue;
            };
            let Some(key) = Key::from_name(k) else {
                warnings.push(warn(format!("{at}: unknown setting '{}'", clip(k.trim()))));
                continue;
            };
            match settings.apply(key, v, Source::File) {
                Ok(()) => {
                    file.values.insert(key, v.trim().to_string());
                }
                Err(e) => warnings.push(warn(format!("{at}: {}", e.message))),
            }
        }
        (file, warnings)
    }

    /// Store `value` for `key` (`None` removes it) and rewrite the file atomically.
    ///
    /// # Errors
    /// `io` naming the path when the directory or file cannot be written.
    pub fn store(&mut self, key: Key, value: Option<String>) -> Result<()> {
        match value {
            Some(v) => self.values.insert(key, v),
            None => self.values.remove(&key),
        };
        let mut text =
            String::from("# netsh settings, written by 'set'; one 'key = value' per line\n");
        for k in Key::ALL {
            if let Some(v) = self.values.get(&k) {
                text.push_str(&format!("{} = {v}\n", k.name()));
            }
        }
        let tmp = self.path.with_extension("conf.tmp");
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let mut f = fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| {
            // A full disk leaves a cut temporary file: don't leave it behind
            // (the old netsh.conf is untouched).
            let _ = fs::remove_file(&tmp);
            Error::io("write settings", self.path.display(), &e)
        })
    }

    /// A handle on `path` that has not been read (for a session stand-in).
    pub fn unloaded(path: &Path) -> SettingsFile {
        SettingsFile {
            path: path.to_path_buf(),
            values: BTreeMap::new(),
        }
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// At most 60 characters of untrusted text, escaped for one line.
fn clip(s: &str) -> String {
    let e: String = s
        .chars()
        .take(60)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if s.chars().count() > 60 {
        format!("{e}…")
    } else {
        e
    }
}

/// Apply `NETSH_*` environment variables; returns one warning per bad value.
pub fn apply_env(settings: &mut Settings) -> Vec<Error> {
    let mut warnings = Vec::new();
    for k in Key::ALL {
        if let Some(v) = std::env::var_os(k.env_var()) {
            let v = v.to_string_lossy();
            if let Err(e) = settings.apply(k, &v, Source::Env) {
                warnings.push(Error {
                    message: format!("{}: {}", k.env_var(), e.message),
                    ..e
                });
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn file_round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("netsh.conf");
        let mut s = Settings::default();
        let (mut f, w) = SettingsFile::load(&p, &mut s);
        assert!(w.is_empty());
        f.store(Key::Server, Some("192.0.2.9:7".into())).unwrap();
        let mut s = Settings::default();
        let (_, w) = SettingsFile::load(&p, &mut s);
        assert!(w.is_empty());
        assert_eq!(s.get(Key::Server), "192.0.2.9:7");
        assert_eq!(s.source(Key::Server), Source::File);

        fs::write(
            &p,
            b"\xff\xfe\x00garbage\nfoo = 1\ntimeout = banana\nretries = 3\n",
        )
        .unwrap();
        let mut s = Settings::default();
        let (_, w) = SettingsFile::load(&p, &mut s);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w.iter().all(|e| e.code() == "settings"));
        assert_eq!(s.retries, 3, "good lines still count");
        assert_eq!(s.timeout, Duration::from_secs(3));
    }
}
