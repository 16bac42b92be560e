#!/usr/bin/env bash
# Regenerate docs/hostile.md: run the hostile suite (tests/hostile) with each
# scenario recording what it measured, and write the table.
#
#   tests/hostile/report.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
REFRACTIUM_HOSTILE_REPORT="$rows" cargo test -p refractium --test hostile
{
    echo "# Hostile traffic: what refractium did"
    echo
    echo "Written by \`tests/hostile/report.sh\` from a run of the hostile suite"
    echo "(\`cargo test -p refractium --test hostile\`) on $(date -u '+%Y-%m-%d %H:%M UTC'),"
    echo "$(nproc) cores; each figure is what that run measured. The suite asserts"
    echo "the behaviour; this table says it in numbers. Sizes are those a test can"
    echo "afford. The same scenarios at full size (10,000 slowloris clients, floods"
    echo "as fast as the machine allows): \`refractium-bench hostile\`, results in"
    echo "[\`bench/results/hostile.md\`](../bench/results/hostile.md)."
    echo
    echo "| scenario | load | what the proxy did | what ordinary clients lost |"
    echo "| --- | --- | --- | --- |"
    sort "$rows" | awk -F'\t' '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }'
} > docs/hostile.md
echo "wrote docs/hostile.md ($(wc -l < "$rows") scenarios)"
