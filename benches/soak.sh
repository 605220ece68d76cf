#!/usr/bin/env bash
# Soak: the release agent against a 1024-locale simulator at a 1 s interval for
# SOAK_SECONDS (default 600), with a fault injected every minute (server hang, garbage,
# ERROR replies, server restart, Pushgateway restart, truncated and oversized replies).
# Samples the agent's RSS, open file descriptors and CPU time every 5 s into a CSV and
# prints a summary: after warm-up, all three must stay flat (CPU: a constant rate).
#
#   bash benches/soak.sh            # 10 minutes
#   SOAK_SECONDS=120 bash benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${SOAK_SECONDS:-600}
LOCALES=${SOAK_LOCALES:-1024}
cargo build --release --quiet --bins
W=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ready() { python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null; }

PG_PORT=$(free_port); SIM_PORT=$(free_port)
start_pg() { /usr/bin/prometheus-pushgateway --web.listen-address=127.0.0.1:$PG_PORT --persistence.file= >>"$W/pg.log" 2>&1 & PG_PID=$!; pids+=($PG_PID); until ready "http://127.0.0.1:$PG_PORT/-/ready"; do sleep 0.1; done; }
start_sim() { target/release/arkouda-sim --metrics-port "$SIM_PORT" --locales "$LOCALES" --control "$W/control" >/dev/null 2>>"$W/sim.log" & SIM_PID=$!; pids+=($SIM_PID); sleep 0.3; }
start_pg; start_sim
ARKOUDA_PUSH_AGENT_CONFIG=/dev/null target/release/arkouda-push-agent run --arkouda "tcp://127.0.0.1:$SIM_PORT" \
  --pushgateway "http://127.0.0.1:$PG_PORT" --job-id soak --interval 1s --arkouda-timeout 500ms \
  --max-reply-bytes 8000000 --lock-dir "$W" 2>"$W/agent.log" &
AGENT=$!; pids+=($AGENT)
TICK=$(getconf CLK_TCK)
echo "t_s,rss_kib,fds,cpu_s,fault" > "$W/samples.csv"
fault=none
start=$SECONDS
faults=(hang garbage error restart-sim restart-pg truncated oversized:9000000 unknown-categories hang error)
i=0
while (( SECONDS - start < SECONDS_TOTAL )); do
  t=$((SECONDS - start))
  # Every minute: 15 s of the next fault.
  if (( t % 60 == 30 && t > 0 )) && [ "$fault" = none ]; then
    fault=${faults[$((i % ${#faults[@]}))]}; i=$((i + 1)); fstart=$t
    case $fault in
      restart-sim) kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true; sleep 3; start_sim ;;
      restart-pg) kill "$PG_PID"; wait "$PG_PID" 2>/dev/null || true; sleep 3; start_pg ;;
      *) echo "$fault" > "$W/control" ;;
    esac
  elif [ "$fault" != none ] && (( t - fstart >= 15 )); then
    rm -f "$W/control"; fault=none
  fi
  if (( t % 5 == 0 )); then
    rss=$(awk '/VmRSS/{print $2}' /proc/$AGENT/status)
    fds=$(ls /proc/$AGENT/fd | wc -l)
    read -r ut st < <(awk '{print $14, $15}' /proc/$AGENT/stat)
    cpu=$(python3 -c "print(round(($ut+$st)/$TICK, 2))")
    echo "$t,$rss,$fds,$cpu,$fault" >> "$W/samples.csv"
  fi
  sleep 1
done
kill -0 "$AGENT" || { echo "the agent died" >&2; exit 1; }
poll_errors=$(python3 -c 'import sys,urllib.request; print([l for l in urllib.request.urlopen(sys.argv[1]).read().decode().splitlines() if l.startswith("arkouda_agent_poll_errors_total")][0].split()[-1])' "http://127.0.0.1:$PG_PORT/metrics")
cp "$W/samples.csv" benches/soak-samples.csv
python3 - "$W/samples.csv" "$LOCALES" "$SECONDS_TOTAL" "$poll_errors" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
warm = [r for r in rows if int(r["t_s"]) >= 60]
first, last = warm[0], warm[-1]
rss = [int(r["rss_kib"]) for r in warm]
fds = [int(r["fds"]) for r in warm]
span = int(last["t_s"]) - int(first["t_s"])
cpu_rate = (float(last["cpu_s"]) - float(first["cpu_s"])) / span
half = len(warm) // 2
def rate(a, b): return (float(b["cpu_s"]) - float(a["cpu_s"])) / max(1, int(b["t_s"]) - int(a["t_s"]))
print(f"soak: {sys.argv[2]} locales, 1 s interval, {sys.argv[3]} s, faults every minute; poll errors counted: {sys.argv[4]}")
print(f"RSS after warm-up: first {rss[0]/1024:.1f} MiB, min {min(rss)/1024:.1f}, max {max(rss)/1024:.1f}, last {rss[-1]/1024:.1f} MiB")
print(f"open fds after warm-up: first {fds[0]}, min {min(fds)}, max {max(fds)}, last {fds[-1]}")
print(f"CPU: {cpu_rate*100:.2f}% of one core on average; first half {rate(warm[0], warm[half])*100:.2f}%, second half {rate(warm[half], warm[-1])*100:.2f}%")
PY
echo "samples: benches/soak-samples.csv"
