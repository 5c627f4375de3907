"""Execution-provider choice and runtime options of bundles.

No GPU exists on the build machines, so the GPU cases call the selection function with the
provider list a GPU build of onnxruntime would report: that list is the only thing faked, and
only because the hardware cannot exist here. Session creation itself is real.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from polyclip.encoders import EncoderError, load_text_encoder
from polyclip.encoders.onnx_bundle import (
    CPU,
    CUDA,
    TRT,
    OnnxTextEncoder,
    RuntimeOptions,
    load_bundle,
    open_session,
    read_bundle,
    select_providers,
)

GPU_BUILD = [TRT, CUDA, CPU]  # what onnxruntime-gpu with TensorRT reports on a GPU machine


def test_gpu_device_prefers_tensorrt_then_cuda(caplog: pytest.LogCaptureFixture) -> None:
    runtime = RuntimeOptions(trt_fp16=True, trt_profile_min_shapes="input_ids:1x1")
    with caplog.at_level(logging.WARNING):
        chosen = select_providers(GPU_BUILD, "cuda:1", runtime, Path("/b"))
    assert [p if isinstance(p, str) else p[0] for p in chosen] == [TRT, CUDA, CPU]
    trt_opts = chosen[0][1]  # type: ignore[index]
    assert trt_opts["device_id"] == 1 and trt_opts["trt_fp16_enable"] is True
    assert trt_opts["trt_engine_cache_enable"] is True
    assert trt_opts["trt_engine_cache_path"] == "/b/trt_cache"
    assert trt_opts["trt_profile_min_shapes"] == "input_ids:1x1"
    assert chosen[1] == (CUDA, {"device_id": 1})
    assert caplog.records == []  # the GPU is there: nothing to warn about


def test_tensorrt_can_be_turned_off() -> None:
    chosen = select_providers(GPU_BUILD, "cuda", RuntimeOptions(tensorrt=False))
    assert chosen == [(CUDA, {"device_id": 0}), CPU]


def test_gpu_asked_but_absent_warns_and_names_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert select_providers([CPU], "cuda") == [CPU]
    msg = caplog.records[-1].getMessage()
    assert caplog.records[-1].levelno == logging.WARNING
    assert "device=cuda" in msg and "runs on CPUExecutionProvider" in msg


def test_cpu_device_stays_on_cpu() -> None:
    assert select_providers(GPU_BUILD, "cpu") == [CPU]
    with pytest.raises(EncoderError, match="cpu, cuda or cuda:N"):
        select_providers([CPU], "tpu")


def test_session_warns_when_onnxruntime_falls_back(
    student_bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A real session: this CPU-only onnxruntime is asked for CUDA first and falls back.
    with caplog.at_level(logging.WARNING, logger="polyclip.encoders.onnx_bundle"):
        session = open_session(
            student_bundle / "model.onnx", [(CUDA, {"device_id": 0}), CPU], RuntimeOptions()
        )
    assert session.get_providers() == [CPU]
    assert any(
        "CUDAExecutionProvider was requested but onnxruntime runs it on CPUExecutionProvider"
        in r.getMessage()
        for r in caplog.records
    )


def test_bundle_runtime_threads_and_tensorrt_profile(student_bundle: Path) -> None:
    meta = read_bundle(student_bundle)
    profile = meta["towers"]["text"]["tensorrt_profile"]
    assert profile == {
        "min": "input_ids:1x1,attention_mask:1x1",
        "opt": "input_ids:32x24,attention_mask:32x24",
        "max": "input_ids:64x24,attention_mask:64x24",
    }
    text, _ = load_bundle(student_bundle, intra_op_threads=1)
    assert isinstance(text, OnnxTextEncoder)
    assert text.graph.runtime.intra_op_threads == 1
    assert text.graph.runtime.trt_profile_max_shapes == profile["max"]
    assert load_text_encoder(student_bundle).count_tokens(["a dog", "x"]) == [4, 3]
