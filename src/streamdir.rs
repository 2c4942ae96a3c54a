//! The runtime directory of per-stream env files (`/run/neustream/streams`): atomic writes,
//! reads, removal, and a per-key lock that serialises the hooks of one stream key.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::private_file;
use crate::stream_key::StreamKey;

#[derive(Debug, thiserror::Error)]
pub enum StreamDirError {
    #[error("failed to create runtime directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error(
        "refusing to keep stream secrets in {path}: it is mode {mode:04o} owned by uid {uid}; \
         it must be a directory of ours with mode 0700"
    )]
    Unsafe { path: PathBuf, mode: u32, uid: u32 },
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

pub struct StreamDir {
    dir: PathBuf,
}

/// Held while a hook works on one stream key; released on drop.
pub struct KeyLock {
    _file: File,
}

impl StreamDir {
    /// Opens the directory, creating it (mode 0700) if needed, and checks that nobody else can
    /// read what we write there.
    pub fn open(dir: &Path) -> Result<Self, StreamDirError> {
        if let Err(source) = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            return Err(StreamDirError::Create {
                path: dir.into(),
                source,
            });
        }
        let meta = fs::metadata(dir).map_err(|source| StreamDirError::Io {
            action: "inspect",
            path: dir.into(),
            source,
        })?;
        let mode = meta.mode() & 0o7777;
        let uid = unsafe { libc::geteuid() };
        if !meta.is_dir() || meta.uid() != uid {
            return Err(StreamDirError::Unsafe {
                path: dir.into(),
                mode,
                uid: meta.uid(),
            });
        }
        if mode != 0o700 {
            // Ours but too open (e.g. created by hand): tighten it rather than fail a stream.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|_| {
                StreamDirError::Unsafe {
                    path: dir.into(),
                    mode,
                    uid: meta.uid(),
                }
            })?;
        }
        Ok(StreamDir { dir: dir.into() })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn env_path(&self, key: &StreamKey) -> PathBuf {
        self.dir.join(format!("{key}.env"))
    }

    fn lock_path(&self, key: &StreamKey) -> PathBuf {
        self.dir.join(format!(".{key}.lock"))
    }

    /// Waits for, and takes, the lock of `key`. The lock file is removed by [`Self::remove`]
    /// while held; a waiter that then wakes on the unlinked file takes the lock again.
    pub fn lock(&self, key: &StreamKey) -> Result<KeyLock, StreamDirError> {
        self.take_lock(key, None)
            .map(|l| l.expect("a blocking lock is always taken"))
    }

    /// Like [`Self::lock`], but gives up after `timeout` (None: the lock stayed busy), for
    /// callers whose own run time is bounded (`neustream reconcile`).
    pub fn lock_within(
        &self,
        key: &StreamKey,
        timeout: std::time::Duration,
    ) -> Result<Option<KeyLock>, StreamDirError> {
        self.take_lock(key, Some(std::time::Instant::now() + timeout))
    }

    fn take_lock(
        &self,
        key: &StreamKey,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<KeyLock>, StreamDirError> {
        let path = self.lock_path(key);
        let io_err = |action, source| StreamDirError::Io {
            action,
            path: path.clone(),
            source,
        };
        for _ in 0..100 {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| io_err("open lock file", e))?;
            match deadline {
                None => {
                    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                        return Err(io_err("lock", io::Error::last_os_error()));
                    }
                }
                Some(deadline) => loop {
                    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0
                    {
                        break;
                    }
                    let err = io::Error::last_os_error();
                    if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                        return Err(io_err("lock", err));
                    }
                    if std::time::Instant::now() >= deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                },
            }
            // Still the file at that path (not one unlinked by the previous holder)?
            let held = file
                .metadata()
                .map_err(|e| io_err("inspect lock file", e))?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Some(KeyLock { _file: file }))
                }
                _ => continue,
            }
        }
        Err(io_err(
            "lock",
            io::Error::other("lock file keeps being replaced"),
        ))
    }

    /// Keys that have an env file here, sorted.
    pub fn keys(&self) -> Result<Vec<StreamKey>, StreamDirError> {
        private_file::keys(&self.dir, ".env").map_err(|source| StreamDirError::Io {
            action: "list",
            path: self.dir.clone(),
            source,
        })
    }

    /// Writes the env file of `key` atomically: a 0600 temporary file, fsync, rename, fsync of
    /// the directory. On failure nothing is left behind and any previous file is untouched.
    pub fn write(&self, key: &StreamKey, contents: &str) -> Result<PathBuf, StreamDirError> {
        let path = self.env_path(key);
        private_file::write(&self.dir, &format!("{key}.env"), contents.as_bytes()).map_err(
            |source| StreamDirError::Io {
                action: "write",
                path: path.clone(),
                source,
            },
        )?;
        Ok(path)
    }

    /// The env file of `key`, or None if there is none.
    pub fn read(&self, key: &StreamKey) -> Result<Option<String>, StreamDirError> {
        let path = self.env_path(key);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StreamDirError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Releases the lock of `key` taken for nothing: removes the lock file too, unless `key` has
    /// an env file (whose removal later takes the lock file with it). Anyone may publish any
    /// key, so a refused one must leave no file behind.
    pub fn unlock(&self, key: &StreamKey, held: KeyLock) -> Result<(), StreamDirError> {
        let result = if self.env_path(key).exists() {
            Ok(())
        } else {
            match fs::remove_file(self.lock_path(key)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StreamDirError::Io {
                    action: "remove",
                    path: self.lock_path(key),
                    source: e,
                }),
                _ => Ok(()),
            }
        };
        drop(held);
        result
    }

    /// Removes the env file of `key` (if any) and, since the caller holds it, its lock file.
    pub fn remove(&self, key: &StreamKey, _held: &KeyLock) -> Result<(), StreamDirError> {
        for path in [self.env_path(key), self.lock_path(key)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StreamDirError::Io {
                        action: "remove",
                        path,
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("neustream-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn writes_private_files_in_a_private_dir() {
        let base = tempdir("write");
        let dir = base.join("streams");
        let sd = StreamDir::open(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let key = StreamKey::parse("k1").unwrap();
        let lock = sd.lock(&key).unwrap();
        let path = sd.write(&key, "A=\"1\"\n").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(sd.read(&key).unwrap().as_deref(), Some("A=\"1\"\n"));
        sd.write(&key, "A=\"2\"\n").unwrap();
        assert_eq!(sd.read(&key).unwrap().as_deref(), Some("A=\"2\"\n"));
        sd.remove(&key, &lock).unwrap();
        drop(lock);
        assert_eq!(sd.read(&key).unwrap(), None);
        // Nothing left behind: no temporary file, no lock file.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn unlock_leaves_nothing_for_a_key_without_env_file() {
        let dir = tempdir("unlock");
        let sd = StreamDir::open(&dir).unwrap();
        let (k1, k2) = (
            StreamKey::parse("k1").unwrap(),
            StreamKey::parse("k2").unwrap(),
        );
        let lock = sd.lock(&k1).unwrap();
        sd.unlock(&k1, lock).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        // A key with an env file keeps its lock file until the env file goes.
        let lock = sd.lock(&k2).unwrap();
        sd.write(&k2, "A=1\n").unwrap();
        sd.unlock(&k2, lock).unwrap();
        assert!(sd.lock_path(&k2).exists());
        let lock = sd.lock(&k2).unwrap();
        sd.remove(&k2, &lock).unwrap();
        drop(lock);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tightens_an_open_directory_of_ours() {
        let dir = tempdir("mode");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        StreamDir::open(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempdir("fail");
        let sd = StreamDir::open(&dir).unwrap();
        let key = StreamKey::parse("k2").unwrap();
        // A directory where the file should go makes the rename fail.
        fs::create_dir(sd.env_path(&key)).unwrap();
        let err = sd.write(&key, "A=1\n").unwrap_err().to_string();
        assert!(err.contains("failed to write"), "{err}");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k2.env")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lock_serialises_holders() {
        let dir = tempdir("lock");
        let sd = std::sync::Arc::new(StreamDir::open(&dir).unwrap());
        let key = StreamKey::parse("k3").unwrap();
        let first = sd.lock(&key).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (sd2, key2) = (sd.clone(), key.clone());
        let waiter = std::thread::spawn(move || {
            let _l = sd2.lock(&key2).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        sd.remove(&key, &first).unwrap();
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lock_within_gives_up_in_time() {
        let dir = tempdir("lockwithin");
        let sd = StreamDir::open(&dir).unwrap();
        let key = StreamKey::parse("k4").unwrap();
        let held = sd.lock(&key).unwrap();
        let started = std::time::Instant::now();
        let got = sd
            .lock_within(&key, std::time::Duration::from_millis(200))
            .unwrap();
        assert!(got.is_none());
        let waited = started.elapsed();
        assert!(waited >= std::time::Duration::from_millis(200) && waited.as_secs() < 2);
        sd.unlock(&key, held).unwrap();
        let again = sd.lock_within(&key, std::time::Duration::from_millis(200));
        assert!(again.unwrap().is_some());
        sd.write(&key, "A=1\n").unwrap();
        assert_eq!(sd.keys().unwrap(), vec![key]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
