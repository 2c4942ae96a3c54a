//! `neustream relay-reload KEY`: ExecReload=+ of neustream-relay@.service (run by systemd as
//! root, outside the relay's sandbox). Reads the stream's env file, which the sandboxed relay
//! cannot, and hands it to the running relay over its control socket: a new publisher to
//! read, destinations to add, remove or change, without restarting anything else.

use anyhow::Context;
use tracing::info;

use super::ConfigError;
use crate::cli::RelayReloadArgs;
use crate::config;
use crate::envfile::{self, StreamSpec};
use crate::relay::control;
use crate::stream_key::StreamKey;

pub fn run(args: RelayReloadArgs) -> anyhow::Result<()> {
    let key = StreamKey::parse(&args.key)
        .map_err(|e| ConfigError(format!("relay-reload: stream key '{}': {e}", args.key)))?;
    let path = args.runtime_dir.join(format!("{key}.env"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{key}: failed to read {}", path.display()))?;
    let spec = envfile::parse(&text)
        .and_then(|v| StreamSpec::from_vars(&v))
        .map_err(|e| ConfigError(format!("{key}: {}: {e}", path.display())))?;
    if spec.key != key {
        return Err(ConfigError(format!(
            "{}: describes stream {}, not {key}",
            path.display(),
            spec.key
        ))
        .into());
    }
    let dir = config::runtime_directory().unwrap_or_else(|| {
        std::path::PathBuf::from("/run/neustream/relays").join(crate::systemd::escape(key.as_str()))
    });
    let socket = dir.join(control::SOCKET);
    let answer = super::runtime()?.block_on(control::send(&socket, &text))?;
    info!(stream_key = %key, "{key}: relay reloaded (publisher {}): {answer}", spec.source_id);
    Ok(())
}
