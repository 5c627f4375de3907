"""Space ids: a fingerprint of the weights, not of the folder they sit in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from polyclip.__main__ import main
from polyclip.encoders import EncoderError, load_text_encoder
from polyclip.encoders.space import (
    CARD_FILE,
    compute_fingerprint,
    compute_space_id,
    fingerprint,
    is_legacy,
    model_label,
    record_space,
    same_space,
    space_of,
)
from tests.tiny import save_dual, save_student, save_teacher


def test_copies_and_resaves_keep_the_id_other_weights_do_not(
    xlmr_dir: Path, tmp_path: Path
) -> None:
    a = save_teacher(xlmr_dir, tmp_path / "a" / "teacher")
    b = save_teacher(xlmr_dir, tmp_path / "b" / "teacher", seed=1)  # same config, same name
    copy = shutil.copytree(a, tmp_path / "mounted" / "models-teacher")
    assert compute_space_id(a) == compute_space_id(copy)
    assert compute_fingerprint(a) != compute_fingerprint(b)
    assert not same_space(compute_space_id(a), compute_space_id(b))
    # The same tensors in a .bin instead of safetensors, with other file bytes: same fingerprint.
    binary = shutil.copytree(a, tmp_path / "bin" / "teacher")
    state = load_file(binary / "model.safetensors")
    (binary / "model.safetensors").unlink()
    torch.save(dict(reversed(state.items())), binary / "pytorch_model.bin")
    assert compute_fingerprint(binary) == compute_fingerprint(a)
    # One changed value changes it.
    state = load_file(a / "model.safetensors")
    key = next(iter(state))
    state[key] = state[key].clone()
    state[key].view(-1)[0] += 1e-3
    torch.save(state, binary / "pytorch_model.bin")
    assert compute_fingerprint(binary) != compute_fingerprint(a)


def test_label_is_the_hub_id_of_a_snapshot_else_the_architecture(tmp_path: Path) -> None:
    clip = save_dual("clip", tmp_path / "whatever-name")
    assert model_label(clip) == "clip"
    snapshot = tmp_path / "hub" / "models--openai--clip-vit-base-patch32" / "snapshots" / "abc"
    shutil.copytree(clip, snapshot)
    assert model_label(snapshot) == "openai/clip-vit-base-patch32"
    assert fingerprint(compute_space_id(snapshot)) == compute_fingerprint(clip)


def test_ids_legacy_ids_and_matching() -> None:
    new = "sentence-transformers/all-mpnet-base-v2@0123456789abcdef"
    assert fingerprint(new) == "0123456789abcdef" and not is_legacy(new)
    assert is_legacy("all-mpnet-base-v2") and not is_legacy("")
    assert same_space(new, "mpnet@0123456789abcdef")  # the label is only a name
    assert not same_space(new, "all-mpnet-base-v2")
    assert same_space("all-mpnet-base-v2", "all-mpnet-base-v2")


def test_loaders_report_weight_ids_students_their_teachers(
    xlmr_dir: Path, clip_dir: Path, tmp_path: Path
) -> None:
    teacher = save_teacher(xlmr_dir, tmp_path / "teacher")
    enc = load_text_encoder(teacher)
    assert enc.info.space == compute_space_id(teacher) and enc.info.legacy_space == "teacher"
    renamed = shutil.copytree(teacher, tmp_path / "models" / "t")
    assert load_text_encoder(renamed).info.space == enc.info.space
    clip = load_text_encoder(clip_dir)
    assert clip.info.space == space_of(clip_dir) and clip.info.space.startswith("clip@")
    student = save_student(xlmr_dir, tmp_path / "student", space=enc.info.space)
    info = load_text_encoder(student).info
    assert info.space == enc.info.space and info.legacy_space == ""


def test_record_space_writes_the_card_and_refuses_students(
    xlmr_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    teacher = save_teacher(xlmr_dir, tmp_path / "teacher")
    space = record_space(teacher, "org/tiny")
    assert space == f"org/tiny@{compute_fingerprint(teacher)}"
    assert json.loads((teacher / CARD_FILE).read_text())["space"] == space
    assert load_text_encoder(teacher).info.space == space  # read, not recomputed
    assert main(["models", "space", str(teacher)]) == 0
    assert capsys.readouterr().out.strip().endswith(space)
    student = save_student(xlmr_dir, tmp_path / "student", space=space)
    with pytest.raises(EncoderError, match="is a student"):
        record_space(student)
    assert main(["models", "space", "--record", str(student)]) == 2
