#!/bin/bash
# Baseline "restreamer": the stream ended: stop every destination's loop and its ffmpeg
# (SIGTERM to each process group; ffmpeg closes its destination cleanly; SIGKILL after 5 s),
# and report the stream end to the Control Plane.
key=$(basename "$MTX_PATH")
run_dir=${SEED_RUN_DIR:-/tmp}
pids="$run_dir/restreamer-$key.pids"
if [ -f "$pids" ]; then
  groups=$(cat "$pids")
  for g in $groups; do kill -TERM -- "-$g" 2>/dev/null || true; done
  for _ in $(seq 1 100); do
    left=0
    for g in $groups; do kill -0 -- "-$g" 2>/dev/null && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.05
  done
  for g in $groups; do kill -KILL -- "-$g" 2>/dev/null || true; done
  rm -f "$pids"
fi
curl -s -m 5 -X POST -d "name=$key" "$CONTROL_PLANE_URL/api/auth/stream-end" >/dev/null || true
