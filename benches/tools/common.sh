# Shared by the whole-process benches (sourced from the repository's root, after the build):
# where the binaries are, a scratch directory and the processes to kill at exit, and the
# readings.

# Where cargo put them (CARGO_TARGET_DIR, e.g. a worktree's own target directory).
R="${CARGO_TARGET_DIR:-target}/release"
W=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ready() { python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# CPU time of every thread of a process, in ms, from schedstat (nanoseconds; /proc/PID/stat
# counts in 10 ms ticks, too coarse for a cycle of a small job).
cpu_ms() { cat /proc/$1/task/*/schedstat | awk '{s+=$1} END {printf "%.3f", s/1e6}'; }
rss_kib() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
