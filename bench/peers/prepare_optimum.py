"""Give infinity's optimum (ONNX) engine the files it loads: ``model.onnx`` and, for CPU,
``model_quantized.onnx`` (the name infinity prefers on CPU), exported by optimum itself.

Run with the infinity venv's Python (it has optimum): ``python prepare_optimum.py STUDENT OUT``.
The files sit at the top of OUT, and infinity is started inside OUT with ``--model-id .``:
infinity 0.0.78 hands optimum 2.x the path it globbed, which optimum finds only in that layout
(``onnx/model.onnx``, or an absolute model path, fail with "Could not find any ONNX files").
Why a copy: infinity's optimum engine reads the first module only (the transformer) and applies
its own pooling and normalisation, so it serves the backbone's mean-pooled vectors, not the
student's Dense head; the speed is comparable (the head is one 384 x 768 matmul), the vectors
are not, and the peer table says so.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(student: str, out: str) -> None:
    # Imported here: optimum lives in infinity's venv, not polyclip's (whose tests import every
    # module of the package).
    from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    dst = Path(out)
    if (dst / "model_quantized.onnx").exists():
        return
    shutil.copytree(student, dst, dirs_exist_ok=True)
    model = ORTModelForFeatureExtraction.from_pretrained(student, export=True)
    model.save_pretrained(dst)
    # Dynamic int8 for AVX-512 VNNI, optimum's documented CPU recipe (what infinity users run).
    quantizer = ORTQuantizer.from_pretrained(dst, file_name="model.onnx")
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    quantizer.quantize(save_dir=dst, quantization_config=qconfig)


if __name__ == "__main__":
    main(*sys.argv[1:3])
