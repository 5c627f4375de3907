#!/usr/bin/env bash
# Fairness (docs/RELIABILITY.md): the p95 of 1-text requests alone, and beside one client that
# sends 256 texts per request, with the express worker on and off, one server at a time.
# Usage: bench/fairness.sh BUNDLE OUT_DIR [DURATION]
# Texts: Multi30k val German captions; $POLYCLIP_DATA or ../shared/data/multi30k.
set -euo pipefail
bundle=$1 out=$2 duration=${3:-20s}
port=7992
source bench/serve.sh
mkdir -p "$out"
for express in true false; do
  serve "models: {student: {path: $bundle, express: $express}}"
  load="$bin/polyclip bench load --url $url --model student --concurrency 1 --batch 1 \
    --duration $duration --texts $data/val.de.gz --endpoint openai"
  $load --out "$out/express-$express-alone"
  $load --noise-batch 256 --noise-clients 1 --out "$out/express-$express-noise"
  stop
done
$bin/python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = ["| express | p95 alone ms | p95 beside 256-text requests ms | ratio (target ≤ 3) |",
        "|---|---:|---:|---:|"]
for express in ("true", "false"):
    p95 = [json.loads((out / f"express-{express}-{k}" / "load.json").read_text())["levels"][0]
           ["latency"]["p95_ms"] for k in ("alone", "noise")]
    rows.append(f"| {express} | {p95[0]:.1f} | {p95[1]:.1f} | {p95[1] / p95[0]:.1f}× |")
(out / "fairness.md").write_text("\n".join(rows) + "\n", encoding="utf-8")
print("\n".join(rows))
PY
