//! Database files that only their owner can read: they hold signing secrets and endpoint
//! credentials.

use std::io;
use std::path::Path;

/// Creates the file at `path`, empty and with mode `0600` on Unix, when it does not exist
/// (an existing file keeps its permissions). SQLite gives the `-wal` and `-shm` files it
/// creates beside a database the database file's permissions, so they are private too.
///
/// Names SQLite treats specially (`:memory:`, `file:` URIs) are left alone.
pub(crate) fn create_private_file(path: &Path) -> io::Result<()> {
    let text = path.to_string_lossy();
    if text.is_empty() || text == ":memory:" || text.starts_with("file:") {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn new_files_are_private_and_existing_ones_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        create_private_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let existing = dir.path().join("existing.db");
        std::fs::write(&existing, b"data").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o640)).unwrap();
        create_private_file(&existing).unwrap();
        assert_eq!(std::fs::read(&existing).unwrap(), b"data");
        let mode = std::fs::metadata(&existing).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        create_private_file(Path::new(":memory:")).unwrap();
    }
}
