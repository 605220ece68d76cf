#!/usr/bin/env bash
# The agent with remote write as its only sink, against the simulator and a receiver that
# takes every request (reads it, answers 204, counts it): CPU per cycle (all threads, from
# schedstat) and RSS at the end, for each size. What a receiver does with the samples is
# not measured (benches/site.sh runs real ones).
#
#   bash benches/remote_write.sh                       # 1024 and 4096 locales, 20 cycles
#   CYCLES=40 SIZES="64 1024" bash benches/remote_write.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES=${CYCLES:-20}
SIZES=${SIZES:-"1024 4096"}
INTERVAL_MS=${INTERVAL_MS:-250}
cargo build --release --quiet --bins
. benches/tools/common.sh

echo "| locales | agent CPU ms/cycle | agent RSS MiB |"
echo "|---:|---:|---:|"
for L in $SIZES; do
  RW=$(free_port); SIM=$(free_port); rm -f "$W/count"
  python3 - "$RW" "$W/count" <<'PY' &
import os, sys, http.server
port, path = int(sys.argv[1]), sys.argv[2]
n = 0
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global n
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        n += 1
        with open(path + ".new", "w") as f:
            f.write(str(n))
        os.replace(path + ".new", path)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
  RP=$!; pids+=($RP)
  "$R"/arkouda-sim --metrics-port "$SIM" --locales "$L" >/dev/null 2>&1 &
  SP=$!; pids+=($SP); sleep 0.3
  ARKOUDA_PUSH_AGENT_CONFIG=/dev/null "$R"/arkouda-push-agent run --arkouda "tcp://127.0.0.1:$SIM" \
    --remote-write "http://127.0.0.1:$RW/api/v1/write" --job-id bench --interval "${INTERVAL_MS}ms" \
    --arkouda-timeout 10s --lock-dir "$W" 2>"$W/agent.log" &
  A=$!; pids+=($A)
  sent() { cat "$W/count" 2>/dev/null || echo 0; }
  until (( $(sent) >= 3 )); do sleep 0.01; done
  c0=$(cpu_ms "$A"); n0=$(sent)
  until (( $(sent) >= CYCLES + 3 )); do sleep 0.01; done
  c1=$(cpu_ms "$A"); n1=$(sent); rss=$(rss_kib "$A")
  stop "$A"; stop "$SP"; stop "$RP"
  python3 -c "print(f'| $L | {($c1 - $c0) / ($n1 - $n0):.2f} | {$rss / 1024:.1f} |')"
done
