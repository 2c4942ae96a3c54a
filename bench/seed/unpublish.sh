#!/bin/bash
# Baseline "seed": what the original Neustream runOnNotReady hook did. It reports the end of
# the stream, fetches the forwarding answer again to find the pid file, sends ffmpeg SIGTERM,
# waits 2 s, and SIGKILLs it if it is still there.
set -e
key=$(basename "$MTX_PATH")
run_dir=${SEED_RUN_DIR:-/tmp}

curl -s -X POST -d "name=$key" "$CONTROL_PLANE_URL/api/auth/stream-end" >/dev/null || true
config=$(curl -s "$CONTROL_PLANE_URL/api/streams/forwarding/$key" 2>/dev/null \
  || echo '{"sourceId": null}')
source_id=$(echo "$config" | jq -r '.sourceId // empty' 2>/dev/null || echo "")
if [ -n "$source_id" ]; then
  pid_file="$run_dir/ffmpeg-source-$source_id-$key.pid"
else
  pid_file="$run_dir/ffmpeg-$key.pid"
fi

if [ -f "$pid_file" ]; then
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    sleep 2
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pid_file"
fi
rm -f "$run_dir/ffmpeg_destinations_$key.txt"
logger -t neustream-seed "stream ended: key=$key" || true
