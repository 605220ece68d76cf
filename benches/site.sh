#!/usr/bin/env bash
# Site model: J concurrent jobs of L locales at a 5 s interval, driven from one process
# through the agent's own sinks (benches/tools/site_model.rs), against one Pushgateway,
# K sharded Pushgateways, and by remote write to one Prometheus and one VictoriaMetrics.
# For each run: per-push latency, pushes that missed their interval, the receiving
# servers' CPU per interval (all threads, /proc/PID/task/*/schedstat) and the driving
# process's CPU (the agents' own CPU summed over the site).
#
#   bash benches/site.sh                 # prints a markdown table
#   INTERVALS=4 bash benches/site.sh
set -euo pipefail
cd "$(dirname "$0")/.."
INTERVAL_MS=${INTERVAL_MS:-5000}
INTERVALS=${INTERVALS:-3}
[ -x /usr/bin/time ] && [ -x /usr/bin/victoria-metrics ] && [ -x /usr/bin/prometheus ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time victoria-metrics prometheus prometheus-pushgateway >/dev/null; }
cargo build --release --quiet --example site_model
. benches/tools/common.sh
cpu_s() { local t=0; for p in "$@"; do t=$(python3 -c "print($t + $(cat /proc/$p/task/*/schedstat | awk '{s+=$1} END {print s/1e9}'))"); done; echo "$t"; }

start_pgs() { # K -> PG_URLS, PG_PIDS
  PG_URLS=(); PG_PIDS=()
  for ((k = 0; k < $1; k++)); do
    local port; port=$(free_port)
    /usr/bin/prometheus-pushgateway --web.listen-address=127.0.0.1:$port --persistence.file= >/dev/null 2>&1 &
    PG_PIDS+=($!); pids+=($!)
    until ready "http://127.0.0.1:$port/-/ready"; do sleep 0.05; done
    PG_URLS+=("http://127.0.0.1:$port")
  done
}
start_prometheus() {
  PROM_PORT=$(free_port); mkdir -p "$W/prom"
  printf 'global:\n  scrape_interval: 1h\n' >"$W/prom.yml"
  /usr/bin/prometheus --config.file="$W/prom.yml" --storage.tsdb.path="$W/prom" --web.listen-address=127.0.0.1:$PROM_PORT \
    --web.enable-remote-write-receiver >"$W/prom.log" 2>&1 &
  PROM_PID=$!; pids+=($!)
  until ready "http://127.0.0.1:$PROM_PORT/-/ready"; do sleep 0.1; done
}
start_vm() {
  VM_PORT=$(free_port)
  /usr/bin/victoria-metrics -storageDataPath="$W/vm" -httpListenAddr=127.0.0.1:$VM_PORT -retentionPeriod=1d -loggerLevel=ERROR >"$W/vm.log" 2>&1 &
  VM_PID=$!; pids+=($!)
  until ready "http://127.0.0.1:$VM_PORT/health"; do sleep 0.1; done
}
run() { # LABEL MODE TARGET JOBS LOCALES RECEIVER_PIDS...
  local label=$1 mode=$2 target=$3 jobs=$4 locales=$5; shift 5
  local c0; c0=$(cpu_s "$@")
  local out
  out=$( { /usr/bin/time -f "driver_cpu_s %U %S" target/release/examples/site_model "$mode" "$target" "$jobs" "$locales" "$INTERVAL_MS" "$INTERVALS"; } 2>&1 )
  local c1; c1=$(cpu_s "$@")
  python3 - "$label" "$jobs" "$locales" "$c0" "$c1" "$INTERVALS" "$INTERVAL_MS" "$out" <<'PY'
import sys
label, jobs, locales, c0, c1, n, ims, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
f = dict(zip(out.split()[::2], out.split()[1::2]))
drv = out.split("driver_cpu_s")[1].split()
driver = float(drv[0]) + float(drv[1])
per_interval = (c1 - c0) / n
print(f"| {label} | {jobs} | {locales} | {f['p50_ms']} | {f['p99_ms']} | {f['late_or_failed']}/{f['pushes']} | {per_interval:.2f} s ({per_interval / (ims / 1000) * 100:.0f} % of a core) | {driver / n:.3f} s |")
PY
}

echo "| receiver | jobs | locales | push p50 ms | push p99 ms | late or failed | receiver CPU per ${INTERVAL_MS} ms interval | site agents' CPU per interval |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for spec in "1 64 25" "1 64 50" "1 64 100" "1 1024 5" "1 1024 10" "1 1024 20" "2 64 100" "2 64 200" "4 64 200"; do
  read -r K L J <<<"$spec"
  start_pgs "$K"
  run "Pushgateway ×$K" pushgateway "$(IFS=,; echo "${PG_URLS[*]}")" "$J" "$L" "${PG_PIDS[@]}"
  for p in "${PG_PIDS[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
done
for spec in "64 100" "64 500" "64 1000" "1024 50" "1024 100"; do
  read -r L J <<<"$spec"
  start_prometheus
  run "Prometheus (remote write)" remote-write "http://127.0.0.1:$PROM_PORT/api/v1/write" "$J" "$L" "$PROM_PID"
  kill "$PROM_PID"; wait "$PROM_PID" 2>/dev/null || true; rm -rf "$W/prom"
  start_vm
  run "VictoriaMetrics (remote write)" remote-write "http://127.0.0.1:$VM_PORT/api/v1/write" "$J" "$L" "$VM_PID"
  kill "$VM_PID"; wait "$VM_PID" 2>/dev/null || true; rm -rf "$W/vm"
done
