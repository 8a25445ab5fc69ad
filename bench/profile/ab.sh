#!/bin/bash
# Compares two builds on the write-path workloads, alternating them REPS times, and prints the
# medians (the machine's noise between runs is large: compare only figures taken side by side).
# usage: bench/profile/ab.sh BASE_CHECKOUT NEW_CHECKOUT [alone|repl] [reps] [seconds]
#   Each checkout must be built (npm run build). Example, against the commit before a change:
#   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && npm ci && npm run build)
set -euo pipefail
base=$1; new=$2; mode=${3:-alone}; reps=${4:-3}; secs=${5:-6}
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp)
for workload in "randwrite 4k 1" "write 256k 8" "randwrite 4k 16"; do
  for _ in $(seq "$reps"); do
    for build in "$base" "$new"; do
      # shellcheck disable=SC2086
      echo "$workload|$build|$(BIN=$build/bin/cyclerep.js "$here/write-path.sh" "$mode" $workload "$secs")" | tee -a "$out"
    done
  done
done
node -e '
const lines = require("node:fs").readFileSync(process.argv[1], "utf8").trim().split("\n");
const groups = new Map();
for (const line of lines) {
  const [workload, build, figures] = line.split("|");
  const numbers = Object.fromEntries([...figures.matchAll(/([a-z0-9/ ]+?) (\d+)(?= |$)/gi)].map((m) => [m[1].trim(), Number(m[2])]));
  const key = `${workload}|${build}`;
  groups.set(key, [...(groups.get(key) ?? []), numbers]);
}
const median = (values) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
for (const [key, runs] of groups) {
  const [workload, build] = key.split("|");
  const fields = Object.keys(runs[0]).filter((field) => field !== "writes");
  console.log(`${workload.padEnd(16)} ${build}: ${fields.map((field) => `${field} ${median(runs.map((run) => run[field]))}`).join(", ")}`);
}
' "$out"
rm -f "$out"
