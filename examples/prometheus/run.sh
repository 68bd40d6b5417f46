#!/usr/bin/env bash
# `make run-prometheus`: a pull source end to end, no cloud account. Starts a real
# Prometheus serving the m-small trace as counters, backfills capsched's first week from
# it with `capsched pull`, then runs the daemon on a replayed clock (60x) whose pull job
# reads every following minute from Prometheus. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-.venv/bin}
PORT=${PROM_PORT:-9091}
DIR=${PROM_DIR:-${TMPDIR:-/tmp}/capsched-prometheus}
export CAPSCHED_CONFIG=${CAPSCHED_CONFIG_PROMETHEUS:-examples/prometheus/capsched.toml}
mkdir -p "$DIR"
"$BIN/python" examples/prometheus/trace_prometheus.py examples/traces/servegen_m-small.csv \
    --deployment m-small-prom --dir "$DIR" --port "$PORT" &
PROM=$!
trap 'kill $PROM 2>/dev/null; wait $PROM 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
    "$BIN/python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/-/ready', timeout=2)" \
        2>/dev/null && break
    kill -0 $PROM 2>/dev/null || { echo "prometheus did not start (see $DIR/prometheus.log)"; exit 1; }
    sleep 0.2
done
sed "s|http://127.0.0.1:9091|http://127.0.0.1:$PORT|" "$CAPSCHED_CONFIG" > "$DIR/capsched.toml"
export CAPSCHED_CONFIG="$DIR/capsched.toml"
"$BIN/capsched" db upgrade
"$BIN/capsched" pull --since 2025-01-06T00:00Z --now 2025-01-13T00:00Z
"$BIN/capsched" status
"$BIN/capsched" run --replay-from 2025-01-13T00:00Z --speed 60
