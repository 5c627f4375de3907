#!/usr/bin/env bash
# The soak of docs/RELIABILITY.md: the real teacher and a student bundle served as `make serve`
# serves them, 64 clients at 40 requests/s offered mixing embed, upsert and search; upserts
# overwrite 1,000 point ids, so memory that keeps rising is not data. Nothing else may run.
# Usage: bench/soak.sh STUDENT_BUNDLE OUT_DIR [DURATION]
# Texts: Multi30k val German captions; $POLYCLIP_DATA or ../shared/data/multi30k.
# The server trims its heap as configured (memory_trim_interval_s, default 60 s);
# POLYCLIP_MEMORY_TRIM_INTERVAL_S=0 in the environment serves without trims, for comparison.
# OUT_DIR/smaps.txt: each minute, the server's resident KiB by kind of mapping (the store's
# write-ahead log, its segments, other files, anonymous), from /proc/PID/smaps.
set -euo pipefail
student=$1 out=$2 duration=${3:-10m}
port=7993
source bench/serve.sh
trap 'kill "${sampler:-}" 2>/dev/null || true; stop' EXIT
serve "models: {teacher: {path: artifacts/models/all-mpnet-base-v2}, student: {path: $student}}"
mkdir -p "$out"
: > "$out/smaps.txt"
while sleep 60; do
  awk -v t="$(date +%T)" '
    /^[0-9a-f]+-[0-9a-f]+ / { path = $6 }
    /^Rss:/ { if (path ~ /\/wal\//) w += $2; else if (path ~ /\/segments\//) s += $2
              else if (path ~ /^\//) f += $2; else a += $2 }
    END { printf "%s wal %d segments %d otherfiles %d anon %d KiB\n", t, w, s, f, a }' \
    "/proc/$pid/smaps" >> "$out/smaps.txt" 2>/dev/null || break
done & sampler=$!
$bin/polyclip bench soak --url "$url" --model student --index-model teacher --rate 40 \
  --clients 64 --duration "$duration" --upsert-ids 1000 --texts "$data/val.de.gz" --out "$out"
