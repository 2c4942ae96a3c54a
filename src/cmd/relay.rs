//! `neustream relay KEY`: ExecStart of neustream-relay@.service. Reads the stream's
//! description from the environment (the unit's EnvironmentFile=) and runs the relay
//! supervisor (`crate::relay`) until the source ends or systemd stops it.

use tracing::{info, warn};

use super::ConfigError;
use crate::cli::{RelayArgs, RtmpEngine};
use crate::config;
use crate::envfile::StreamSpec;
use crate::platforms;
use crate::relay::{self, ffmpeg::Tls, Outcome};

pub fn run(args: RelayArgs) -> anyhow::Result<()> {
    let spec = StreamSpec::from_vars(&config::stream_vars()).map_err(|e| {
        ConfigError(format!(
            "no usable stream description in the environment: {e} (the unit reads it from \
             /run/neustream/streams/{}.env, written by `neustream ready`)",
            args.key
        ))
    })?;
    if spec.key.as_str() != args.key {
        return Err(ConfigError(format!(
            "the environment describes stream {} but this relay is for {}",
            spec.key, args.key
        ))
        .into());
    }
    if spec.destinations.is_empty() {
        return Err(ConfigError(format!("stream {} has no destinations", spec.key)).into());
    }
    let tls = tls(&args, &spec)?;
    for (index, d) in spec.destinations.iter().enumerate() {
        info!(
            stream_key = %spec.key,
            destination_index = index,
            destination_platform = d.platform(),
            "{}: relaying to destination {index} ({}) {}",
            spec.key,
            d.platform(),
            d.redacted()
        );
    }
    let engine = match args.rtmp_engine {
        RtmpEngine::Native => relay::Engine::Native,
        RtmpEngine::Ffmpeg => relay::Engine::Ffmpeg,
    };
    if engine == relay::Engine::Ffmpeg {
        info!(
            stream_key = %spec.key,
            "{}: NEUSTREAM_RTMP_ENGINE=ffmpeg: one ffmpeg reads the ingest and one per \
             destination publishes (H.264/AAC only)",
            spec.key
        );
    }
    let platform_codecs = match &args.platform_codecs {
        Some(text) => platforms::parse_overrides(text)
            .map_err(|e| ConfigError(format!("NEUSTREAM_PLATFORM_CODECS: {e}")))?,
        None => Vec::new(),
    };
    let settings = relay::Settings {
        engine,
        platform_codecs,
        ffmpeg: args.ffmpeg.clone(),
        stop_timeout: args.stop_timeout,
        tls,
        state_dir: args.state_dir.clone().or_else(config::runtime_directory),
        grace: args.reconnect_grace,
    };
    let key = spec.key.clone();
    match super::runtime()?.block_on(relay::run(spec, settings))? {
        Outcome::SourceEnded => {
            info!(stream_key = %key, "{key}: the source stream ended; relay done")
        }
        Outcome::GraceExpired => {
            info!(stream_key = %key, "{key}: no publisher came back; relay done")
        }
        Outcome::Stopped(signal) => info!(stream_key = %key, "{key}: relay stopped on {signal}"),
    }
    Ok(())
}

/// How `rtmps://` destinations are checked, with a warning at every start when not at all.
fn tls(args: &RelayArgs, spec: &StreamSpec) -> anyhow::Result<Tls> {
    let secure: Vec<String> = spec
        .destinations
        .iter()
        .enumerate()
        .filter(|(_, d)| d.public_url().starts_with("rtmps://"))
        .map(|(i, d)| format!("{i} ({})", d.platform()))
        .collect();
    if !args.tls_verify {
        warn!(
            stream_key = %spec.key,
            "{}: NEUSTREAM_TLS_VERIFY=false: the TLS certificates of rtmps:// destinations \
             are NOT verified; anyone who can redirect their traffic gets their stream keys{}",
            spec.key,
            if secure.is_empty() { String::new() } else { format!(" (destinations {})", secure.join(", ")) }
        );
        return Ok(Tls::Off);
    }
    let ca = args.ca_file.to_string_lossy().into_owned();
    if ca.is_empty()
        || ca.chars().any(char::is_control)
        || ca.len() + "ca_file=".len() > relay::ffmpeg::MAX_PRESET_LINE
    {
        return Err(ConfigError(format!(
            "NEUSTREAM_CA_FILE must be a path of at most {} bytes without control characters",
            relay::ffmpeg::MAX_PRESET_LINE - "ca_file=".len()
        ))
        .into());
    }
    if !secure.is_empty() && !relay::ffmpeg::ca_file_readable(&ca) {
        warn!(
            stream_key = %spec.key,
            "{}: CA file {ca} cannot be read: certificate verification of destinations {} \
             will fail and they will not be relayed",
            spec.key,
            secure.join(", ")
        );
    }
    Ok(Tls::Verify(ca))
}
