"""The teacher cache: computed once, keyed by teacher identity, exact, resumable, image anchors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import polyclip.training.teacher_cache as tc
from polyclip.encoders.load import load_encoders
from polyclip.encoders.sentence import SentenceEncoder
from polyclip.encoders.space import compute_space_id
from polyclip.training.data import DataError
from polyclip.training.teacher_cache import TeacherCache
from tests.captions import captions
from tests.tiny import save_teacher

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = captions(12)["en"]


@pytest.fixture(scope="module")
def teacher(xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_teacher(xlmr_dir, tmp_path_factory.mktemp("teacher") / "tiny-teacher")


class Counting:
    """Wraps an encode function: counts calls and rows, and can fail on a given call."""

    def __init__(self, encode: tc.EncodeFn, fail_on_call: int = 0) -> None:
        self.encode, self.fail_on_call = encode, fail_on_call
        self.calls = self.rows = 0

    def __call__(self, keys: list[str]) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated crash")
        self.rows += len(keys)
        return self.encode(keys)


def direct(teacher: Path, keys: list[str]) -> np.ndarray:
    return SentenceEncoder.load(teacher).encode(keys)


def test_computes_once_and_matches_direct_encode(
    teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    loads = []
    real_load = tc.load_encoders
    monkeypatch.setattr(tc, "load_encoders", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    cache = TeacherCache.for_teacher(tmp_path, teacher)
    assert cache.ensure(TEXTS + TEXTS[:3]) == len(TEXTS)  # duplicates run once
    np.testing.assert_allclose(cache.get(TEXTS[::-1]), direct(teacher, TEXTS[::-1]), atol=1e-6)
    assert cache.dim == 16 and cache.space == compute_space_id(teacher) and loads == [1]
    again = TeacherCache.for_teacher(tmp_path, teacher)  # a later run, another objective
    assert again.ensure(TEXTS) == 0 and loads == [1]  # no teacher load, no forward
    assert isinstance(again._arrays[0], np.memmap)
    np.testing.assert_array_equal(again.get(TEXTS), cache.get(TEXTS))
    with pytest.raises(DataError, match="not in the teacher cache"):
        again.get(["never seen"])


def test_new_keys_go_to_a_new_shard(teacher: Path, tmp_path: Path) -> None:
    cache = TeacherCache.for_teacher(tmp_path, teacher)
    cache.ensure(TEXTS[:5])
    assert cache.ensure(TEXTS) == len(TEXTS) - 5
    assert len(cache.shards) == 2 and len(cache) == len(TEXTS)
    np.testing.assert_allclose(cache.get(TEXTS), direct(teacher, TEXTS), atol=1e-6)


def test_keyed_by_teacher_identity(teacher: Path, xlmr_dir: Path, tmp_path: Path) -> None:
    other = save_teacher(xlmr_dir, tmp_path / "m" / "tiny-teacher", seed=1)  # same name
    a = TeacherCache.for_teacher(tmp_path / "c", teacher)
    b = TeacherCache.for_teacher(tmp_path / "c", other)
    assert a.dir != b.dir
    a.ensure(TEXTS[:4])
    b.ensure(TEXTS[:4])
    assert not np.allclose(a.get(TEXTS[:4]), b.get(TEXTS[:4]))
    prefixed = TeacherCache.for_teacher(tmp_path / "c", teacher, prefix="query")
    assert prefixed.dir not in (a.dir, b.dir)
    # the same weights copied elsewhere under another name: the same cache, nothing recomputed
    copy = shutil.copytree(teacher, tmp_path / "mounted" / "teacher-copy")
    again = TeacherCache.for_teacher(tmp_path / "c", copy)
    assert again.dir == a.dir and again.ensure(TEXTS[:4]) == 0


def test_resumes_after_an_interruption(teacher: Path, tmp_path: Path) -> None:
    encoder = SentenceEncoder.load(teacher)
    crashing = Counting(encoder.encode, fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        TeacherCache(tmp_path, crashing, chunk_rows=2).ensure(TEXTS)
    assert crashing.rows == 4  # two chunks of 2 reached the disk
    counting = Counting(encoder.encode)
    resumed = TeacherCache(tmp_path, counting, chunk_rows=2)
    assert len(resumed) == 0  # the half-written shard is not served
    assert resumed.ensure(TEXTS) == 0  # nothing new: it finishes the interrupted shard
    assert counting.rows == len(TEXTS) - 4
    np.testing.assert_allclose(resumed.get(TEXTS), encoder.encode(TEXTS), atol=1e-6)


def test_image_anchors_use_the_image_tower(clip_dir: Path, tmp_path: Path) -> None:
    paths = []
    for i, colour in enumerate(["red", "blue", "green"]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (40, 30), colour).save(paths[-1])
    cache = TeacherCache.for_teacher(tmp_path / "cache", clip_dir, anchor="image")
    cache.ensure(paths)
    _, image_encoder = load_encoders(clip_dir)
    assert image_encoder is not None
    np.testing.assert_allclose(cache.get(paths), image_encoder.encode(paths), atol=1e-5)
    assert cache.dir.name.startswith("clip-image-")


def test_image_anchor_needs_a_dual_teacher(teacher: Path, tmp_path: Path) -> None:
    cache = TeacherCache.for_teacher(tmp_path, teacher, anchor="image")
    with pytest.raises(DataError, match="dual-encoder teacher"):
        cache.ensure(["x.png"])


def test_ranks_fill_their_own_shares(teacher: Path, tmp_path: Path) -> None:
    """torchrun: two ranks open the same snapshot, each computes half, both then read all."""
    encoder = SentenceEncoder.load(teacher)
    counts = [Counting(encoder.encode), Counting(encoder.encode)]
    caches = [TeacherCache(tmp_path, counts[r], chunk_rows=2) for r in (0, 1)]
    added = [cache.ensure(TEXTS, rank=r, world=2) for r, cache in enumerate(caches)]
    assert added == [len(TEXTS) // 2, len(TEXTS) - len(TEXTS) // 2]
    assert [c.rows for c in counts] == added  # no anchor embedded twice
    for cache in caches:
        cache.refresh()  # after the barrier
        np.testing.assert_allclose(cache.get(TEXTS), encoder.encode(TEXTS), atol=1e-6)
    assert sorted(s["name"] for s in caches[0].shards) == ["00000-000", "00000-001"]


def test_a_format_1_cache_is_converted(teacher: Path, tmp_path: Path) -> None:
    cache = TeacherCache.for_teacher(tmp_path, teacher)
    cache.ensure(TEXTS[:4])
    state = json.loads((cache.dir / "cache.json").read_text())
    shard = {"name": "00000", **json.loads((cache.dir / "00000.json").read_text())}
    (cache.dir / "00000.json").unlink()
    (cache.dir / "cache.json").write_text(json.dumps({**state, "format": 1, "shards": [shard]}))
    again = TeacherCache.for_teacher(tmp_path, teacher)
    assert again.ensure(TEXTS[:4]) == 0 and len(again) == 4
