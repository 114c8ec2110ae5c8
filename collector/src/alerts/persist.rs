//! Files of the alerting state in the data dir, written atomically: a temporary file beside the target
//! is written and fsynced, renamed over the target, and the directory fsynced, so a crash leaves either
//! the old or the new file, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::AlertError;

/// The directory under the data dir that holds `state.json` and `rules.toml`.
pub const DIR: &str = "alerts";
/// Instances and their history.
pub const STATE_FILE: &str = "state.json";
/// Rules created, edited or deleted from the UI or API.
pub const RULES_FILE: &str = "rules.toml";

/// `<data_dir>/alerts/<name>`.
pub fn path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(DIR).join(name)
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AlertError> {
    let io = |error| AlertError::Io(path.to_path_buf(), error);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io)
}

/// The file's text, or `None` when it does not exist.
pub fn read(path: &Path) -> Result<Option<String>, AlertError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(AlertError::Io(path.to_path_buf(), error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_the_file_and_leave_no_temporary() {
        let dir = std::env::temp_dir().join(format!("meshscope-persist-{}", std::process::id()));
        let target = dir.join("alerts").join("state.json");
        write_atomic(&target, b"one").unwrap();
        write_atomic(&target, b"two").unwrap();
        assert_eq!(read(&target).unwrap().as_deref(), Some("two"));
        let names: Vec<_> = std::fs::read_dir(dir.join("alerts"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        assert_eq!(read(&dir.join("absent")).unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
