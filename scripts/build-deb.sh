#!/usr/bin/env bash
# Builds the Debian package target/debian/arkouda-push-agent_<version>_<arch>.deb:
#   1. the binary (cargo build --release; skipped with --no-build),
#   2. the man pages, generated from the CLI definition (cargo run --example gen-man),
#   3. the packaged /etc/arkouda-push-agent/config.toml: the commented example with
#      [slurm] select = "none", so that no job gets an agent until the site opts jobs in,
#   4. cargo deb --no-build (cargo-deb is installed if missing).
# PROFILE=dev packages target/debug instead (the tests do: that binary is already built);
# DEB_OUT=DIR writes the .deb there instead of target/debian.
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PROFILE:-release}
build=1
for arg in "$@"; do
    case $arg in
    --no-build) build=0 ;;
    *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
    esac
done

if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "== installing cargo-deb" >&2
    cargo install cargo-deb --locked
fi
if ((build)); then
    cargo build --profile "$profile" --bin arkouda-push-agent >&2
fi

# Generated into a directory of this run, then renamed into place file by file: another
# build running at the same time never sees a missing or half-written asset.
assets=target/deb-assets
mkdir -p "$assets"
tmp=$(mktemp -d "$assets.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cargo run --quiet --profile "$profile" --example gen-man -- "$tmp" >/dev/null

# The packaged config: the example, with no job selected. Fail loudly if the line moved.
grep -qx 'select = "comment"' config/arkouda-push-agent.toml ||
    { echo "config/arkouda-push-agent.toml has no line 'select = \"comment\"'" >&2; exit 1; }
{
    echo '# Installed by the arkouda-push-agent Debian package. No job gets an agent until'
    echo '# you set [slurm] select below (and pushgateway), then add the hooks to slurm.conf:'
    echo '# /usr/share/doc/arkouda-push-agent/install.md. The full example with every key is'
    echo '# /usr/share/doc/arkouda-push-agent/examples/arkouda-push-agent.toml.'
    echo '#'
    sed 's/^select = "comment"$/select = "none"/' config/arkouda-push-agent.toml
} >"$tmp/config.toml"
for f in "$tmp"/*; do
    mv -f "$f" "$assets/"
done

args=(--no-build --no-dbgsym)
if [ -n "${DEB_OUT:-}" ]; then
    args+=(--output "$DEB_OUT")
fi
if [ "$profile" != release ]; then
    # A debug binary is >100 MB of symbols: strip it, or compressing takes minutes.
    args+=(--profile "$profile" --strip)
fi
out=$(cargo deb "${args[@]}" 2>&1) || { echo "$out" >&2; exit 1; }
echo "$out" | tail -n 1
