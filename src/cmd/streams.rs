//! `neustream streams check [FILE]`: the streams file as the hooks would read it.

use std::fmt::Write as _;
use std::path::Path;

use super::ConfigError;
use crate::cli::StreamsCommand;
use crate::streams_file::{self, StreamsFile};

pub fn run(command: StreamsCommand) -> anyhow::Result<()> {
    match command {
        StreamsCommand::Check { file } => {
            let streams = streams_file::load(&file).map_err(|e| ConfigError(e.to_string()))?;
            print!("{}", describe(&file, &streams));
            Ok(())
        }
    }
}

/// What each key would relay to, with every key (stream and destination) redacted.
fn describe(path: &Path, file: &StreamsFile) -> String {
    let mut out = format!(
        "{}: valid, {} stream(s)\n",
        path.display(),
        file.streams.len()
    );
    for stream in &file.streams {
        let name = stream
            .name
            .as_deref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default();
        let _ = write!(
            out,
            "line {}: {}{name}: ",
            stream.line,
            stream.redacted_key()
        );
        if stream.destinations.is_empty() {
            out.push_str("no destination (accepted, not relayed)\n");
            continue;
        }
        let _ = writeln!(out, "{} destination(s)", stream.destinations.len());
        for (index, dest) in stream.destinations.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {index}: {} {}",
                dest.parsed.platform(),
                dest.parsed.redacted()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_every_stream_without_any_key() {
        let text = "[[stream]]\nkey = \"obs-key-1\"\nname = \"Main\"\n[[stream.destination]]\n\
                    platform = \"youtube\"\nrtmp_url = \"rtmp://a.rtmp.youtube.com/live2\"\n\
                    stream_key = \"yt-secret\"\n[[stream.destination]]\n\
                    rtmp_url = \"rtmps://h:443/app?token=q-secret\"\nstream_key = \"c-secret\"\n\
                    [[stream]]\nkey_sha256 = \"5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\"\n";
        let file = streams_file::parse("s.toml", text).unwrap();
        let out = describe(Path::new("s.toml"), &file);
        assert_eq!(
            out,
            "s.toml: valid, 2 stream(s)\n\
             line 1: key <redacted, 9 characters> \"Main\": 2 destination(s)\n\
             \x20 0: youtube rtmp://a.rtmp.youtube.com/live2/<redacted>\n\
             \x20 1: unknown rtmps://h:443/app/<redacted>\n\
             line 11: key_sha256 5e884898da28…: no destination (accepted, not relayed)\n"
        );
        for secret in ["obs-key-1", "yt-secret", "q-secret", "c-secret"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
    }
}
