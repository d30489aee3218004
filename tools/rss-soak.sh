#!/usr/bin/env bash
# Memory soak: runs the release binary on the built-in generator into the null sink for
# SECONDS (default 600) and samples its resident set size (VmRSS in /proc/PID/status) every 10 s.
# Prints every sample, then RSS at minute 1, RSS at the end, and the change in percent.
# Usage: tools/rss-soak.sh [SECONDS] [extra dreamframe args...]
set -euo pipefail
seconds=${1:-600}
shift || true
binary=${DREAMFRAME_BIN:-target/release/dreamframe}
out=$(mktemp -d)
"$binary" --sink null --seed 1 --duration "$seconds" --output-dir "$out" "$@" 2>"$out/stderr.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
rss_at_minute=""
rss_last=""
elapsed=0
while kill -0 "$pid" 2>/dev/null; do
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  if [[ -n "$rss" ]]; then
    echo "t=${elapsed}s rss_kib=$rss"
    rss_last=$rss
    if [[ $elapsed -ge 60 && -z "$rss_at_minute" ]]; then rss_at_minute=$rss; fi
  fi
  sleep 10
  elapsed=$((elapsed + 10))
done
wait "$pid"
echo "rss_minute1_kib=${rss_at_minute:-n/a} rss_end_kib=$rss_last"
if [[ -n "$rss_at_minute" ]]; then
  awk -v a="$rss_at_minute" -v b="$rss_last" 'BEGIN { printf "rss_change_percent=%.2f\n", (b - a) * 100 / a }'
fi
grep -E "stopped|stats state" "$out/stderr.log" | tail -2
rm -rf "$out"
