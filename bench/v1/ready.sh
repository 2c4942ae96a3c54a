#!/bin/bash
# Baseline "v1": the previous Neustream relay (before relay v2), started from a shell hook the
# way bench/seed starts its ffmpeg, without systemd (so its figures lack the relay unit's
# start, sandbox and the `neustream relay` process that ran it: ~3 MB PSS, its log handling).
# It runs exactly the ffmpeg v1 ran (src/ffmpeg.rs and src/cmd/relay.rs at commit 47f5fd3):
# ONE ffmpeg per stream, one `-f fifo` output per destination (each in its own thread and
# queue, reconnected every NEUSTREAM_RETRY_WAIT = 1 s at a keyframe), fast-start flags
# -fpsprobesize 0 -copytb 1 -tcp_nodelay 1, and each destination's RTMP app and key in an
# option file read with -fpre from a pipe (bash process substitution: /dev/fd/N, as v1 did),
# so the key is not on the command line here either. (A bench baseline could put it there:
# the destinations are the benchmark's own servers on 127.0.0.1.)
#
# Environment: MTX_PATH (from MediaMTX), CONTROL_PLANE_URL, SEED_INGEST_URL (rtmp://host:port),
# SEED_RUN_DIR (where the pid file goes).
set -e
key=$(basename "$MTX_PATH")
run_dir=${SEED_RUN_DIR:-/tmp}

auth=$(curl -s -m 5 -X POST -d "name=$key" "$CONTROL_PLANE_URL/api/auth/stream")
if [ "$auth" != "OK" ]; then
  echo "v1: key $key refused: $auth" >&2
  exit 1
fi
config=$(curl -s -m 5 "$CONTROL_PLANE_URL/api/streams/forwarding/$key")
count=$(echo "$config" | jq -r '.destinations | length')
if [ "$count" -eq 0 ]; then
  exit 0
fi

# av_get_token quoting, as v1's ffmpeg::quote: '...' with ' written as '\''.
quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

args=(-hide_banner -nostdin -nostats -loglevel level+info -fpsprobesize 0 -copytb 1
  -tcp_nodelay 1 -i "$SEED_INGEST_URL/$MTX_PATH")
presets=()
for i in $(seq 0 $((count - 1))); do
  url=$(echo "$config" | jq -r ".destinations[$i].rtmp_url")
  dest_key=$(echo "$config" | jq -r ".destinations[$i].stream_key")
  url=${url%/}
  app=${url#*://*/}
  presets+=("format_opts=rtmp_app=$(quote "$app"):rtmp_playpath=$(quote "$dest_key"):flvflags=no_duration_filesize")
  args+=(-map '0:v?' -map '0:a?' -c copy -f fifo -fifo_format flv -fpre "PRESET$i"
    -queue_size 600 -drop_pkts_on_overflow 1 -attempt_recovery 1 -recover_any_error 1
    -recovery_wait_time 1.000 -restart_with_keyframe 1 "$url")
done

# One pipe per destination's option file (v1 passed them on descriptors 3, 4, ...).
fds=()
for i in "${!presets[@]}"; do
  exec {fd}< <(printf '%s\n' "${presets[$i]}")
  fds+=("$fd")
done
for i in "${!args[@]}"; do
  if [[ ${args[$i]} == PRESET* ]]; then
    args[i]=/dev/fd/${fds[${args[$i]#PRESET}]}
  fi
done
nohup ffmpeg "${args[@]}" >/dev/null 2>&1 &
echo $! >"$run_dir/v1-$key.pid"
for fd in "${fds[@]}"; do
  exec {fd}<&-
done
