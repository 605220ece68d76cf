#!/usr/bin/env bash
# Runs every check and test of arkouda-push-agent, installing first what they need:
# Debian's prometheus-pushgateway and prometheus (the tests run the real servers) and
# cargo-nextest. Exits non-zero on the first failure. CI runs this through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/bin/prometheus-pushgateway ] || need+=(prometheus-pushgateway)
[ -x /usr/bin/prometheus ] || need+=(prometheus)
if ((${#need[@]})); then
  echo "== installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== tests (unit and end-to-end against a real Pushgateway and the simulator)"
cargo nextest run --all-targets --no-fail-fast
