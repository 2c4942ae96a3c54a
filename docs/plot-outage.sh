#!/usr/bin/env bash
# Renders docs/operator-outage.png from a trace of tests/operator.rs:
#   NEUSTREAM_OPERATOR_TRACE=$PWD/docs/operator-outage.csv cargo test --test operator
#   docs/plot-outage.sh docs/operator-outage.csv docs/operator-outage.png
# Each line: what a destination's server acknowledged (neustream_destination_acked_bytes_total,
# as a rate between two scrapes 0.5 s apart), and the relay's own neustream_destination_up.
# Needs gnuplot (Debian: apt-get install gnuplot-nox).
set -euo pipefail
in="${1:-docs/operator-outage.csv}"
out="${2:-docs/operator-outage.png}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
events="$(head -n 1 "$in")"
down="$(sed -n 's/.* \([0-9.]*\)=down.*/\1/p' <<<"$events")"
back="$(sed -n 's/.* \([0-9.]*\)=back.*/\1/p' <<<"$events")"
# seconds,index,up,sent_bytes,acked_bytes,rtt_seconds -> per index: t, Mbit/s acked, up.
# The relay rewrites its state every 2 s (and at each state change), so a counter moves in
# steps: the rate is taken between two moves of the counter at least 1 s apart (what the relay
# counted in that time), timed by the 0.1 s scrapes, and drawn over the interval it covers.
awk -F, -v dir="$tmp" 'NR > 2 && $5 != "" {
  i = $2
  f = dir "/d" i ".dat"
  if (!(i in t)) { t[i] = $1; a[i] = $5; r[i] = 0 }
  else if ($5 != a[i] && $1 - t[i] >= 1) {
    r[i] = ($5 - a[i]) * 8 / ($1 - t[i]) / 1e6; t[i] = $1; a[i] = $5
    printf "%.3f %.4f %s\n", $1, r[i], $3 >> f
  }
  else if ($5 == a[i] && $1 - t[i] > 2.6) {   # nothing new for longer than a state period
    if (r[i] != 0) printf "%.3f %.4f %s\n", $1, 0, $3 >> f
    r[i] = 0
  }
  u[i] = $3
}' "$in"
awk -F, 'NR > 2 && $2 == 1 && $3 != "" { print $1, $3 }' "$in" > "$tmp/up1.dat"
gnuplot <<GP
set terminal pngcairo size 900,420 font "DejaVu Sans,10" noenhanced
set output "$out"
set title "Acknowledged bitrate per destination, destination 1's server down ${down%.*}–${back%.*} s (real run of tests/operator.rs)"
set xlabel "seconds since the stream was live"
set ylabel "Mbit/s acknowledged (tcp_info bytes_acked)"
set y2label "neustream_destination_up (destination 1)"
set y2range [-0.1:3.5]
set y2tics ("0" 0, "1" 1)
set yrange [0:*]
set key top right
set grid
set object 1 rect from $down, graph 0 to $back, graph 1 fc rgb "#f4cccc" fs solid 0.5 noborder behind
plot "$tmp/d0.dat" using 1:2 with fsteps lw 2 title "0 youtube", \
     "$tmp/d1.dat" using 1:2 with fsteps lw 2 title "1 twitch", \
     "$tmp/d2.dat" using 1:2 with fsteps lw 2 title "2 custom", \
     "$tmp/up1.dat" using 1:2 axes x1y2 with steps lw 1 dt 2 lc rgb "black" title "1 twitch: up"
GP
echo "wrote $out"
