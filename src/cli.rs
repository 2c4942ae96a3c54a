//! Command line: every setting is a flag with an environment variable of the same meaning.
//! Variables come from the process environment or the settings file (`--config`).

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{parse_duration, parse_grace, DEFAULT_SETTINGS_FILE};
use crate::streams_file::DEFAULT_STREAMS_FILE;

#[derive(Parser, Debug)]
#[command(
    name = "neustream",
    version,
    about = "Neustream media server: MediaMTX hooks and the systemd-supervised ffmpeg relay",
    long_about = "Neustream media server: authenticates publishers against the Neustream Control \
Plane (CONTROL_PLANE_URL) or, without it, against the streams file (NEUSTREAM_STREAMS_FILE, \
default /etc/neustream/streams.toml), and fans each live stream out to its RTMP(S) \
destinations.\n\n\
MediaMTX runs `neustream ready` when a stream is published (runOnAvailable; runOnReady \
before MediaMTX 1.19.3) and `neustream unpublish` when it ends (runOnUnavailable, runOnNotReady). `ready` writes the stream's destinations to \
/run/neustream/streams/<key>.env and starts neustream-relay@<key>.service over D-Bus; that \
unit runs `neustream relay <key>`, one ffmpeg copying the stream to every destination.\n\n\
Every session the Control Plane accepted is recorded in /var/lib/neustream/sessions/<key>.json \
until the Control Plane confirms its end; `neustream reconcile` (neustream-reconcile.timer, and \
mediamtx.service when MediaMTX stops or starts) ends sessions whose publisher is gone and sends \
every pending stream-end."
)]
pub struct Cli {
    /// Settings file of KEY=VALUE lines, read before the variables below; variables already set
    /// in the environment win. A missing default file is fine, a missing named file is an error.
    #[arg(long, global = true, env = "NEUSTREAM_CONFIG", value_name = "FILE",
          default_value = DEFAULT_SETTINGS_FILE)]
    pub config: PathBuf,

    /// Log level: error, warn, info, debug or trace.
    #[arg(
        long,
        global = true,
        env = "NEUSTREAM_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: tracing::Level,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// MediaMTX runOnAvailable (runOnReady): authenticate the stream key, write its destinations and start its
    /// relay unit. Rejected keys are kicked through MediaMTX's Control API.
    Ready(HookArgs),
    /// MediaMTX runOnUnavailable (runOnNotReady): stop the stream's relay unit, remove its env file and report the
    /// end of the stream to the Control Plane.
    Unpublish(HookArgs),
    /// End every recorded session whose publisher is gone and send every pending stream-end
    /// (neustream-reconcile.service, run every minute by neustream-reconcile.timer, and by
    /// mediamtx.service when MediaMTX stops and starts). Idempotent; safe at any time.
    Reconcile(ReconcileArgs),
    /// ExecStart of neustream-relay@.service: copy the stream to every destination listed in the
    /// unit's environment (NEUSTREAM_SOURCE_URL, NEUSTREAM_DEST_<i>_RTMP_URL, ...).
    Relay(RelayArgs),
    /// Every relay on this node (or one stream's): its state and destinations, and the CPU and
    /// memory systemd accounts to its unit. Any local user; no secrets. Exit status: 0 every
    /// destination live, 1 any not, 2 cannot tell.
    Status(StatusArgs),
    /// ExecStart of neustream-metrics.service: serve GET /metrics (Prometheus text format) on
    /// the socket systemd passes, or on --listen; --once prints one scrape.
    Metrics(MetricsArgs),
    /// Fetch the destinations of live streams again and apply what changed to their running
    /// relays (neustream-refresh.timer; by hand for one KEY).
    Refresh(RefreshArgs),
    /// ExecReload=+ of neustream-relay@.service (as root): hand the stream's env file to its
    /// running relay (a new publisher, changed destinations) over the relay's control socket.
    RelayReload(RelayReloadArgs),
    /// Standalone mode's streams file (stream keys and their destinations, without the Control
    /// Plane).
    #[command(subcommand)]
    Streams(StreamsCommand),
    /// Print shell completions for neustream to standard output.
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
    /// Print the neustream(1) man page (roff) to standard output.
    Manpage,
}

impl Command {
    /// SYSLOG_IDENTIFIER of the journal lines this subcommand writes.
    pub fn log_identifier(&self) -> &'static str {
        match self {
            Command::Relay(_) | Command::RelayReload(_) => "neustream-relay",
            _ => "neustream",
        }
    }

    /// The hook this subcommand is, for its run's report to the metrics exporter
    /// (`crate::hook_report`); `None` for the others.
    pub fn hook_name(&self) -> Option<&'static str> {
        match self {
            Command::Ready(_) => Some("ready"),
            Command::Unpublish(_) => Some("unpublish"),
            Command::Reconcile(_) => Some("reconcile"),
            Command::Refresh(_) => Some("refresh"),
            _ => None,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum StreamsCommand {
    /// Check a streams file as the hooks would read it (permissions included) and print what
    /// each key would relay to, keys redacted. Exit status 78 if the file is refused.
    Check {
        /// The streams file.
        #[arg(env = "NEUSTREAM_STREAMS_FILE", value_name = "FILE",
              default_value = DEFAULT_STREAMS_FILE)]
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct HookArgs {
    /// MediaMTX path of the stream, e.g. live/<stream key>; its last segment is the key.
    #[arg(env = "MTX_PATH", value_name = "PATH")]
    pub path: String,

    /// How the publisher is connected (rtmpConn, rtspSession, srtConn, webRTCSession...), set by
    /// MediaMTX; selects the Control API endpoint that kicks it.
    #[arg(long, env = "MTX_SOURCE_TYPE", default_value = "")]
    pub source_type: String,

    /// The publisher's connection id, set by MediaMTX; recorded so that a late unpublish of an
    /// old connection leaves a newer one alone.
    #[arg(long, env = "MTX_SOURCE_ID", default_value = "")]
    pub source_id: String,

    #[command(flatten)]
    pub settings: HookSettings,
}

#[derive(Args, Debug, Clone)]
pub struct HookSettings {
    /// Base URL of the Neustream Control Plane, e.g. https://api.neustream.app. Unset: keys
    /// and destinations come from the streams file (standalone mode).
    #[arg(long, env = "CONTROL_PLANE_URL", value_name = "URL")]
    pub control_plane_url: Option<String>,

    /// Standalone mode (no CONTROL_PLANE_URL): the TOML file of stream keys and destinations,
    /// read at every publish [default: /etc/neustream/streams.toml]. It must not be readable by
    /// other users (install it root:mediamtx 0640). Setting it together with CONTROL_PLANE_URL
    /// is an error.
    #[arg(long, env = "NEUSTREAM_STREAMS_FILE", value_name = "FILE")]
    pub streams_file: Option<PathBuf>,

    /// Bearer token sent to the Control Plane, for deployments that put one in front of it.
    #[arg(
        long,
        env = "CONTROL_PLANE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub control_plane_token: Option<String>,

    /// Allow a plain-http Control Plane URL on a non-loopback host (tokens and keys then cross
    /// the network in clear).
    #[arg(long, env = "NEUSTREAM_ALLOW_INSECURE_CONTROL_PLANE", default_value = "false",
          value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub allow_insecure_control_plane: bool,

    /// Where the relay reads the stream: this URL + "/" + the MediaMTX path.
    #[arg(
        long,
        env = "NEUSTREAM_INGEST_URL",
        default_value = "rtmp://127.0.0.1:1935",
        value_name = "URL"
    )]
    pub ingest_url: String,

    /// MediaMTX Control API, e.g. http://127.0.0.1:9997; used to kick rejected publishers,
    /// and by `reconcile` to tell which streams have a publisher. Unset: rejected publishers
    /// are only refused a relay, not disconnected.
    #[arg(long, env = "NEUSTREAM_MEDIAMTX_API_URL", value_name = "URL")]
    pub mediamtx_api_url: Option<String>,

    /// Directory of the per-stream env files (created 0700; the files are 0600).
    #[arg(
        long,
        env = "NEUSTREAM_RUNTIME_DIR",
        default_value = "/run/neustream/streams",
        value_name = "DIR"
    )]
    pub runtime_dir: PathBuf,

    /// Directory of the durable session records (sessions/<key>.json): every session the
    /// Control Plane accepted and has not yet confirmed ended. Survives reboots.
    #[arg(
        long,
        env = "NEUSTREAM_STATE_DIR",
        default_value = "/var/lib/neustream",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,

    /// Time allowed for authenticating a key, retries included (e.g. 5s, 1500ms).
    #[arg(long, env = "NEUSTREAM_AUTH_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub auth_timeout: Duration,

    /// Time allowed for fetching a stream's destinations, retries included.
    #[arg(long, env = "NEUSTREAM_FORWARDING_TIMEOUT", default_value = "5s",
          value_parser = parse_duration)]
    pub forwarding_timeout: Duration,

    /// Time allowed for reporting the end of a stream, retries with backoff included; a
    /// stream-end not confirmed by then stays queued for `neustream reconcile`.
    #[arg(long, env = "NEUSTREAM_STREAM_END_TIMEOUT", default_value = "30s",
          value_parser = parse_duration)]
    pub stream_end_timeout: Duration,

    /// How long a stream's destinations stay connected (last picture, silence) after its
    /// publisher is gone, for it to come back (OBS reconnecting): no stream end is reported
    /// then, and no destination reconnects. 0 turns it off.
    #[arg(long, env = "NEUSTREAM_RECONNECT_GRACE", default_value = "30s", value_parser = parse_grace)]
    pub reconnect_grace: Duration,

    /// Time allowed for systemd to start or stop a relay unit; above the unit's
    /// TimeoutStartSec=25 (a relay is started once it reads the publisher's next keyframe) and
    /// TimeoutStopSec=10, so that systemd's own verdict is always reported.
    #[arg(long, env = "NEUSTREAM_UNIT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub unit_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct RefreshArgs {
    /// One stream key, refreshed now; without it, every live stream whose destinations were
    /// not checked for NEUSTREAM_REFRESH_INTERVAL.
    #[arg(value_name = "KEY")]
    pub key: Option<String>,

    /// How often the timer's run checks a live stream's destinations (e.g. 60s); 0 turns the
    /// timer's checks off (`refresh KEY` still works).
    #[arg(long, env = "NEUSTREAM_REFRESH_INTERVAL", default_value = "60s", value_parser = parse_grace)]
    pub interval: Duration,

    #[command(flatten)]
    pub settings: HookSettings,
}

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    /// Run by MediaMTX's own unit (its ExecStopPost= and ExecStartPre=): MediaMTX is not
    /// running. Sessions it carried whose relay does not run end at once (they would anyway:
    /// their unit is not active); with SERVICE_RESULT=success (stopped on purpose) every one of
    /// them ends and its relay is stopped, grace or not. A failure is a publisher drop: a
    /// running relay keeps its session, and ends it when its grace runs out.
    #[arg(long)]
    pub mediamtx_stopped: bool,

    /// How MediaMTX's unit ended, as systemd tells its ExecStopPost= (`success`: stopped on
    /// purpose, every session ends at once even inside a grace; `signal`, `exit-code`,
    /// `oom-kill`, ...: it failed, a crash is a publisher drop).
    #[arg(long, env = "SERVICE_RESULT", value_name = "RESULT")]
    pub service_result: Option<String>,

    /// Longest this run may take; stream-ends still unconfirmed then stay queued for the
    /// next run. Keeps timer runs from piling up.
    #[arg(long, env = "NEUSTREAM_RECONCILE_TIMEOUT", default_value = "30s",
          value_parser = parse_duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub settings: HookSettings,
}

#[derive(Args, Debug)]
pub struct RelayReloadArgs {
    /// Stream key (the unit's instance name, unescaped: %I).
    #[arg(value_name = "KEY")]
    pub key: String,

    /// Directory of the per-stream env files.
    #[arg(
        long,
        env = "NEUSTREAM_RUNTIME_DIR",
        default_value = "/run/neustream/streams",
        value_name = "DIR"
    )]
    pub runtime_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct RelayArgs {
    /// Stream key (the unit's instance name, unescaped: %I).
    #[arg(value_name = "KEY")]
    pub key: String,

    /// ffmpeg binary (a name looked up in PATH, or a path).
    #[arg(
        long,
        env = "NEUSTREAM_FFMPEG",
        default_value = "ffmpeg",
        value_name = "PATH"
    )]
    pub ffmpeg: PathBuf,

    /// The RTMP client: `native` (the relay reads the ingest and publishes to every
    /// destination itself: one process per stream, 4096-byte chunks, Enhanced RTMP codecs) or
    /// `ffmpeg` (one ffmpeg reads the ingest and one per destination publishes, as relay v2
    /// did: the fallback for a platform that disagrees with the native client; H.264/AAC only).
    #[arg(
        long,
        env = "NEUSTREAM_RTMP_ENGINE",
        default_value = "native",
        value_enum,
        value_name = "ENGINE"
    )]
    pub rtmp_engine: RtmpEngine,

    /// What platforms take where the built-in table is not right for you, e.g.
    /// `twitch=h264,hevc,aac;kick=any` (codecs: h264 hevc av1 vp9 aac mp3 opus ac3 eac3 flac, or
    /// `any`). Built in: youtube h264,hevc,av1 with aac,mp3; twitch, facebook, kick h264 with
    /// aac; anything else takes anything. A destination that cannot take the stream's codecs is
    /// not pushed (state `incompatible`).
    #[arg(long, env = "NEUSTREAM_PLATFORM_CODECS", value_name = "LIST")]
    pub platform_codecs: Option<String>,

    /// Time a destination gets to close its publish cleanly (FCUnpublish, deleteStream), and
    /// ffmpeg to stop, before it is cut off.
    #[arg(long, env = "NEUSTREAM_STOP_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub stop_timeout: Duration,

    /// Verify the TLS certificate (and host name) of rtmps:// destinations. Turning this off
    /// hands their stream keys to anyone who can redirect their traffic; a warning says so at
    /// every start.
    #[arg(long, env = "NEUSTREAM_TLS_VERIFY", default_value = "true",
          value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub tls_verify: bool,

    /// CA bundle that rtmps:// destinations' certificates are verified against.
    #[arg(
        long,
        env = "NEUSTREAM_CA_FILE",
        default_value = "/etc/ssl/certs/ca-certificates.crt",
        value_name = "FILE"
    )]
    pub ca_file: PathBuf,

    /// How long destinations stay connected (last picture, silence) after the publisher is
    /// gone, for it to come back; 0: the relay ends with its source. Written into the stream's
    /// env file by `ready` from its own setting, so hooks and relay agree.
    #[arg(long, env = "NEUSTREAM_RECONNECT_GRACE", default_value = "30s", value_parser = parse_grace)]
    pub reconnect_grace: Duration,

    /// Directory of the relay's state file (state.json) and control socket; default: the
    /// unit's runtime directory ($RUNTIME_DIRECTORY).
    #[arg(long, env = "NEUSTREAM_RELAY_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `NEUSTREAM_RTMP_ENGINE`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtmpEngine {
    Native,
    Ffmpeg,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only this stream: its key (as the unit names it), its unit instance or its id.
    #[arg(value_name = "KEY")]
    pub stream: Option<String>,

    /// Print JSON (one object: every relay, with its destinations and systemd's accounting).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub view: ViewArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RelaysDirArg {
    /// Directory of the relays' runtime directories (each holding a state.json).
    #[arg(
        long,
        env = "NEUSTREAM_RELAYS_DIR",
        default_value = "/run/neustream/relays",
        value_name = "DIR"
    )]
    pub relays_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct ViewArgs {
    #[command(flatten)]
    pub relays: RelaysDirArg,

    /// Time allowed for systemd to answer over D-Bus.
    #[arg(long, env = "NEUSTREAM_SYSTEMD_TIMEOUT", default_value = "2s",
          value_parser = parse_duration)]
    pub systemd_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// Address to listen on when systemd did not pass a socket (neustream-metrics.socket
    /// sets the address in production).
    #[arg(
        long,
        env = "NEUSTREAM_METRICS_LISTEN",
        default_value = "127.0.0.1:9431",
        value_name = "ADDR:PORT"
    )]
    pub listen: std::net::SocketAddr,

    /// What the `stream` label holds: `id`, a digest of the ingest key (16 hex digits, shown by
    /// `neustream status`), or `key`, the ingest key itself.
    #[arg(
        long,
        env = "NEUSTREAM_METRICS_STREAM_LABEL",
        value_enum,
        default_value = "id"
    )]
    pub stream_label: crate::operator::StreamLabel,

    /// Print one scrape to standard output and exit (e.g. for node_exporter's textfile
    /// collector).
    #[arg(long)]
    pub once: bool,

    #[command(flatten)]
    pub view: ViewArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
