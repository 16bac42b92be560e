#!/usr/bin/env bash
# Build refractium and refractium-bench, run the comparison (direct vs
# refractium vs HAProxy vs nginx), print the markdown report and write it to
# bench/results/latest.md. Extra arguments go to `refractium-bench run`,
# e.g. `bench/run.sh --quick` or `bench/run.sh --only bulk,haproxy`.
set -euo pipefail
cd "$(dirname "$0")/.."

# 5,000 proxied connections need ~10,000 fds in the proxy; take what we may.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if ! cargo build --release -p refractium -p refractium-bench; then
    echo "run.sh: building refractium failed; benchmarking the peers without it" >&2
    cargo build --release -p refractium-bench
fi

target="${CARGO_TARGET_DIR:-target}"
mkdir -p bench/results
exec "$target/release/refractium-bench" run \
    --refractium "$target/release/refractium" \
    --out bench/results/latest.md \
    "$@"
