#!/usr/bin/env bash
# The serving measurements of docs/PERFORMANCE.md and docs/RELIABILITY.md in one quiet window,
# one server at a time with only the load client beside it (2 cores: nothing else may run).
# Usage: bench/window.sh FP32_BUNDLE INT8_BUNDLE OUT_DIR [SOAK_DURATION]
#   efficiency-{fp32,int8}/  bench load 1x16 and 32x16 with the server's CPU, then the same
#                            bundle in-process on the same texts (polyclip export efficiency)
#   flame.svg                py-spy on the int8 server under 1 text x 16 clients
#   fairness/                one client, one text per request, alone and beside a client that
#                            sends 256 texts per request, express worker on and off
#   soak/                    embeds, indexes and searches at a fixed offered rate
#   types/                   R@1 and bytes per embedding type (student queries, teacher index)
# Texts: Multi30k val German captions; $POLYCLIP_DATA or ../shared/data/multi30k.
set -euo pipefail
fp32=$1 int8=$2 out=$3 soak=${4:-5m}
port=7991
source bench/serve.sh
texts=$data/val.de.gz
mkdir -p "$out"

for p in fp32 int8; do
  bundle=$fp32; [ $p = int8 ] && bundle=$int8
  serve "models: {student: {path: $bundle}}"
  $bin/polyclip bench load --url $url --model student --concurrency 16 --batch 1,32 \
    --duration 20s --texts "$texts" --endpoint openai --out "$out/efficiency-$p"
  if [ $p = int8 ]; then
    $bin/polyclip bench load --url $url --model student --concurrency 16 --batch 1 \
      --duration 40s --texts "$texts" --endpoint openai --out "$out/flame-load" &
    load=$!
    sleep 15
    $bin/py-spy record --pid "$pid" --duration 20 --rate 200 --subprocesses --nonblocking \
      --output "$out/flame.svg" || echo "py-spy failed (ptrace not allowed?)" >&2
    wait $load
  fi
  stop
  $bin/polyclip export efficiency --bundle "$bundle" --load "$out/efficiency-$p/load.json" \
    --texts "$texts" --out "$out/efficiency-$p"
done
bench/fairness.sh "$int8" "$out/fairness"

# Teacher + int8 student, as `make serve` runs them. The int8 and uint8 output types need
# calibration ranges: the teacher's, and the student takes them.
teacher=artifacts/models/all-mpnet-base-v2
[ -f $teacher/calibration.npy ] || $bin/polyclip models calibrate $teacher --data "$data"
[ -f "$int8/calibration.npy" ] || $bin/polyclip models calibrate "$int8" --like $teacher
serve "models: {teacher: {path: $teacher}, student: {path: $int8}}"
$bin/polyclip bench types --url $url --data "$data" --split val --langs de,fr,cs \
  --index-model teacher --query-model student --out "$out/types"
stop
bench/soak.sh "$int8" "$out/soak" "$soak"
