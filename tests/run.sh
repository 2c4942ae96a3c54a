#!/usr/bin/env bash
# Installs what the tests need on a Debian 12 machine, then runs every check and test, as CI
# does (.ci/run calls this script). Run it as root, from anywhere: the system tests boot
# systemd-nspawn machines.
#
#   tests/run.sh                 # everything
#   tests/run.sh --test install  # extra arguments go to `cargo test`
#
# Needs, besides what it installs from apt: Rust >= 1.89 (rustup) for root, and Go and npm to
# build MediaMTX (tests/support/build-mediamtx.sh: the Go module proxy and the npm registry;
# /usr/local/go/bin is searched too). The build is cached: later runs need neither.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/local/go/bin:$PATH"
export DEBIAN_FRONTEND=noninteractive

[[ $(id -u) -eq 0 ]] || { echo "tests/run.sh: run it as root (the system tests boot systemd-nspawn machines)" >&2; exit 1; }
command -v cargo >/dev/null || {
  echo "tests/run.sh: cargo not found for root; install Rust >= 1.89 with rustup:" \
       "curl --proto '=https' -sSf https://sh.rustup.rs | sh" >&2
  exit 1
}

echo "== apt packages"
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  systemd systemd-container dbus polkitd util-linux \
  ffmpeg nginx-light libnginx-mod-rtmp libnginx-mod-stream openssl curl prometheus \
  nix-bin ca-certificates >/dev/null

echo "== MediaMTX (built from the Go module proxy, cached in /var/cache/neustream-test)"
tests/support/build-mediamtx.sh | tail -n 1

echo "== Nix files parse (and the module evaluates, where nixos-eval is available)"
nix/check.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

echo "== tests"
cargo test --locked --no-fail-fast "$@"
