#!/bin/bash
# Measures one cyclerep build under fio on tmpfs (no disk hides the software's cost): IOPS, latency
# and CPU microseconds per write of each site (from /proc/PID/stat, every thread). With PROFILE=1
# each site also writes a V8 CPU profile (node --cpu-prof) under the run's directory; read it with
# `node bench/profile/cpuprofile-top.mjs FILE`. docs/performance.md, "Where a write's CPU goes".
#
# usage: bench/profile/write-path.sh alone|repl [rw] [bs] [depth] [seconds]
#   BIN=path/to/bin/cyclerep.js picks the build (default: this checkout's, after `npm run build`).
set -euo pipefail
mode=${1:-alone}; rw=${2:-randwrite}; bs=${3:-4k}; depth=${4:-16}; secs=${5:-8}
here=$(cd "$(dirname "$0")" && pwd)
bin=${BIN:-$here/../../bin/cyclerep.js}
dir=/dev/shm/cyclerep-write-path-$mode; rm -rf "$dir"; mkdir -p "$dir"
profile() { if [ "${PROFILE:-0}" = 1 ]; then echo "--cpu-prof --cpu-prof-dir=$dir/prof-$1"; fi; }
cat > "$dir/dr1.yaml" <<Y
group: bench
role: secondary
name: dr1
dataDir: $dir/dr1
listen: 127.0.0.1:17601
http: { listen: 127.0.0.1:17602 }
Y
cat > "$dir/primary.yaml" <<Y
group: bench
role: primary
dataDir: $dir/primary
volumes:
  - { name: vol0, size: 1073741824 }
cycle: { intervalMinMs: 1000, queuedMax: 4 }
ack: immediate
journal: { capacity: 4GiB, segmentSize: 64MiB }
nbd: { listen: 127.0.0.1:17603 }
http: { listen: 127.0.0.1:17604 }
Y
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
if [ "$mode" = repl ]; then
  printf 'secondaries:\n  - { name: dr1, address: 127.0.0.1:17601, connections: 2 }\n' >> "$dir/primary.yaml"
  # shellcheck disable=SC2046
  node $(profile secondary) "$bin" secondary --config "$dir/dr1.yaml" > "$dir/dr1.log" 2>&1 &
  secondary=$!; pids+=("$secondary")
  sleep 1
fi
# shellcheck disable=SC2046
node $(profile primary) "$bin" primary --config "$dir/primary.yaml" > "$dir/primary.log" 2>&1 &
primary=$!; pids+=("$primary")
for _ in $(seq 50); do curl -sf http://127.0.0.1:17604/status > /dev/null 2>&1 && break; sleep 0.2; done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
p0=$(cpu "$primary"); s0=$([ "$mode" = repl ] && cpu "$secondary" || echo 0)
fio --name=write-path --ioengine=nbd --uri=nbd://127.0.0.1:17603/vol0 --rw="$rw" --bs="$bs" \
  --iodepth="$depth" --size=1g --randrepeat=0 --time_based --runtime="$secs" \
  --output-format=json --output="$dir/fio.json" > /dev/null
p1=$(cpu "$primary")
[ "$mode" = repl ] && sleep 3 && s1=$(cpu "$secondary")
ticks=$(getconf CLK_TCK)
node -e '
const [file, p, s, ticks] = process.argv.slice(1);
const job = JSON.parse(require("node:fs").readFileSync(file, "utf8")).jobs[0].write;
const us = (t) => Math.round((Number(t) / Number(ticks)) * 1e6 / job.total_ios);
const pct = job.clat_ns.percentile;
let line = `writes ${job.total_ios} iops ${Math.round(job.iops)} p50us ${Math.round(pct["50.000000"] / 1000)} p99us ${Math.round(pct["99.000000"] / 1000)} primary CPU us/write ${us(p)}`;
if (Number(s) > 0) line += ` secondary CPU us/write ${us(s)}`;
console.log(line);
' "$dir/fio.json" "$((p1 - p0))" "$(( ${s1:-0} - s0 ))" "$ticks"
