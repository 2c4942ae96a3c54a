#!/usr/bin/env bash
# The Neustream benchmark: builds in release mode and measures, on this machine, how fast a
# stream goes live, what a relay costs and how many streams the box carries, side by side
# with the baselines: "v1" (the previous relay's ffmpeg, bench/v1), "restreamer" (one ffmpeg
# per destination reading the ingest, bench/restreamer), "seed" (the original shell hook,
# bench/seed), MediaMTX forward and nginx-rtmp push. docs/performance.md says how each figure
# is measured. Everything runs on 127.0.0.1; a real systemd runs in ephemeral systemd-nspawn
# machines.
#
#   bench/run.sh                          every figure, full sizes (about 70 minutes)
#   bench/run.sh --quick                  every figure, small sizes (about 15 minutes)
#   bench/run.sh ttff cost recovery       some figures: latency ttff join cost scale storm recovery scrape drop
#   bench/run.sh cost --cost-sizes 1,10 --window 10 --baselines v1,seed
#   bench/run.sh --help                   every option
#
# The Markdown report goes to stdout and to target/bench/report-<UTC time>.md; progress goes
# to stderr. Run it when the machine is otherwise idle: the figures are only as good as the
# quiet around them (the load average is printed with each figure).
#
# Needs root and: ffmpeg nginx-light libnginx-mod-rtmp libnginx-mod-stream (the destinations'
# TLS terminator) openssl iproute2 systemd-container dbus polkitd curl jq
# (apt-get install ...), plus Go and npm for tests/support/build-mediamtx.sh the first time
# (the MediaMTX binary is cached in /var/cache/neustream-test).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bench/run.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (systemd-nspawn machines, nginx workers)"
for tool in ffmpeg ffprobe nginx openssl ss systemd-nspawn nsenter setpriv curl jq cargo; do
  command -v "$tool" >/dev/null || die "$tool not found (see the header of this script)"
done
[[ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ]] || die "apt-get install libnginx-mod-rtmp"
[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || die "apt-get install libnginx-mod-stream"
[[ -e /usr/lib/polkit-1/polkitd ]] || die "apt-get install polkitd"

for arg in "$@"; do
  if [[ $arg == -h || $arg == --help ]]; then
    exec cargo bench --quiet --bench neustream -- --help
  fi
done

echo "bench/run.sh: MediaMTX v1.21.0 (tests/support/build-mediamtx.sh)" >&2
NEUSTREAM_BENCH_MEDIAMTX=$(tests/support/build-mediamtx.sh v1.21.0 | tail -n1)
export NEUSTREAM_BENCH_MEDIAMTX

read -r load1 _ < /proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 1.0) }'; then
  echo "bench/run.sh: warning: load average $load1: other work will skew the figures" >&2
fi

mkdir -p target/bench
report=target/bench/report-$(date -u +%Y%m%dT%H%M%SZ).md
# cargo bench builds with the release profile; the benchmark stops every process, server and
# machine it started (also on Ctrl-C) and removes its scratch directories under target/tmp.
cargo bench --bench neustream -- "$@" --out "$report"
echo "bench/run.sh: report: $report" >&2
