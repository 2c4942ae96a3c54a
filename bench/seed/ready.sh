#!/bin/bash
# Baseline "seed": what the original Neustream runOnReady hook did, pointed at the benchmark's
# Control Plane double and ingest. It authenticates the key with curl, fetches the destinations
# with curl and parses them with one jq call per field, waits 2 s, starts ONE detached ffmpeg
# with one `-f flv` output per destination (default input probing, no reconnect, no
# isolation), waits 2 s more and checks that ffmpeg still runs.
#
# Environment: MTX_PATH (from MediaMTX), CONTROL_PLANE_URL, SEED_INGEST_URL (rtmp://host:port),
# SEED_RUN_DIR (where the pid files go).
set -e
key=$(basename "$MTX_PATH")
run_dir=${SEED_RUN_DIR:-/tmp}

auth=$(curl -s -X POST -d "name=$key" "$CONTROL_PLANE_URL/api/auth/stream")
if [ "$auth" != "OK" ]; then
  echo "seed: key $key refused: $auth" >&2
  exit 1
fi

config=$(curl -s "$CONTROL_PLANE_URL/api/streams/forwarding/$key")
if [ -z "$config" ] || [ "$config" = "null" ]; then
  exit 0
fi
source_id=$(echo "$config" | jq -r '.sourceId // empty' 2>/dev/null || echo "")
source_name=$(echo "$config" | jq -r '.sourceName // empty' 2>/dev/null || echo "")
legacy=$(echo "$config" | jq -r '.isLegacy // false' 2>/dev/null || echo "false")
count=$(echo "$config" | jq -r '.destinations | length' 2>/dev/null || echo "0")
echo "seed: $key ($source_name, legacy=$legacy): $count destination(s)" >&2

list="$run_dir/ffmpeg_destinations_$key.txt"
echo "$config" | jq -r '.destinations[] | .rtmp_url + "/" + .stream_key' >"$list"
valid=$(grep -c "rtmp://" "$list" || true)
if [ "$valid" -eq 0 ]; then
  rm -f "$list"
  exit 0
fi
outputs=()
while read -r url; do
  [ -n "$url" ] && outputs+=(-c:v copy -c:a copy -f flv "$url")
done <"$list"

if [ -n "$source_id" ]; then
  pid_file="$run_dir/ffmpeg-source-$source_id-$key.pid"
else
  pid_file="$run_dir/ffmpeg-$key.pid"
fi

sleep 2
nohup ffmpeg -hide_banner -loglevel error -i "$SEED_INGEST_URL/$MTX_PATH" "${outputs[@]}" \
  >/dev/null 2>&1 &
pid=$!
echo "$pid" >"$pid_file"
sleep 2
if ! kill -0 "$pid" 2>/dev/null; then
  rm -f "$pid_file" "$list"
  exit 1
fi
logger -t neustream-seed "stream started: key=$key pid=$pid destinations=$valid" || true
rm -f "$list"
