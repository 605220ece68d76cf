#!/usr/bin/env bash
# The demo: a real Pushgateway, the Arkouda simulator (3 locales) and the agent on this
# machine. Shows the job's pushed group, then stops the agent with SIGTERM and shows the
# group is gone. Installs Debian's prometheus-pushgateway if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/prometheus-pushgateway ]; then
  echo "== installing prometheus-pushgateway"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus-pushgateway >/dev/null
fi
echo "== building"
cargo build --quiet --bins

W=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
get() { python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }
wait_for() { # wait_for SECONDS COMMAND...: retry until it succeeds
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > end)); then echo "timed out waiting for: $*" >&2; return 1; fi
    sleep 0.2
  done
}

PG_PORT=$(free_port)
PG=http://127.0.0.1:$PG_PORT
/usr/bin/prometheus-pushgateway --web.listen-address=127.0.0.1:$PG_PORT --persistence.file= >"$W/pushgateway.log" 2>&1 &
pids+=($!)
wait_for 10 get "$PG/-/ready"
echo "== Pushgateway up at $PG"

target/debug/arkouda-sim --metrics-port 0 --locales 3 >"$W/sim.out" 2>"$W/sim.log" &
pids+=($!)
wait_for 10 grep -q READY "$W/sim.out"
SIM_PORT=$(sed -n 's/^READY metrics=\([0-9]*\).*/\1/p' "$W/sim.out")
echo "== Arkouda simulator (3 locales) answering on tcp://127.0.0.1:$SIM_PORT"

ARKOUDA_PUSH_AGENT_CONFIG=/dev/null target/debug/arkouda-push-agent run \
  --arkouda "tcp://127.0.0.1:$SIM_PORT" --pushgateway "$PG" --job-id 4242 --interval 1s \
  2>"$W/agent.log" &
AGENT=$!
pids+=($AGENT)
has_group() { get "$PG/metrics" | grep -q 'arkouda_up{.*slurm_job_id="4242"} 1'; }
wait_for 15 has_group
sleep 2 # a few cycles, so the counters have moved
echo "== the job's group in the Pushgateway (a selection of its series):"
get "$PG/metrics" | grep 'slurm_job_id="4242"' \
  | grep -E '^arkouda_(up|locales|server_info|requests_total|locale_memory_used_bytes|locale_memory_used_ratio|agent_poll_duration_seconds)' \
  | sed 's/^/    /'
echo "== agent log:"
sed 's/^/    /' "$W/agent.log"

echo "== SIGTERM to the agent"
kill -TERM "$AGENT"
wait "$AGENT" && echo "   agent exited 0"
if get "$PG/metrics" | grep -q 'slurm_job_id="4242"'; then
  echo "!! the group is still there" >&2
  exit 1
fi
echo "== the group is gone from the Pushgateway: nothing stale is left."
