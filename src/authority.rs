//! Where stream keys and destinations come from: the Neustream Control Plane
//! (`CONTROL_PLANE_URL`), or, without it, the streams file (standalone mode). The hooks ask
//! this one seam and take the same path from its answers on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::info;

use crate::control_plane::{ControlPlane, ControlPlaneError, Forwarding};
use crate::stream_key::StreamKey;
use crate::streams_file::{self, StreamsFileError, DEFAULT_STREAMS_FILE};

pub enum Authority {
    ControlPlane(ControlPlane),
    StreamsFile(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    #[error(transparent)]
    StreamsFile(#[from] StreamsFileError),
}

/// Which of the two the settings select.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice<'a> {
    ControlPlane(&'a str),
    StreamsFile(PathBuf),
}

/// Picks the Control Plane when `CONTROL_PLANE_URL` is set (and not empty), the streams file
/// otherwise (`NEUSTREAM_STREAMS_FILE`, or the default). Both at once is a configuration error
/// that says which to remove: a streams file named in the settings, or the default file when
/// it exists.
pub fn choose<'a>(
    control_plane_url: Option<&'a str>,
    streams_file: Option<&Path>,
    default_file_exists: bool,
) -> Result<Choice<'a>, String> {
    let url = control_plane_url.filter(|u| !u.trim().is_empty());
    match (url, streams_file) {
        (Some(_), Some(file)) => Err(format!(
            "both CONTROL_PLANE_URL and NEUSTREAM_STREAMS_FILE ({}) are set: remove \
             NEUSTREAM_STREAMS_FILE to take keys from the Control Plane, or CONTROL_PLANE_URL to \
             take them from the streams file",
            file.display()
        )),
        (Some(_), None) if default_file_exists => Err(format!(
            "CONTROL_PLANE_URL is set and the streams file {DEFAULT_STREAMS_FILE} exists: remove \
             (or rename) {DEFAULT_STREAMS_FILE} to take keys from the Control Plane, or remove \
             CONTROL_PLANE_URL to take them from the streams file"
        )),
        (Some(url), None) => Ok(Choice::ControlPlane(url)),
        (None, file) => Ok(Choice::StreamsFile(
            file.map_or_else(|| PathBuf::from(DEFAULT_STREAMS_FILE), Path::to_path_buf),
        )),
    }
}

impl Authority {
    /// The authority the settings name; a configuration error (text for the operator) if they
    /// name both or a Control Plane URL that cannot be used.
    pub fn new(
        control_plane_url: Option<&str>,
        token: Option<&str>,
        allow_insecure: bool,
        streams_file: Option<&Path>,
    ) -> Result<Self, String> {
        let default_exists = Path::new(DEFAULT_STREAMS_FILE).exists();
        match choose(control_plane_url, streams_file, default_exists)? {
            Choice::ControlPlane(url) => ControlPlane::new(url, token, allow_insecure)
                .map(Authority::ControlPlane)
                .map_err(|e| e.to_string()),
            Choice::StreamsFile(path) => Ok(Authority::StreamsFile(path)),
        }
    }

    /// Accepts the key, or says why not. The streams file is read at every call, so that edits
    /// apply to the next publish without a restart; a file that cannot be read or is invalid
    /// refuses every key.
    pub async fn authenticate(
        &self,
        key: &StreamKey,
        budget: Duration,
    ) -> Result<(), AuthorityError> {
        match self {
            Authority::ControlPlane(cp) => Ok(cp.authenticate(key, budget).await?),
            Authority::StreamsFile(path) => {
                lookup(path, key)?;
                Ok(())
            }
        }
    }

    /// The key's destinations, unvalidated (the caller validates both kinds alike).
    pub async fn forwarding(
        &self,
        key: &StreamKey,
        budget: Duration,
    ) -> Result<Forwarding, AuthorityError> {
        match self {
            Authority::ControlPlane(cp) => Ok(cp.forwarding(key, budget).await?),
            Authority::StreamsFile(path) => {
                let stream = lookup(path, key)?;
                Ok(Forwarding {
                    source_name: stream.name.clone(),
                    destinations: stream.forwarding_entries(),
                })
            }
        }
    }

    /// Records the end of the stream: reported to the Control Plane, or logged in standalone
    /// mode (nobody else to tell).
    pub async fn stream_end(
        &self,
        key: &StreamKey,
        budget: Duration,
    ) -> Result<(), AuthorityError> {
        match self {
            Authority::ControlPlane(cp) => {
                cp.stream_end(key, budget).await?;
                info!(stream_key = %key, "{key}: stream end reported");
            }
            Authority::StreamsFile(_) => {
                info!(stream_key = %key, "{key}: stream ended (standalone mode, nothing to report)")
            }
        }
        Ok(())
    }
}

fn lookup(path: &Path, key: &StreamKey) -> Result<streams_file::Stream, StreamsFileError> {
    let file = streams_file::load(path)?;
    file.find(key)
        .cloned()
        .ok_or_else(|| StreamsFileError::UnknownKey {
            key: key.to_string(),
            path: path.display().to_string(),
        })
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authority::ControlPlane(_) => f.write_str("the Control Plane"),
            Authority::StreamsFile(path) => write!(f, "the streams file {}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn control_plane_url_selects_the_control_plane() {
        assert_eq!(
            choose(Some("https://cp"), None, false),
            Ok(Choice::ControlPlane("https://cp"))
        );
    }

    #[test]
    fn without_url_the_streams_file_is_used() {
        let default = PathBuf::from(DEFAULT_STREAMS_FILE);
        assert_eq!(
            choose(None, None, false),
            Ok(Choice::StreamsFile(default.clone()))
        );
        assert_eq!(
            choose(Some(" "), None, true),
            Ok(Choice::StreamsFile(default))
        );
        assert_eq!(
            choose(None, Some(Path::new("/srv/s.toml")), true),
            Ok(Choice::StreamsFile("/srv/s.toml".into()))
        );
    }

    #[test]
    fn both_is_an_error_saying_which_to_remove() {
        let err = choose(Some("https://cp"), Some(Path::new("/srv/s.toml")), false).unwrap_err();
        assert!(err.contains("/srv/s.toml"), "{err}");
        assert!(err.contains("remove NEUSTREAM_STREAMS_FILE"), "{err}");
        assert!(err.contains("or CONTROL_PLANE_URL"), "{err}");
        let err = choose(Some("https://cp"), None, true).unwrap_err();
        assert!(
            err.contains("remove (or rename) /etc/neustream/streams.toml"),
            "{err}"
        );
        assert!(err.contains("or remove CONTROL_PLANE_URL"), "{err}");
    }

    /// A 0640 file in a directory of its own, removed on drop.
    struct TempFile(PathBuf);
    impl TempFile {
        fn new(name: &str, text: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("neustream-authority-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("streams.toml");
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            TempFile(path)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn the_streams_file_answers_like_the_control_plane() {
        let file = TempFile::new(
            "answers",
            "[[stream]]\nkey = \"cam\"\nname = \"Cam\"\n[[stream.destination]]\n\
             platform = \"custom\"\nrtmp_url = \"rtmp://h/app\"\nstream_key = \"s\"\n\
             [[stream]]\nkey = \"quiet\"\n",
        );
        let auth = Authority::StreamsFile(file.0.clone());
        let t = Duration::from_secs(1);
        let cam = StreamKey::parse("cam").unwrap();
        block_on(auth.authenticate(&cam, t)).unwrap();
        let fw = block_on(auth.forwarding(&cam, t)).unwrap();
        assert_eq!(fw.source_name.as_deref(), Some("Cam"));
        assert_eq!(fw.destinations.len(), 1);
        let quiet = StreamKey::parse("quiet").unwrap();
        assert!(block_on(auth.forwarding(&quiet, t))
            .unwrap()
            .destinations
            .is_empty());
        block_on(auth.stream_end(&cam, t)).unwrap();

        let other = StreamKey::parse("other").unwrap();
        let err = block_on(auth.authenticate(&other, t)).unwrap_err();
        assert!(
            matches!(
                err,
                AuthorityError::StreamsFile(StreamsFileError::UnknownKey { .. })
            ),
            "{err}"
        );
        assert_eq!(
            auth.to_string(),
            format!("the streams file {}", file.0.display())
        );
    }

    #[test]
    fn edits_apply_to_the_next_publish_and_a_broken_file_refuses_everyone() {
        let file = TempFile::new("edits", "[[stream]]\nkey = \"a\"\n");
        let auth = Authority::StreamsFile(file.0.clone());
        let t = Duration::from_secs(1);
        let (a, b) = (
            StreamKey::parse("a").unwrap(),
            StreamKey::parse("b").unwrap(),
        );
        block_on(auth.authenticate(&a, t)).unwrap();
        assert!(block_on(auth.authenticate(&b, t)).is_err());
        std::fs::write(
            &file.0,
            "[[stream]]\nkey = \"a\"\n[[stream]]\nkey = \"b\"\n",
        )
        .unwrap();
        block_on(auth.authenticate(&b, t)).unwrap();
        std::fs::write(&file.0, "[[stream]]\nkey = \"a\"\n[[stream]\nkey = \"b\"\n").unwrap();
        for k in [&a, &b] {
            let err = block_on(auth.authenticate(k, t)).unwrap_err().to_string();
            assert!(err.contains("line 3"), "{err}");
        }
    }
}
