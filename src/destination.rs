//! Destinations: building push URLs from the Control Plane's answer, validating them, splitting
//! them for ffmpeg, and redacting their stream keys (secrets) from anything shown to people.

use std::fmt;

/// Longest push URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Most destinations relayed for one stream; the rest are dropped with a warning.
pub const MAX_DESTINATIONS: usize = 64;
/// ffmpeg's RTMP client truncates a play path over 511 bytes and an app over 1023.
const MAX_PLAYPATH_LEN: usize = 500;
const MAX_APP_LEN: usize = 500;
const REDACTED: &str = "<redacted>";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DestinationError {
    #[error("push URL is {0} bytes long; at most {MAX_URL_LEN} are allowed")]
    TooLong(usize),
    #[error("push URL contains whitespace, a control character or a non-ASCII character")]
    BadCharacter,
    #[error("URL scheme must be rtmp:// or rtmps://")]
    Scheme,
    #[error("URL has no host")]
    NoHost,
    #[error("URL has an invalid host or port")]
    BadHost,
    #[error("URL carries credentials (user:password@host), which ffmpeg would print")]
    Credentials,
    #[error("URL has no application path (expected rtmp://host/app)")]
    NoApp,
    #[error("stream key is empty")]
    NoKey,
    #[error(
        "stream key is {0} bytes long; ffmpeg's RTMP client allows at most {MAX_PLAYPATH_LEN}"
    )]
    KeyTooLong(usize),
    #[error("application path is {0} bytes long; at most {MAX_APP_LEN} are allowed")]
    AppTooLong(usize),
}

/// `rtmp_url + "/" + stream_key`, with no doubled slash where `rtmp_url` ends with one.
pub fn push_url(rtmp_url: &str, stream_key: &str) -> String {
    format!(
        "{}/{}",
        rtmp_url.trim_end_matches('/'),
        stream_key.trim_start_matches('/')
    )
}

/// A platform name fit for logs and journal fields: lower-case `[a-z0-9_-]`, at most 32 chars.
pub fn platform_name(raw: &str) -> String {
    let name: String = raw
        .trim()
        .chars()
        .take(32)
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            _ => '_',
        })
        .collect();
    if name.is_empty() {
        "unknown".into()
    } else {
        name
    }
}

/// One place a stream is pushed to: a platform name (youtube, twitch, ...), the RTMP server URL
/// (`rtmp_url`: scheme, host, application path) and the destination's stream key. The push URL
/// is `rtmp_url + "/" + stream_key`. The key is a secret: print [`Destination::redacted`].
#[derive(Clone, PartialEq, Eq)]
pub struct Destination {
    platform: String,
    /// `rtmp_url` without trailing slashes, scheme lower-cased.
    server: String,
    /// Byte offset in `server` where the application path starts (after `scheme://authority/`).
    app_start: usize,
    key: String,
    /// What it takes, when its own configuration says (the streams file's `codecs`); else its
    /// platform's.
    codecs: Option<crate::platforms::Accepts>,
}

impl Destination {
    /// From the Control Plane's `rtmp_url` and `stream_key`; validates the whole push URL.
    pub fn from_parts(
        platform: &str,
        rtmp_url: &str,
        stream_key: &str,
    ) -> Result<Self, DestinationError> {
        let server = rtmp_url.trim_end_matches('/');
        let key = stream_key.trim_start_matches('/');
        let push = push_url(server, key);
        if push.len() > MAX_URL_LEN {
            return Err(DestinationError::TooLong(push.len()));
        }
        if push
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            return Err(DestinationError::BadCharacter);
        }
        let scheme_len = if starts_with_ignore_case(server, "rtmp://") {
            "rtmp://".len()
        } else if starts_with_ignore_case(server, "rtmps://") {
            "rtmps://".len()
        } else {
            return Err(DestinationError::Scheme);
        };
        let rest = &server[scheme_len..];
        let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_len];
        if authority.contains('@') {
            return Err(DestinationError::Credentials);
        }
        if authority.is_empty() {
            return Err(DestinationError::NoHost);
        }
        check_host(&server[..scheme_len + authority_len])?;
        let path = &rest[authority_len..];
        if !path.starts_with('/') || path.len() < 2 {
            return Err(DestinationError::NoApp);
        }
        if path.len() - 1 > MAX_APP_LEN {
            return Err(DestinationError::AppTooLong(path.len() - 1));
        }
        if key.is_empty() {
            return Err(DestinationError::NoKey);
        }
        if key.len() > MAX_PLAYPATH_LEN {
            return Err(DestinationError::KeyTooLong(key.len()));
        }
        Ok(Destination {
            platform: platform_name(platform),
            server: format!("{}{}", server[..scheme_len].to_ascii_lowercase(), rest),
            app_start: scheme_len + authority_len + 1,
            key: key.to_owned(),
            codecs: None,
        })
    }

    pub fn platform(&self) -> &str {
        &self.platform
    }

    /// The same destination, taking `codecs` whatever its platform.
    pub fn with_codecs(mut self, codecs: crate::platforms::Accepts) -> Self {
        self.codecs = Some(codecs);
        self
    }

    /// Its own codec list, if it has one.
    pub fn codecs(&self) -> Option<&crate::platforms::Accepts> {
        self.codecs.as_ref()
    }

    /// The server URL (`rtmp_url`), without the key: as stored in the stream's env file.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The whole push URL, key included. Secret.
    pub fn secret_url(&self) -> String {
        push_url(&self.server, &self.key)
    }

    /// The RTMP application path (after the host), query string included.
    pub fn app(&self) -> &str {
        &self.server[self.app_start..]
    }

    /// The RTMP play path: the destination's stream key. Secret.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `scheme://host[:port]/app` without the key or any query string: safe to print and to put
    /// on ffmpeg's command line.
    pub fn public_url(&self) -> &str {
        let end = self.server[self.app_start..]
            .find(['?', '#'])
            .map_or(self.server.len(), |i| self.app_start + i);
        &self.server[..end]
    }

    /// The server's host and TCP port (RTMP's 1935, RTMPS's 443 unless the URL names one).
    pub fn host_port(&self) -> (String, u16) {
        let authority = &self.server[..self.app_start - 1];
        let parsed = url::Url::parse(authority).expect("validated in from_parts");
        let default = if authority.starts_with("rtmps://") {
            443
        } else {
            1935
        };
        let host = parsed.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (host.to_owned(), parsed.port().unwrap_or(default))
    }

    /// The URL as shown in logs: `rtmp://host/app/<redacted>`.
    pub fn redacted(&self) -> String {
        format!("{}/{REDACTED}", self.public_url())
    }

    /// Every string whose appearance in a log line would leak a secret of this destination.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![self.secret_url(), self.key.clone()];
        let hidden = &self.server[self.public_url().len()..];
        if !hidden.is_empty() {
            secrets.push(hidden.to_owned());
        }
        let encoded: Vec<String> = secrets.iter().map(|s| percent_encode(s)).collect();
        secrets.extend(encoded);
        secrets.retain(|s| !s.is_empty());
        secrets
    }
}

/// Never prints the URL: a `{:?}` of a destination in a log line must not leak its key.
impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Destination")
            .field("platform", &self.platform)
            .field("url", &self.redacted())
            .finish()
    }
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn check_host(scheme_and_authority: &str) -> Result<(), DestinationError> {
    // The url crate checks IPv6 literals, ports and host characters; only the host part is
    // given to it, so it cannot normalise or print the key.
    let parsed = url::Url::parse(scheme_and_authority).map_err(|_| DestinationError::BadHost)?;
    match parsed.host_str() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err(DestinationError::NoHost),
    }
}

/// Percent-encoding of everything outside RFC 3986's unreserved set, as RTMP servers print
/// stream names in their URLs and file names.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Replaces every secret of a set of destinations in text meant for people.
#[derive(Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new<'a>(destinations: impl IntoIterator<Item = &'a Destination>) -> Self {
        let mut secrets: Vec<String> = destinations.into_iter().flat_map(|d| d.secrets()).collect();
        // Longest first, so that a URL is replaced whole before its key is.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(platform: &str, server: &str, key: &str) -> Result<Destination, DestinationError> {
        Destination::from_parts(platform, server, key)
    }

    #[test]
    fn hosts_and_ports() {
        let hp = |u: &str| d("x", u, "k").unwrap().host_port();
        assert_eq!(
            hp("rtmp://a.rtmp.youtube.com/live2"),
            ("a.rtmp.youtube.com".into(), 1935)
        );
        assert_eq!(hp("rtmps://fb.com/rtmp/"), ("fb.com".into(), 443));
        assert_eq!(
            hp("RTMP://127.0.0.1:19350/live"),
            ("127.0.0.1".into(), 19350)
        );
        assert_eq!(hp("rtmp://[::1]:1936/live?x=1"), ("::1".into(), 1936));
    }

    #[test]
    fn push_urls_never_double_slashes() {
        assert_eq!(push_url("rtmp://h/live2", "k"), "rtmp://h/live2/k");
        assert_eq!(push_url("rtmp://h/live/", "k"), "rtmp://h/live/k");
        assert_eq!(push_url("rtmp://h/live//", "/k"), "rtmp://h/live/k");
        assert_eq!(
            d("x", "rtmp://h/live/", "k").unwrap().secret_url(),
            "rtmp://h/live/k"
        );
    }

    #[test]
    fn contract_examples_split() {
        let yt = d("youtube", "rtmp://a.rtmp.youtube.com/live2", "xxxx-xxxx").unwrap();
        assert_eq!(yt.app(), "live2");
        assert_eq!(yt.key(), "xxxx-xxxx");
        assert_eq!(yt.public_url(), "rtmp://a.rtmp.youtube.com/live2");
        assert_eq!(yt.redacted(), "rtmp://a.rtmp.youtube.com/live2/<redacted>");
        let fb = d(
            "facebook",
            "rtmps://live-api-s.facebook.com:443/rtmp/",
            "FB-1-2?s_bl=1&a=Ab$c",
        )
        .unwrap();
        assert_eq!(fb.app(), "rtmp");
        assert_eq!(fb.key(), "FB-1-2?s_bl=1&a=Ab$c");
        assert_eq!(fb.public_url(), "rtmps://live-api-s.facebook.com:443/rtmp");
        let deep = d("custom", "rtmp://[::1]:1935/a/b?t=1", "k/with/slash").unwrap();
        assert_eq!(deep.app(), "a/b?t=1");
        assert_eq!(deep.key(), "k/with/slash");
        assert_eq!(deep.public_url(), "rtmp://[::1]:1935/a/b");
        assert!(deep.secrets().contains(&"?t=1".to_string()));
    }

    #[test]
    fn invalid_urls_say_why() {
        use DestinationError::*;
        let e = |server: &str, key: &str| d("x", server, key).unwrap_err();
        assert_eq!(e("http://h/app", "k"), Scheme);
        assert_eq!(e("rtmp:///app", "k"), NoHost);
        assert_eq!(e("rtmp://u:p@h/app", "k"), Credentials);
        assert_eq!(e("rtmp://h/app", "k ey"), BadCharacter);
        assert_eq!(e("rtmp://h/app", "k\ney"), BadCharacter);
        assert_eq!(e("rtmp://h/app", "ké"), BadCharacter);
        assert_eq!(e("rtmp://h", "k"), NoApp);
        assert_eq!(e("rtmp://h/", "k"), NoApp);
        assert_eq!(e("rtmp://h/app", ""), NoKey);
        assert_eq!(e("rtmp://h/app", "/"), NoKey);
        assert_eq!(e("rtmp://h:99999/app", "k"), BadHost);
        assert_eq!(e("rtmp://h/app", &"k".repeat(2100)), TooLong(2113));
        assert_eq!(e("rtmp://h/app", &"k".repeat(501)), KeyTooLong(501));
        assert_eq!(
            e(&format!("rtmp://h/{}", "a".repeat(501)), "k"),
            AppTooLong(501)
        );
        // Errors never quote the URL.
        assert!(!e("rtmp://h/app", "sec ret").to_string().contains("sec"));
    }

    #[test]
    fn scheme_is_normalised_and_platform_sanitised() {
        let x = d("You Tube!", "RTMP://h/app", "k").unwrap();
        assert_eq!(x.secret_url(), "rtmp://h/app/k");
        assert_eq!(x.platform(), "you_tube_");
        assert_eq!(platform_name(""), "unknown");
    }

    #[test]
    fn redaction_hides_keys_in_every_form() {
        let a = d("twitch", "rtmp://live.twitch.tv/app", "live_123_abc").unwrap();
        let b = d("fb", "rtmps://fb.com:443/rtmp", "FB-1?x=ab").unwrap();
        let r = Redactor::new([&a, &b]);
        let line = "push rtmp://live.twitch.tv/app/live_123_abc failed; name=live_123_abc; \
                    nginx: FB-1%3Fx%3Dab; FB-1?x=ab";
        let out = r.redact(line);
        assert!(!out.contains("live_123_abc"), "{out}");
        assert!(!out.contains("FB-1"), "{out}");
        assert!(out.contains("<redacted>"));
        assert!(!format!("{a:?}").contains("live_123_abc"));
    }
}
