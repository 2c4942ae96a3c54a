#!/bin/bash
# Baseline "v1": what the previous relay did when the stream ended (`neustream unpublish`
# stopped the unit: SIGTERM to ffmpeg, which closes each destination cleanly, SIGKILL after
# NEUSTREAM_STOP_TIMEOUT = 5 s), and the stream end reported to the Control Plane.
key=$(basename "$MTX_PATH")
run_dir=${SEED_RUN_DIR:-/tmp}
pid_file="$run_dir/v1-$key.pid"
if [ -f "$pid_file" ]; then
  pid=$(cat "$pid_file")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
fi
curl -s -m 5 -X POST -d "name=$key" "$CONTROL_PLANE_URL/api/auth/stream-end" >/dev/null || true
