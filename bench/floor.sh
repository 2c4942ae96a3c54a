#!/bin/bash
# The ttff figure's floor, as MediaMTX's ready hook (runOnAvailable) runs it: starts a plain
# reader of the path, `ffmpeg -fpsprobesize 0 -tcp_nodelay 1 -i <path> -c copy -f flv`, that
# publishes to <FLOOR_URL>/<key>-floor (a destination server of the benchmark), then runs the
# relay's own hook (the rest of the arguments, if any) in its place. The reader ends by itself
# when the publisher goes (MediaMTX closes its readers).
#
# Usage (mediamtx.yml): runOnAvailable: /bin/bash floor.sh FLOOR_URL [HOOK ARGS...]
# Environment: MTX_PATH (from MediaMTX), SEED_INGEST_URL (rtmp://host:port).
floor_url=$1
shift
key=$(basename "$MTX_PATH")
nohup ffmpeg -hide_banner -loglevel error -nostdin -fpsprobesize 0 -tcp_nodelay 1 \
  -i "$SEED_INGEST_URL/$MTX_PATH" -c copy -f flv "$floor_url/$key-floor" \
  >/dev/null 2>&1 </dev/null &
if [ $# -gt 0 ]; then
  exec "$@"
fi
