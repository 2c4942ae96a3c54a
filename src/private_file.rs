//! Files of one directory that hold state or secrets: written whole or not at all (a 0600
//! temporary file, fsync, rename, fsync of the directory; on failure nothing is left behind and
//! any previous file is untouched), and the stream keys a directory has files for.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::stream_key::StreamKey;

/// Writes `contents` to `dir/name` atomically, mode 0600.
pub fn write(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The stream keys that have a file `<key><suffix>` in `dir`, sorted. Other names (temporary
/// and moved-aside files start with '.') are skipped.
pub fn keys(dir: &Path, suffix: &str) -> io::Result<Vec<StreamKey>> {
    let mut keys: Vec<StreamKey> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            StreamKey::parse(name.strip_suffix(suffix)?).ok()
        })
        .collect();
    keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(keys)
}
