#!/usr/bin/env bash
# Installs the Neustream media server on Debian 12 or Ubuntu 24.04 (any systemd Linux with apt):
#
#   sudo ./install.sh                      # build neustream with cargo (Rust >= 1.89)
#   sudo ./install.sh --binary PATH        # or install a neustream binary built elsewhere
#   sudo ./install.sh --uninstall          # remove what it installed; keep /etc/neustream
#
# What it does, in this order, and only what is not already done (running it again upgrades in
# place and changes nothing that is up to date):
#   1. the Debian packages the server needs (ffmpeg, polkitd, dbus, curl, ca-certificates);
#   2. neustream: built from this checkout with cargo, or --binary PATH;
#   3. MediaMTX: --mediamtx PATH, else an existing /usr/local/bin/mediamtx, else the official
#      release tarball of MEDIAMTX_VERSION for this machine's architecture, verified against the
#      release's checksums.sha256 before it is unpacked; if the release cannot be downloaded and
#      `go` is present, built from source (tests/support/build-mediamtx.sh, Go module proxy);
#   4. the units, polkit rule, sysusers and tmpfiles files, the user `mediamtx`;
#   5. configuration in /etc/neustream, never overwritten: mediamtx.yml, neustream.env and, unless
#      a configuration exists (neustream.env setting CONTROL_PLANE_URL), a standalone
#      streams.toml with one stream under a freshly generated key;
#   6. enables and (re)starts mediamtx.service, and prints what to put into OBS (RTMP, SRT and,
#      with a certificate, RTMPS).
# Nothing is installed before everything has been built, downloaded and verified.
#
# Options:
#   --binary PATH      install this neustream binary instead of building one
#   --mediamtx PATH    install this MediaMTX binary (>= 1.19.3)
#   --rtmp-port PORT   RTMP port MediaMTX listens on, on all interfaces (default 1935)
#   --srt-port PORT    SRT port (UDP) MediaMTX listens on, on all interfaces (default 8890)
#   --rtmps-port PORT  RTMPS port, on all interfaces, used with a certificate (default 1936)
#   --rtmps-cert PATH  offer RTMPS with this certificate (PEM, full chain) and
#   --rtmps-key PATH   its private key (PEM): copied to /etc/neustream/tls/rtmps.{crt,key}
#                      (the key root:mediamtx 0640), replaced when they differ; a new
#                      mediamtx.yml gets rtmpEncryption "optional" (an existing one is kept:
#                      set it there). Give them again after a renewal, or copy them there.
#   --api-port PORT    MediaMTX Control API port, on 127.0.0.1 (default 9997)
#   --uninstall        stop and remove what install.sh installed; configuration is kept
# The ports only shape configuration files written by this run; existing ones are kept as they
# are (edit /etc/neustream/mediamtx.yml and neustream.env together).
#
# Environment:
#   NEUSTREAM_MEDIAMTX_BASE_URL  where the release files are downloaded from (default: the
#                                GitHub release of MEDIAMTX_VERSION; a mirror must serve the same
#                                file names, checksums.sha256 included)
set -euo pipefail

MEDIAMTX_VERSION=v1.21.0
MEDIAMTX_BASE_URL=${NEUSTREAM_MEDIAMTX_BASE_URL:-https://github.com/bluenviron/mediamtx/releases/download/$MEDIAMTX_VERSION}
MIN_RUST=1.89
PACKAGES=(ffmpeg polkitd dbus curl ca-certificates)

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN_DIR=/usr/local/bin
UNIT_DIR=/etc/systemd/system
CONF_DIR=/etc/neustream
STATE_DIR=/var/lib/neustream
MANIFEST=$STATE_DIR/installed-files

log() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

binary=""
mediamtx=""
rtmp_port=1935
srt_port=8890
rtmps_port=1936
rtmps_cert=""
rtmps_key=""
api_port=9997
uninstall=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --binary) [[ $# -ge 2 ]] || die "--binary needs a path"; binary=$2; shift 2 ;;
    --binary=*) binary=${1#*=}; shift ;;
    --mediamtx) [[ $# -ge 2 ]] || die "--mediamtx needs a path"; mediamtx=$2; shift 2 ;;
    --mediamtx=*) mediamtx=${1#*=}; shift ;;
    --rtmp-port) [[ $# -ge 2 ]] || die "--rtmp-port needs a number"; rtmp_port=$2; shift 2 ;;
    --rtmp-port=*) rtmp_port=${1#*=}; shift ;;
    --srt-port) [[ $# -ge 2 ]] || die "--srt-port needs a number"; srt_port=$2; shift 2 ;;
    --srt-port=*) srt_port=${1#*=}; shift ;;
    --rtmps-port) [[ $# -ge 2 ]] || die "--rtmps-port needs a number"; rtmps_port=$2; shift 2 ;;
    --rtmps-port=*) rtmps_port=${1#*=}; shift ;;
    --rtmps-cert) [[ $# -ge 2 ]] || die "--rtmps-cert needs a path"; rtmps_cert=$2; shift 2 ;;
    --rtmps-cert=*) rtmps_cert=${1#*=}; shift ;;
    --rtmps-key) [[ $# -ge 2 ]] || die "--rtmps-key needs a path"; rtmps_key=$2; shift 2 ;;
    --rtmps-key=*) rtmps_key=${1#*=}; shift ;;
    --api-port) [[ $# -ge 2 ]] || die "--api-port needs a number"; api_port=$2; shift 2 ;;
    --api-port=*) api_port=${1#*=}; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see ./install.sh --help)" ;;
  esac
done

[[ $(id -u) -eq 0 ]] || die "run it as root: sudo ./install.sh"
[[ -d /run/systemd/system ]] || die "systemd is not running here (it runs MediaMTX and the relays)"
for port in "$rtmp_port" "$api_port" "$srt_port" "$rtmps_port"; do
  [[ $port =~ ^[0-9]+$ ]] && (( port >= 1 && port <= 65535 )) || die "'$port' is not a port"
done
[[ $rtmp_port != "$api_port" ]] || die "--rtmp-port and --api-port must differ"
[[ $rtmps_port != "$rtmp_port" && $rtmps_port != "$api_port" ]] ||
  die "--rtmps-port must differ from --rtmp-port and --api-port"
if [[ -n $rtmps_cert || -n $rtmps_key ]]; then
  [[ -n $rtmps_cert && -n $rtmps_key ]] || die "--rtmps-cert and --rtmps-key go together"
fi

# ---------------------------------------------------------------------------------------------
# Uninstall: what the manifest lists, after stopping what runs from it.

if (( uninstall )); then
  [[ -f $MANIFEST ]] || die "nothing to uninstall: $MANIFEST (written by install.sh) is missing"
  log "stopping MediaMTX and every relay"
  systemctl disable --now mediamtx.service 2>/dev/null || true
  systemctl disable --now neustream-refresh.timer neustream-reconcile.timer 2>/dev/null || true
  systemctl stop 'neustream-relay@*.service' 2>/dev/null || true
  systemctl disable --now neustream-metrics.socket neustream-metrics.service 2>/dev/null || true
  # What is left: the slice (and anything still in it), a reconcile or refresh run.
  systemctl stop neustream.slice 'neustream*' 2>/dev/null || true
  log "removing the files install.sh installed"
  while IFS= read -r path; do
    [[ -n $path && ( -e $path || -L $path ) ]] || continue
    rm -f -- "$path"
    note "removed $path"
  done <"$MANIFEST"
  rm -f -- "$MANIFEST"
  rmdir --ignore-fail-on-non-empty "$STATE_DIR" 2>/dev/null || true
  rm -rf /run/neustream
  # Units whose files are gone are unloaded once inactive and not failed.
  systemctl reset-failed 'neustream*' mediamtx.service 2>/dev/null || true
  systemctl daemon-reload
  left=$(systemctl list-units --all --plain --no-legend 'neustream*' | awk '{print $1}' | xargs)
  [[ -z $left ]] || note "still loaded (see systemctl status): $left"
  log "uninstalled; kept: $CONF_DIR (configuration) and the user mediamtx"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Preflight: everything that can fail at once, before anything is installed.

cargo=""
if [[ -z $binary ]]; then
  user_home=""
  if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
  fi
  for candidate in "$(command -v cargo || true)" "${user_home:+$user_home/.cargo/bin/cargo}" \
                   "${HOME:-/root}/.cargo/bin/cargo"; do
    if [[ -n $candidate && -x $candidate ]]; then cargo=$candidate; break; fi
  done
  rustup_hint="install Rust >= $MIN_RUST with rustup (Debian's rustc is too old): \
curl --proto '=https' -sSf https://sh.rustup.rs | sh   (as your user, not root), then run \
sudo ./install.sh again; or build elsewhere and pass --binary PATH"
  [[ -n $cargo ]] || die "cargo not found; $rustup_hint"
  version=$("$cargo" --version 2>/dev/null | awk '{print $2}')
  [[ $version =~ ^([0-9]+)\.([0-9]+) ]] || die "cannot tell the version of $cargo; $rustup_hint"
  if (( BASH_REMATCH[1] < 1 || (BASH_REMATCH[1] == 1 && BASH_REMATCH[2] < ${MIN_RUST#1.}) )); then
    die "$cargo is Rust $version, older than $MIN_RUST; $rustup_hint"
  fi
else
  [[ -f $binary && -x $binary ]] || die "--binary $binary is not an executable file"
fi
if [[ -n $mediamtx ]]; then
  [[ -f $mediamtx && -x $mediamtx ]] || die "--mediamtx $mediamtx is not an executable file"
fi
if [[ -n $rtmps_cert ]]; then
  grep -q -- '-----BEGIN CERTIFICATE-----' "$rtmps_cert" 2>/dev/null ||
    die "--rtmps-cert $rtmps_cert is not a PEM certificate file"
  grep -Eq -- '-----BEGIN ([A-Z]+ )?PRIVATE KEY-----' "$rtmps_key" 2>/dev/null ||
    die "--rtmps-key $rtmps_key is not a PEM private key file"
fi

# ---------------------------------------------------------------------------------------------
# 1. Debian packages (apt only when one is missing: a second run needs no network).

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  log "Debian packages: all present (${PACKAGES[*]})"
fi

STAGE=$(mktemp -d /tmp/neustream-install.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT

# ---------------------------------------------------------------------------------------------
# 2. neustream

if [[ -n $binary ]]; then
  log "neustream: $binary"
  cp -- "$binary" "$STAGE/neustream"
else
  log "neustream: building with $cargo (Rust $version)"
  build=("$cargo" build --release --locked --manifest-path "$SRC/Cargo.toml" --target-dir "$SRC/target")
  if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
    sudo -u "$SUDO_USER" -H "${build[@]}"
  else
    "${build[@]}"
  fi
  cp -- "$SRC/target/release/neustream" "$STAGE/neustream"
fi
"$STAGE/neustream" --version >/dev/null || die "the neustream binary does not run on this machine"

# ---------------------------------------------------------------------------------------------
# 3. MediaMTX

fetch() { # URL FILE
  curl --fail --silent --show-error --location --connect-timeout 15 --max-time 600 \
       --retry 2 -o "$2" "$1"
}

download_mediamtx() { # leaves $STAGE/mediamtx, or returns 1 if the release cannot be fetched
  local names
  # Release asset names for this architecture (the arm64 name changed across releases).
  case $(dpkg --print-architecture) in
    amd64) names="linux_amd64" ;;
    arm64) names="linux_arm64 linux_arm64v8" ;;
    armhf) names="linux_armv7" ;;
    *) die "no MediaMTX release for architecture $(dpkg --print-architecture); pass --mediamtx PATH" ;;
  esac
  log "MediaMTX: downloading $MEDIAMTX_VERSION from $MEDIAMTX_BASE_URL"
  mkdir -p "$STAGE/release"
  fetch "$MEDIAMTX_BASE_URL/checksums.sha256" "$STAGE/release/checksums.sha256" || return 1
  local asset="" expected="" name
  for name in $names; do
    asset=mediamtx_${MEDIAMTX_VERSION}_${name}.tar.gz
    expected=$(awk -v f="$asset" '$2 == f || $2 == "*"f {print tolower($1)}' "$STAGE/release/checksums.sha256")
    [[ -n $expected ]] && break
  done
  [[ $expected =~ ^[0-9a-f]{64}$ ]] ||
    die "checksums.sha256 of MediaMTX $MEDIAMTX_VERSION has no checksum for mediamtx_${MEDIAMTX_VERSION}_{${names// /,}}.tar.gz; nothing was installed"
  fetch "$MEDIAMTX_BASE_URL/$asset" "$STAGE/release/$asset" || return 1
  local actual
  actual=$(sha256sum "$STAGE/release/$asset" | awk '{print $1}')
  [[ $actual == "$expected" ]] ||
    die "checksum mismatch for $asset: checksums.sha256 says $expected, the download is $actual; \
refusing to unpack it; nothing was installed"
  note "$asset: sha256 $actual verified against checksums.sha256"
  mkdir -p "$STAGE/release/unpacked"
  tar -xzf "$STAGE/release/$asset" -C "$STAGE/release/unpacked" mediamtx ||
    die "$asset has no mediamtx binary; nothing was installed"
  mv "$STAGE/release/unpacked/mediamtx" "$STAGE/mediamtx"
}

# A MediaMTX that install.sh installed earlier is upgraded to MEDIAMTX_VERSION; one installed
# by someone else is left alone.
existing_version=""
[[ -x $BIN_DIR/mediamtx ]] && existing_version=$("$BIN_DIR/mediamtx" --version 2>/dev/null || echo '?')
ours=0
[[ -f $MANIFEST ]] && grep -qxF "$BIN_DIR/mediamtx" "$MANIFEST" && ours=1
if [[ -n $mediamtx ]]; then
  log "MediaMTX: $mediamtx"
  cp -- "$mediamtx" "$STAGE/mediamtx"
elif [[ -n $existing_version ]] && { (( ! ours )) || [[ $existing_version == "$MEDIAMTX_VERSION" ]]; }; then
  log "MediaMTX: keeping $BIN_DIR/mediamtx ($existing_version)"
elif download_mediamtx; then
  :
elif go=$(command -v go || ls /usr/local/go/bin/go 2>/dev/null); then
  log "MediaMTX: the release could not be downloaded; building $MEDIAMTX_VERSION with $go"
  built=$(GO=$go NEUSTREAM_TEST_CACHE=/var/cache/neustream "$SRC/tests/support/build-mediamtx.sh" \
            "$MEDIAMTX_VERSION" | tail -n 1)
  cp -- "$built" "$STAGE/mediamtx"
else
  die "MediaMTX $MEDIAMTX_VERSION could not be downloaded from $MEDIAMTX_BASE_URL and go is not \
installed to build it; pass --mediamtx PATH (a MediaMTX >= 1.19.3 binary); nothing was installed"
fi
if [[ -f $STAGE/mediamtx ]]; then
  chmod 0755 "$STAGE/mediamtx"
  "$STAGE/mediamtx" --version >/dev/null 2>&1 || die "the MediaMTX binary does not run on this machine"
fi

# ---------------------------------------------------------------------------------------------
# 4. Files. `put` installs a file only if its contents, mode or owner differ, and records it in
# the manifest that --uninstall reads.

changed=()
mkdir -p "$STATE_DIR"
[[ -e $MANIFEST ]] || : >"$MANIFEST"
record() { grep -qxF -- "$1" "$MANIFEST" || printf '%s\n' "$1" >>"$MANIFEST"; }

put() { # SOURCE DEST MODE [OWNER:GROUP]
  local src=$1 dest=$2 mode=$3 owner=${4:-root:root}
  if [[ -f $dest ]] && cmp -s -- "$src" "$dest" &&
     [[ $(stat -c '%a %U:%G' -- "$dest") == "${mode#0} $owner" ]]; then
    return 0
  fi
  install -D -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" -- "$src" "$dest"
  changed+=("$dest")
  note "installed $dest"
}

log "installing files"
put "$STAGE/neustream" "$BIN_DIR/neustream" 0755
record "$BIN_DIR/neustream"
if [[ -f $STAGE/mediamtx ]]; then
  put "$STAGE/mediamtx" "$BIN_DIR/mediamtx" 0755
  record "$BIN_DIR/mediamtx"
fi
for unit in neustream-relay@.service neustream.slice neustream-refresh.service neustream-refresh.timer \
    neustream-reconcile.service neustream-reconcile.timer mediamtx.service \
    neustream-metrics.socket neustream-metrics.service; do
  put "$SRC/systemd/$unit" "$UNIT_DIR/$unit" 0644
  record "$UNIT_DIR/$unit"
done
put "$SRC/systemd/neustream.rules" /etc/polkit-1/rules.d/50-neustream.rules 0644
record /etc/polkit-1/rules.d/50-neustream.rules
put "$SRC/systemd/neustream.sysusers.conf" /etc/sysusers.d/neustream.conf 0644
record /etc/sysusers.d/neustream.conf
put "$SRC/systemd/neustream.tmpfiles.conf" /etc/tmpfiles.d/neustream.conf 0644
record /etc/tmpfiles.d/neustream.conf
systemd-sysusers /etc/sysusers.d/neustream.conf
systemd-tmpfiles --create /etc/tmpfiles.d/neustream.conf

# ---------------------------------------------------------------------------------------------
# 5. Configuration: written once, never overwritten.

# Replaces the line $2 of file $1 by $3; the shipped file must have it exactly once.
set_line() {
  [[ $(grep -cxF -- "$2" "$1") -eq 1 ]] || die "$1 no longer has the line '$2' (install.sh is out of date)"
  local tmp=$1.tmp
  awk -v from="$2" -v to="$3" '$0 == from {print to; next} {print}' "$1" >"$tmp" && mv "$tmp" "$1"
}

config() { # STAGED DEST MODE OWNER:GROUP
  if [[ -e $2 ]]; then
    note "kept $2"
  else
    put "$1" "$2" "$3" "$4"
  fi
}

install -d -m 0755 "$CONF_DIR"
cp "$SRC/mediamtx.yml" "$STAGE/mediamtx.yml"
set_line "$STAGE/mediamtx.yml" "rtmpAddress: :1935" "rtmpAddress: :$rtmp_port"
set_line "$STAGE/mediamtx.yml" "apiAddress: 127.0.0.1:9997" "apiAddress: 127.0.0.1:$api_port"
set_line "$STAGE/mediamtx.yml" "srtAddress: :8890" "srtAddress: :$srt_port"
set_line "$STAGE/mediamtx.yml" "rtmpsAddress: :1936" "rtmpsAddress: :$rtmps_port"
if [[ -n $rtmps_cert ]]; then
  set_line "$STAGE/mediamtx.yml" 'rtmpEncryption: "no"' 'rtmpEncryption: "optional"'
  # Before mediamtx.yml: MediaMTX refuses to start with RTMPS on and no certificate.
  put "$rtmps_cert" "$CONF_DIR/tls/rtmps.crt" 0644 root:root
  put "$rtmps_key" "$CONF_DIR/tls/rtmps.key" 0640 root:mediamtx
fi
cp "$SRC/.env.example" "$STAGE/neustream.env"
set_line "$STAGE/neustream.env" "NEUSTREAM_INGEST_URL=rtmp://127.0.0.1:1935" \
  "NEUSTREAM_INGEST_URL=rtmp://127.0.0.1:$rtmp_port"
set_line "$STAGE/neustream.env" "NEUSTREAM_MEDIAMTX_API_URL=http://127.0.0.1:9997" \
  "NEUSTREAM_MEDIAMTX_API_URL=http://127.0.0.1:$api_port"
mediamtx_config_new=0
[[ -e $CONF_DIR/mediamtx.yml ]] || mediamtx_config_new=1
config "$STAGE/mediamtx.yml" "$CONF_DIR/mediamtx.yml" 0644 root:root
config "$STAGE/neustream.env" "$CONF_DIR/neustream.env" 0640 root:mediamtx
if [[ -n $rtmps_cert ]] && ! grep -qxE 'rtmpEncryption: "?optional"?' "$CONF_DIR/mediamtx.yml"; then
  note "RTMPS: the certificate is in $CONF_DIR/tls; set rtmpEncryption: \"optional\" in"
  note "$CONF_DIR/mediamtx.yml (kept as it was) and restart mediamtx.service to offer it"
fi

new_key=""
if grep -Eq '^[[:space:]]*CONTROL_PLANE_URL=[^[:space:]]' "$CONF_DIR/neustream.env"; then
  mode="control-plane"
  note "CONTROL_PLANE_URL is set in $CONF_DIR/neustream.env: keys come from the Control Plane"
elif [[ -e $CONF_DIR/streams.toml ]]; then
  mode="standalone"
  note "kept $CONF_DIR/streams.toml"
else
  mode="standalone"
  new_key=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  cat >"$STAGE/streams.toml" <<EOF
# $CONF_DIR/streams.toml: the stream keys that may publish, and where each stream is relayed
# (standalone mode, used when CONTROL_PLANE_URL is not set in $CONF_DIR/neustream.env).
# Read at every publish: edits need no restart. Check it with: neustream streams check
# Keep it root:mediamtx 0640: it holds keys, and is refused if other users can read it.
# An unknown key is refused and disconnected; a stream without destination is accepted and
# not relayed.

[[stream]]
# What OBS sends as its stream key (generated by install.sh). To keep only its hash here, write
# key_sha256 = "<output of: printf %s KEY | sha256sum>" instead.
key = "$new_key"
name = "Example stream"

# One [[stream.destination]] per place the stream goes; uncomment and fill in:
#[[stream.destination]]
#platform = "youtube"
#rtmp_url = "rtmp://a.rtmp.youtube.com/live2"
#stream_key = "xxxx-xxxx-xxxx-xxxx-xxxx"
#
#[[stream.destination]]
#platform = "twitch"
#rtmp_url = "rtmp://live.twitch.tv/app"
#stream_key = "live_000000000_xxxxxxxxxxxxxxxxxxxxxxxx"

# More streams: another [[stream]] block with its own key.
EOF
  put "$STAGE/streams.toml" "$CONF_DIR/streams.toml" 0640 root:mediamtx
fi

# ---------------------------------------------------------------------------------------------
# 6. Services

restart=0
for path in "${changed[@]}"; do
  case $path in
    "$BIN_DIR/mediamtx"|"$UNIT_DIR/mediamtx.service") restart=1 ;;
  esac
done
(( mediamtx_config_new )) && restart=1
if (( ${#changed[@]} )); then
  systemctl daemon-reload
fi
systemctl enable --quiet mediamtx.service
systemctl enable --quiet --now neustream-refresh.timer neustream-reconcile.timer
if ! systemctl is-active --quiet mediamtx.service; then
  log "starting mediamtx.service"
  systemctl start mediamtx.service
elif (( restart )); then
  log "restarting mediamtx.service (its binary, unit or configuration changed)"
  systemctl restart mediamtx.service
fi
api=$(sed -n 's/^apiAddress: *//p' "$CONF_DIR/mediamtx.yml" | head -n 1)
[[ $api == :* ]] && api=127.0.0.1$api
up=0
for _ in $(seq 1 100); do
  if curl -fsS --max-time 1 -o /dev/null "http://$api/v3/paths/list" 2>/dev/null; then up=1; break; fi
  systemctl is-failed --quiet mediamtx.service && break
  sleep 0.1
done
if (( ! up )); then
  journalctl -u mediamtx.service -n 20 --no-pager >&2 || true
  die "mediamtx.service did not come up (its Control API http://$api does not answer); see above"
fi

# ---------------------------------------------------------------------------------------------
# What next

port=$(sed -n 's/^rtmpAddress: *.*:\([0-9]*\)$/\1/p' "$CONF_DIR/mediamtx.yml" | head -n 1)
srt=$(sed -n 's/^srt: *//p' "$CONF_DIR/mediamtx.yml" | head -n 1)
srt_at=$(sed -n 's/^srtAddress: *.*:\([0-9]*\)$/\1/p' "$CONF_DIR/mediamtx.yml" | head -n 1)
rtmps=$(sed -n 's/^rtmpEncryption: *"\{0,1\}\([a-z]*\)"\{0,1\}$/\1/p' "$CONF_DIR/mediamtx.yml" | head -n 1)
rtmps_at=$(sed -n 's/^rtmpsAddress: *.*:\([0-9]*\)$/\1/p' "$CONF_DIR/mediamtx.yml" | head -n 1)
host=$(hostname -I 2>/dev/null | awk '{print $1}')
host=${host:-<this host>}
echo
if (( ${#changed[@]} )); then
  log "Neustream is installed and MediaMTX is running (${#changed[@]} file(s) changed)"
else
  log "Neustream is up to date and MediaMTX is running (nothing changed)"
fi
note "OBS → Settings → Stream: Service 'Custom', Server rtmp://$host:$port/live"
if [[ $rtmps == optional || $rtmps == strict ]]; then
  note "  or RTMPS: Server rtmps://<the certificate's host name>:$rtmps_at/live"
fi
if [[ $srt == yes || $srt == true ]]; then
  note "  or SRT (OBS: Service 'Custom', Server srt://$host:$srt_at?streamid=publish:live/<stream key>,"
  note "  Stream Key empty; open UDP port $srt_at)"
fi
if [[ -n $new_key ]]; then
  note "Stream key: $new_key"
  note "Next: add destinations to $CONF_DIR/streams.toml (no restart needed), check it with"
  note "'neustream streams check', then stream. Or use the Neustream Control Plane: set"
  note "CONTROL_PLANE_URL in $CONF_DIR/neustream.env and remove $CONF_DIR/streams.toml."
elif [[ $mode == standalone ]]; then
  note "Stream keys: $CONF_DIR/streams.toml ('neustream streams check' lists them, redacted)"
else
  note "Stream key: your Neustream stream key (checked with the Control Plane)"
fi
note "Watch it: journalctl -t neustream -f; systemctl list-units 'neustream-relay@*'"
