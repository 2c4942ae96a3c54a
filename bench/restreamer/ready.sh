#!/bin/bash
# Baseline "restreamer": datarhei Restreamer's layout, one ffmpeg per destination, each reading
# the stream from the ingest itself (`-c copy -f flv`), each restarted on its own when it ends.
# To compare layouts rather than settings, every ffmpeg gets the same fast-start flags as
# Neustream's (-fpsprobesize 0 -copytb 1 -tcp_nodelay 1) and is restarted 1 s after it exits
# (Restreamer's supervisor, datarhei Core, waits `reconnect_delay_seconds`: 15 s in its UI's
# defaults). The supervisor here is a bash loop per destination, not counted in the figures
# (Core, a Go process supervising every stream, is not part of the layout measured).
# Destination keys are on ffmpeg's command line: a bench baseline, its destinations are the
# benchmark's own servers on 127.0.0.1.
#
# Environment: MTX_PATH (from MediaMTX), CONTROL_PLANE_URL, SEED_INGEST_URL (rtmp://host:port),
# SEED_RUN_DIR (where the pid file goes).
set -e
key=$(basename "$MTX_PATH")
run_dir=${SEED_RUN_DIR:-/tmp}
restart_wait=${RESTREAMER_RESTART_WAIT:-1}

auth=$(curl -s -m 5 -X POST -d "name=$key" "$CONTROL_PLANE_URL/api/auth/stream")
if [ "$auth" != "OK" ]; then
  echo "restreamer: key $key refused: $auth" >&2
  exit 1
fi
config=$(curl -s -m 5 "$CONTROL_PLANE_URL/api/streams/forwarding/$key")
pids="$run_dir/restreamer-$key.pids"
: >"$pids"
echo "$config" | jq -r '.destinations[] | .rtmp_url + "/" + .stream_key' | while read -r url; do
  [ -n "$url" ] || continue
  # setsid: each destination's loop and its ffmpeg in a process group of their own.
  setsid -f bash -c 'echo $$ >>"$1"; while :; do
      ffmpeg -hide_banner -nostdin -nostats -loglevel level+info -fpsprobesize 0 -copytb 1 \
        -tcp_nodelay 1 -i "$2" -map "0:v?" -map "0:a?" -c copy -f flv \
        -flvflags no_duration_filesize "$3" >/dev/null 2>&1 </dev/null
      sleep "$4"
    done' restreamer "$pids" "$SEED_INGEST_URL/$MTX_PATH" "$url" "$restart_wait" \
    >/dev/null 2>&1 </dev/null
done
