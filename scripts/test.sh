#!/usr/bin/env bash
# Runs every check and test of arkouda-push-agent, installing first what they need: the
# Debian packages of the real components the tests run (Pushgateway, Prometheus,
# VictoriaMetrics, Slurm and munge, slurmdbd and MariaDB for Slurm's job accounting,
# openssl/htpasswd for TLS and basic auth, man-db, dpkg,
# systemd-analyze) and cargo-nextest and cargo-deb. Exits non-zero on the first failure.
# CI runs this through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests run for real: each binary and the Debian package that provides it.
declare -A provides=(
  [/usr/bin/prometheus-pushgateway]=prometheus-pushgateway
  [/usr/bin/prometheus]=prometheus
  [/usr/bin/promtool]=prometheus
  [/usr/bin/victoria-metrics]=victoria-metrics
  [/usr/bin/openssl]=openssl
  [/usr/bin/htpasswd]=apache2-utils
  [/usr/sbin/slurmctld]=slurm-wlm
  [/usr/sbin/slurmd]=slurm-wlm
  [/usr/bin/sbatch]=slurm-wlm
  [/usr/sbin/munged]=munge
  [/usr/sbin/mungekey]=munge
  [/usr/sbin/slurmdbd]=slurmdbd
  [/usr/sbin/mariadbd]=mariadb-server
  [/usr/bin/mariadb-install-db]=mariadb-server
  [/usr/bin/systemd-analyze]=systemd
  [/usr/bin/man]=man-db
  [/usr/bin/dpkg-deb]=dpkg
  [/usr/bin/curl]=curl
  [/usr/bin/nsenter]=util-linux
  [/usr/sbin/ip]=iproute2
)
need=()
for bin in "${!provides[@]}"; do
  [ -x "$bin" ] || need+=("${provides[$bin]}")
done
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u | grep .)
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

# tests/deb.rs builds and installs the Debian package with cargo-deb.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "== installing cargo-deb"
  cargo install cargo-deb --locked
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== tests (unit and end-to-end against a real Pushgateway and the simulator)"
cargo nextest run --all-targets --no-fail-fast
