//! Stream keys: the last segment of the MediaMTX path, e.g. `live/<key>`.

use std::fmt;

pub const MAX_LEN: usize = 128;

/// A validated stream key: 1 to 128 of `[A-Za-z0-9_-]` (production keys are 48 hex chars).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKey(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("stream path '{0}' has no stream key (expected live/<key>)")]
    Empty(String),
    #[error("stream key is {0} characters long; at most {MAX_LEN} are allowed")]
    TooLong(usize),
    #[error("stream key contains {0:?}; only A-Z, a-z, 0-9, '_' and '-' are allowed")]
    BadChar(char),
}

impl StreamKey {
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty(key.into()));
        }
        if key.len() > MAX_LEN {
            return Err(KeyError::TooLong(key.chars().count()));
        }
        if let Some(c) = key
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(KeyError::BadChar(c));
        }
        Ok(StreamKey(key.to_owned()))
    }

    /// The key of a MediaMTX path: its last segment (`live/abc` → `abc`).
    pub fn from_path(path: &str) -> Result<Self, KeyError> {
        let last = path.rsplit('/').next().unwrap_or("");
        if last.is_empty() {
            return Err(KeyError::Empty(path.chars().take(200).collect()));
        }
        Self::parse(last)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_paths() {
        let hex = "0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            StreamKey::from_path(&format!("live/{hex}"))
                .unwrap()
                .as_str(),
            hex
        );
        assert_eq!(
            StreamKey::from_path("live/a-b_C9").unwrap().as_str(),
            "a-b_C9"
        );
        assert_eq!(StreamKey::from_path("abc").unwrap().as_str(), "abc");
    }

    #[test]
    fn bad_keys_say_why() {
        assert!(matches!(
            StreamKey::from_path("live/"),
            Err(KeyError::Empty(_))
        ));
        assert!(matches!(StreamKey::from_path(""), Err(KeyError::Empty(_))));
        assert!(matches!(
            StreamKey::from_path("live/abc/"),
            Err(KeyError::Empty(_))
        ));
        assert_eq!(StreamKey::parse("a.b"), Err(KeyError::BadChar('.')));
        assert_eq!(StreamKey::parse("a b"), Err(KeyError::BadChar(' ')));
        assert_eq!(StreamKey::parse("a%2e"), Err(KeyError::BadChar('%')));
        assert_eq!(StreamKey::parse("ké"), Err(KeyError::BadChar('é')));
        assert_eq!(StreamKey::parse("../etc"), Err(KeyError::BadChar('.')));
        assert_eq!(
            StreamKey::parse(&"a".repeat(129)),
            Err(KeyError::TooLong(129))
        );
        assert!(StreamKey::parse(&"a".repeat(128)).is_ok());
        let err = StreamKey::parse("x;rm").unwrap_err().to_string();
        assert!(err.contains("';'"), "{err}");
    }
}
