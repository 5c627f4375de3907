"""What infinity's optimum int8 costs in accuracy: its ``model_quantized.onnx`` against optimum's
fp32 ``model.onnx`` on the same texts, the figures polyclip's int8 gate uses (min cosine; R@1
of X → English captions in the model's own space, each backend on both sides).

Run with the infinity venv's Python, on the folder ``prepare_optimum.py`` wrote:
``python optimum_parity.py MODEL_DIR DATA_DIR OUT.json [N]``. Pooling and normalisation are
infinity's (mean over the attention mask, L2), so the vectors are the ones it serves.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np


def main(model_dir: str, data: str, out: str, n: str = "1000") -> None:
    # Imported here: these live in infinity's venv (polyclip's tests import every module).
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)

    def lines(lang: str) -> list[str]:
        with gzip.open(Path(data) / f"val.{lang}.gz", "rt", encoding="utf-8") as f:
            return [s.strip() for s in f][: int(n)]

    def embed(session: ort.InferenceSession, texts: list[str]) -> np.ndarray:
        rows = []
        names = {i.name for i in session.get_inputs()}
        for i in range(0, len(texts), 32):
            enc = tok(texts[i : i + 32], padding=True, truncation=True, return_tensors="np")
            feed = {k: v.astype(np.int64) for k, v in enc.items() if k in names}
            hidden = session.run(["last_hidden_state"], feed)[0]
            mask = enc["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
            rows.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
        return np.concatenate(rows)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    cpu = ["CPUExecutionProvider"]
    sessions = {
        name: ort.InferenceSession(str(Path(model_dir) / f), opts, providers=cpu)
        for name, f in (("fp32", "model.onnx"), ("int8", "model_quantized.onnx"))
    }
    english = {k: embed(s, lines("en")) for k, s in sessions.items()}
    report: dict = {"texts": int(n), "langs": {}}
    for lang in ("de", "fr", "cs"):
        texts = lines(lang)
        vecs = {k: embed(s, texts) for k, s in sessions.items()}
        cos = (vecs["fp32"] * vecs["int8"]).sum(1)
        r1 = {
            k: float((np.argmax(vecs[k] @ english[k].T, axis=1) == np.arange(len(texts))).mean())
            for k in sessions
        }
        report["langs"][lang] = {
            "min_cosine": round(float(cos.min()), 4),
            "mean_cosine": round(float(cos.mean()), 4),
            "r@1_fp32": round(100 * r1["fp32"], 1),
            "r@1_int8": round(100 * r1["int8"], 1),
        }
    Path(out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:5])
