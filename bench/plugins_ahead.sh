#!/usr/bin/env bash
# What plugin files listed ahead of `http` cost an HTTP connection: for each
# plugin FILE given and for 0, 10 and 30 copies of it in a listener's
# `detectors` list before `http`, short HTTP connections at concurrency 16
# through refractium (one worker), rounds alternating the counts. Prints a
# markdown table: connections/s (ratio to 0 files in the same round) and
# proxy CPU per connection, medians over the rounds. Every FILE must answer
# `no-match` to an HTTP request.
#
#   bench/plugins_ahead.sh [--refractium BIN] [--secs S] [--rounds R] FILE...
set -euo pipefail
cd "$(dirname "$0")/.."

refractium=target/release/refractium
secs=3
rounds=3
counts=(0 10 30)
while [[ $# -gt 0 ]]; do
    case "$1" in
        --refractium) refractium="$2"; shift 2 ;;
        --secs) secs="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --) shift; break ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[[ $# -ge 1 ]] || { echo "usage: $0 [--refractium BIN] [--secs S] [--rounds R] FILE..." >&2; exit 2; }
bench=target/release/refractium-bench
[[ -x "$bench" && -x "$refractium" ]] || cargo build --release -p refractium -p refractium-bench
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"$bench" backend --bind 127.0.0.1:0 --print-port > "$work/backend.port" &
pids+=($!)
for _ in $(seq 50); do [[ -s "$work/backend.port" ]] && break; sleep 0.1; done
backend_port=$(head -1 "$work/backend.port")

# One cell: N copies of FILE ahead of http; prints "rate cpu".
cell() {
    local file=$1 n=$2 dir="$work/cell" port
    rm -rf "$dir" && mkdir -p "$dir/plugins.d"
    local list=""
    for i in $(seq -w 1 "$n"); do
        [[ $n -gt 0 ]] || break
        cp "$file" "$dir/plugins.d/p$i.wasm"
        list+="p$i, "
    done
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat > "$dir/refractium.yaml" <<EOF
listeners:
  - name: edge
    bind: 127.0.0.1:$port
    detectors: [${list}http]
    detect: { timeout: 3s }
routes:
  - name: web
    match: { protocol: http }
    to: web
backends:
  web: { servers: [127.0.0.1:$backend_port] }
plugins: { dir: plugins.d, cache_dir: $work/cache }
runtime: { workers: 1 }
log: { level: warn }
EOF
    "$refractium" run -c "$dir/refractium.yaml" 2>"$dir/stderr" &
    local pid=$!
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    "$bench" short --to "127.0.0.1:$port" --conc 16 --secs 1 >/dev/null    # warm-up
    local out
    out=$("$bench" short --to "127.0.0.1:$port" --conc 16 --secs "$secs" --pid "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    # "16807 conns/s · … · 50.1 µs CPU per conn"
    echo "$out" | sed -E 's/^([0-9]+) conns\/s.* ([0-9.]+) µs CPU per conn$/\1 \2/'
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "refractium: $("$refractium" --version 2>/dev/null || echo "$refractium") · $(date -u '+%Y-%m-%d %H:%M UTC') · $secs-s cells, median of $rounds rounds, c=16, one worker"
echo
echo "| plugin file | files ahead of http | conns/s (ratio to 0 files) | proxy CPU µs per conn |"
echo "| --- | --- | --- | --- |"
for file in "$@"; do
    declare -A rates=() cpus=() ratios=()
    for r in $(seq "$rounds"); do
        # Alternate the order of the counts round by round.
        order=("${counts[@]}")
        (( r % 2 == 0 )) && order=($(printf '%s\n' "${counts[@]}" | tac))
        declare -A round=()
        for n in "${order[@]}"; do
            read -r rate cpu < <(cell "$file" "$n")
            round[$n]=$rate
            rates[$n]+="$rate "; cpus[$n]+="$cpu "
        done
        for n in "${counts[@]}"; do
            ratios[$n]+="$(awk -v a="${round[$n]}" -v b="${round[0]}" 'BEGIN {printf "%.3f", a / b}') "
        done
        unset round
    done
    for n in "${counts[@]}"; do
        rate=$(tr ' ' '\n' <<<"${rates[$n]}" | grep . | median)
        ratio=$(tr ' ' '\n' <<<"${ratios[$n]}" | grep . | median)
        cpu=$(tr ' ' '\n' <<<"${cpus[$n]}" | grep . | median)
        printf '| %s | %s | %.0f (%.2f×) | %.1f |\n' "$(basename "$file")" "$n" "$rate" "$ratio" "$cpu"
    done
    unset rates cpus ratios
done
