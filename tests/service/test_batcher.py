"""The micro-batcher on its own: batches cut from the whole queue, budgets, 429, cancel, drain.

Lanes here are plain functions (cost = text length, output = one row per input that encodes
the input), so every assertion is about the batching, not about a model.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from polyclip.service.batcher import Batcher, BatcherClosed, Lane, QueueFull
from polyclip.service.metrics import Metrics


class Recorder:
    """A lane that records every batch it runs and can be held closed to fill the queue."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set once the worker is inside a batch

    def run(self, xs: list[str]) -> np.ndarray:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(xs))
        return np.array([[len(x), ord(x[0])] for x in xs], dtype=np.float32)

    def lane(self) -> Lane:
        return Lane(prepare=list, cost=len, run=self.run)


def make(rec: Recorder, **kw: float) -> Batcher:
    """Tests of the main worker's order turn the express worker off (``express=False``)."""
    opts = dict(max_batch_tokens=1000, max_batch_size=64, max_wait_s=0.05, max_queue_items=100)
    opts.update(kw)
    return Batcher("m", {"text": rec.lane()}, metrics=Metrics(), **opts)  # type: ignore[arg-type]


def test_rows_come_back_to_their_request_in_order() -> None:
    rec = Recorder()
    b = make(rec)

    async def main() -> list:
        jobs = [b.submit("text", [f"{c}" * n for n in (3, 1, 2)]) for c in "abcdef"]
        return await asyncio.gather(*jobs)

    results = asyncio.run(main())
    b.close()
    for c, res in zip("abcdef", results, strict=True):
        assert res.rows[:, 0].tolist() == [3, 1, 2] and set(res.rows[:, 1]) == {ord(c)}
        assert res.costs == [3, 1, 2]
    assert sum(len(x) for x in rec.batches) == 18
    assert len(rec.batches) < 6  # requests from different clients shared batches


def test_batches_group_similar_lengths_within_the_token_budget() -> None:
    rec = Recorder()
    rec.gate.clear()  # hold the worker so everything queues up first
    b = make(rec, max_batch_tokens=40, max_wait_s=0.2)

    async def main() -> None:
        texts = ["x" * n for n in (1, 20, 2, 19, 3, 18, 1, 20)]
        jobs = [asyncio.create_task(b.submit("text", [t])) for t in texts]
        await asyncio.sleep(0.05)
        rec.gate.set()
        await asyncio.gather(*jobs)

    asyncio.run(main())
    b.close()
    for batch in rec.batches:
        padded = max(map(len, batch)) * len(batch)
        assert padded <= 40 or len(batch) == 1
    # long and short texts never share a batch: padding stays low
    assert all(max(map(len, bt)) - min(map(len, bt)) <= 2 for bt in rec.batches)


def test_full_queue_raises_and_cancelled_requests_are_dropped() -> None:
    rec = Recorder()
    rec.gate.clear()
    b = make(rec, max_queue_items=4, max_wait_s=0, express=False)

    async def main() -> None:
        first = asyncio.create_task(b.submit("text", ["a"]))
        assert await asyncio.to_thread(rec.entered.wait, 10)  # taken by the held worker
        waiting = asyncio.create_task(b.submit("text", ["b", "b", "b", "b"]))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await b.submit("text", ["c"])
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # the cancelled inputs free their slots at once, while the worker is still held
        refill = asyncio.create_task(b.submit("text", ["d", "d", "d", "d"]))
        await asyncio.sleep(0.01)
        rec.gate.set()
        await first
        assert (await refill).rows.shape == (4, 2)

    asyncio.run(main())
    b.close()
    assert ["b"] not in rec.batches and all("b" not in bt for bt in rec.batches)


def test_close_drains_the_queue_then_refuses() -> None:
    rec = Recorder()
    b = make(rec, max_wait_s=0.5)

    async def main() -> None:
        job = asyncio.create_task(b.submit("text", ["a", "bb"]))
        await asyncio.sleep(0.01)
        await asyncio.to_thread(b.close)  # long before max_wait: closing flushes at once
        assert (await job).rows.shape == (2, 2)
        with pytest.raises(BatcherClosed):
            await b.submit("text", ["c"])

    asyncio.run(main())


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on() -> None:
    calls = []

    def run(xs: list[str]) -> np.ndarray:
        calls.append(xs)
        if "boom" in xs:
            raise ValueError("bad input")
        return np.ones((len(xs), 2), dtype=np.float32)

    b = Batcher(
        "m",
        {"text": Lane(prepare=list, cost=lambda _: 1, run=run)},
        max_batch_tokens=100,
        max_batch_size=8,
        max_wait_s=0,
        max_queue_items=100,
        metrics=Metrics(),
    )

    async def main() -> None:
        with pytest.raises(ValueError, match="bad input"):
            await b.submit("text", ["boom"])
        assert (await b.submit("text", ["ok"])).rows.shape == (1, 2)

    asyncio.run(main())
    b.close()


def test_a_small_request_is_not_queued_behind_a_large_one() -> None:
    """A client with one text while another sends 90: the one text goes in the very next
    batch, alone with other small requests, not after the 90 (three more batches of 32)."""
    rec = Recorder()
    b = make(rec, max_batch_size=32, max_wait_s=0.0, express=False)

    async def main() -> tuple:
        rec.gate.clear()
        big = asyncio.create_task(b.submit("text", [f"b{i:02d}" for i in range(90)]))
        await asyncio.to_thread(rec.entered.wait, 10)  # the first batch of the 90 is running
        small = asyncio.create_task(b.submit("text", ["s"]))
        tiny = asyncio.create_task(b.submit("text", ["tt", "uu"]))
        await asyncio.sleep(0.05)
        rec.gate.set()
        return await big, await small, await tiny

    asyncio.run(main())
    b.close()
    assert [len(x) for x in rec.batches] == [32, 3, 32, 26]
    assert sorted(rec.batches[1]) == ["s", "tt", "uu"]


class BigHeld(Recorder):
    """A lane whose batches of the large request ("b…" inputs) wait for the gate; others run."""

    def run(self, xs: list[str]) -> np.ndarray:
        if any(x.startswith("b") for x in xs):
            self.entered.set()
            self.gate.wait(10)
        self.batches.append(list(xs))
        return np.array([[len(x), ord(x[0])] for x in xs], dtype=np.float32)


@pytest.mark.parametrize("express", [True, False])
def test_the_express_worker_runs_small_requests_beside_a_large_batch(express: bool) -> None:
    """While a batch of a large request is inside its forward pass, a 1-text request is served
    beside it (express) instead of after it; without the express worker it has to wait."""
    rec = BigHeld()
    rec.gate.clear()
    metrics = Metrics()
    b = Batcher(
        "m", {"text": rec.lane()}, max_batch_tokens=1000, max_batch_size=32, max_wait_s=0.0,
        max_queue_items=200, metrics=metrics, express=express,
    )  # fmt: skip

    async def main() -> None:
        big = asyncio.create_task(b.submit("text", [f"b{i:02d}" for i in range(90)]))
        await asyncio.to_thread(rec.entered.wait, 10)  # the first 32 of the 90 are running
        small = asyncio.create_task(b.submit("text", ["s"]))
        done, _ = await asyncio.wait({small}, timeout=2 if express else 0.3)
        assert (small in done) is express  # served while the large batch still runs, or not
        rec.gate.set()
        assert (await big).rows.shape == (90, 2)
        assert (await small).rows.tolist() == [[1.0, ord("s")]]

    asyncio.run(main())
    b.close()
    assert rec.batches.index(["s"]) == (0 if express else 1)
    express_batches = metrics.registry.get_sample_value("te_batch_express_total", {"model": "m"})
    assert (express_batches or 0.0) == (1.0 if express else 0.0)


def test_with_two_workers_every_input_runs_once_and_comes_back_to_its_request() -> None:
    """Small and large requests racing for both workers: no input is lost or run twice."""
    rec = Recorder()
    b = make(rec, max_batch_size=16, max_wait_s=0.0, max_queue_items=10_000)

    async def main() -> list:
        jobs = [
            b.submit("text", [f"{chr(97 + i % 26)}{i}-{j}" for j in range(1 + (i * 7) % 40)])
            for i in range(120)
        ]
        return await asyncio.gather(*jobs)

    results = asyncio.run(main())
    b.close()
    ran = [x for batch in rec.batches for x in batch]
    assert len(ran) == len(set(ran)) == sum(1 + (i * 7) % 40 for i in range(120))
    for i, res in enumerate(results):
        n = 1 + (i * 7) % 40
        assert res.rows[:, 0].tolist() == [len(f"{chr(97 + i % 26)}{i}-{j}") for j in range(n)]
        assert set(res.rows[:, 1]) == {97 + i % 26}


def test_an_old_input_anchors_the_next_batch_whatever_its_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small requests all the time must not starve a large one: past FAIR_WAIT_S it goes."""
    from polyclip.service import batcher

    monkeypatch.setattr(batcher, "FAIR_WAIT_S", 0.0)
    rec = Recorder()
    b = make(rec, max_batch_size=32, max_wait_s=0.0, express=False)

    async def main() -> None:
        rec.gate.clear()
        first = asyncio.create_task(b.submit("text", ["x"]))
        await asyncio.to_thread(rec.entered.wait, 10)
        big = asyncio.create_task(b.submit("text", [f"b{i:02d}" for i in range(40)]))
        await asyncio.sleep(0.02)
        small = asyncio.create_task(b.submit("text", ["s"]))
        await asyncio.sleep(0.02)
        rec.gate.set()
        await asyncio.gather(first, big, small)

    asyncio.run(main())
    b.close()
    assert rec.batches[1][0].startswith("b")  # the older large request, not the newer "s"


def test_fresh_inputs_are_prepared_in_one_call_and_a_bad_one_fails_alone() -> None:
    """Every request waiting is tokenized in one call; when one input breaks the tokenizer,
    only its request fails."""
    calls: list[list[str]] = []

    def prepare(xs: list[str]) -> list[str]:
        calls.append(list(xs))
        if "bad" in xs:
            raise ValueError("cannot tokenize")
        return xs

    rec = Recorder()
    b = Batcher(
        "m",
        {"text": Lane(prepare=prepare, cost=len, run=rec.run)},
        max_batch_tokens=1000, max_batch_size=64, max_wait_s=0.2, max_queue_items=100,
        metrics=Metrics(),
    )  # fmt: skip

    async def main() -> list:
        jobs = [b.submit("text", xs) for xs in (["a", "bb"], ["ccc"], ["bad"], ["dd"])]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(main())
    b.close()
    assert calls[0] == ["a", "bb", "ccc", "bad", "dd"]  # one call for all, then one each
    assert isinstance(results[2], ValueError)
    assert [r.rows.shape[0] for i, r in enumerate(results) if i != 2] == [2, 1, 1]
