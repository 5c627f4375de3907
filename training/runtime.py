"""Where a run runs: one process or a ``torchrun`` rank, on which device, with which precision."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """This process's place in a (possibly one-process) job."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """One process, or a torchrun rank (``WORLD_SIZE`` > 1): NCCL on CUDA, gloo on CPU."""
    want = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, torch.device(want))
    dev = torch.device("cpu")
    if want.startswith("cuda"):
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), world, dev)


def close_distributed(barrier: bool = True) -> None:
    """Tear the process group down, once the models that used it are gone.

    Why the barrier: a gloo worker thread may still be releasing the tensors of the last
    collective, which takes the GIL, while destroying the group joins those threads with the
    GIL held (pytorch/pytorch#56297): a deadlock at exit. Waiting in a collective first
    releases the GIL until every rank, and so every earlier collective, is done. After a
    failure, ``barrier=False``: the other ranks may never reach it.
    """
    if dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX512-BF16/AMX); elsewhere bf16 is slow."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` here: fp16 needs CUDA (else fp32, with a warning);
    bf16 runs anywhere, with a warning on a CPU without native bf16 (where it is slow); auto is
    bf16 on CUDA or a CPU with native bf16 and fp32 elsewhere (a recipe that runs everywhere)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" or cpu_has_bf16() else "fp32"
    amp = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    if amp is torch.float16 and device.type != "cuda":
        log.warning("precision fp16 needs CUDA; training in fp32 on %s", device)
        return None
    if amp is torch.bfloat16 and device.type != "cuda" and not cpu_has_bf16():
        log.warning("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 may be slower than fp32")
    return amp
