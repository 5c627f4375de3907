#!/usr/bin/env bash
# The soak of docs/RELIABILITY.md: the real teacher and a student bundle served as `make serve`
# serves them, 64 clients at 40 requests/s offered mixing embed, upsert and search; upserts
# overwrite 1,000 point ids, so memory that keeps rising is not data. Nothing else may run.
# Usage: bench/soak.sh STUDENT_BUNDLE OUT_DIR [DURATION]
# Texts: Multi30k val German captions; $POLYCLIP_DATA or ../shared/data/multi30k.
# TRIM_AT=15m: at that point call glibc's malloc_trim(0) in the server (gdb) and log its
# resident and anonymous memory before and after to OUT_DIR/trim.txt: a drop is memory freed
# but kept by the allocator, not a leak.
set -euo pipefail
student=$1 out=$2 duration=${3:-10m}
port=7993
source bench/serve.sh
trap 'kill "${trimmer:-}" 2>/dev/null || true; stop' EXIT
serve "models: {teacher: {path: artifacts/models/all-mpnet-base-v2}, student: {path: $student}}"
mkdir -p "$out"
if [ -n "${TRIM_AT:-}" ]; then
  memory() { grep -E '^(VmRSS|RssAnon|RssFile)' "/proc/$pid/status" | tr -s ' \t' ' ' | paste -sd ' '; }
  (
    sleep "$TRIM_AT"
    { echo "before malloc_trim(0) at $TRIM_AT: $(memory)"
      gdb -batch -iex 'set auto-solib-add off' -p "$pid" -ex 'sharedlibrary libc\.so' \
        -ex 'call (int) malloc_trim(0)' 2>/dev/null | grep '^\$'
      echo "after: $(memory)"; sleep 60; echo "60 s after: $(memory)"; } > "$out/trim.txt"
  ) & trimmer=$!
fi
$bin/polyclip bench soak --url "$url" --model student --index-model teacher --rate 40 \
  --clients 64 --duration "$duration" --upsert-ids 1000 --texts "$data/val.de.gz" --out "$out"
