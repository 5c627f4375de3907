"""Methods that keep the base while it learns the teacher's space, and broad English data,
on tiny models: each is a setting of ``polyclip train`` and does what it says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from polyclip.__main__ import main
from polyclip.encoders.load import load_text_encoder
from polyclip.encoders.sentence import SentenceEncoder, transformer_layers
from polyclip.export.bundle import ExportOptions, export_bundle
from polyclip.training import english
from polyclip.training.config import ConfigError, load_config
from polyclip.training.data import DataError
from polyclip.training.trainer import HEAD_INIT, train
from tests.captions import captions, write_aligned, write_lines, write_po
from tests.tiny import save_teacher

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("methods")
    return {"teacher": save_teacher(xlmr_dir, root / "teacher"), "student": xlmr_dir}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_aligned(tmp_path_factory.mktemp("data"), {"train": (32, 0), "val": (8, 40)})


def run(models: dict, data: Path, tmp: Path, out: str, **kw: object) -> dict:
    base = dict(teacher=str(models["teacher"]), student=str(models["student"]), data=str(data),
                cache_dir=str(tmp / "cache"), out=str(tmp / out), languages=["de", "fr"],
                batch_size=8, queue_size=8, max_steps=3, warmup_steps=1, log_every=1,
                checkpoint_every=0, max_seq_length=32, lr=1e-2)  # fmt: skip
    return train(load_config("dr", base | kw))


def backbone_state(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


# ---- broad English --------------------------------------------------------------------------
def test_english_readers_and_cleaning(tmp_path: Path) -> None:
    wn = tmp_path / "wordnet"
    wn.mkdir()
    lines = ["  1 This software and database is provided under a licence.  \n",
             '00001740 03 n 01 dog 0 000 | a domesticated carnivorous mammal; "the dog barked all '
             'night long"  \n']  # fmt: skip
    (wn / "data.noun").write_text("".join(lines), encoding="utf-8")
    for pos in ("verb", "adj", "adv"):
        (wn / f"data.{pos}").write_text("", encoding="utf-8")
    fortunes = tmp_path / "fortunes"
    fortunes.mkdir()
    quotes = "A city is a large community where people are lonesome together\n\t\t-- Prochnow\n%\n"
    quotes += "Q: Why?\n    A: Because.\n%\nshort one\n"
    (fortunes / "people").write_text(quotes, encoding="utf-8")
    (fortunes / "people.dat").write_bytes(b"\0\1")
    docs = tmp_path / "_sources" / "tutorial"
    docs.mkdir(parents=True)
    rst = ("Title\n=====\n\nA :term:`set` object holds ``distinct`` items. It is unordered::\n\n"
           "   >>> {1, 2}\n   {1, 2}\n\n.. note::\n\n   Skipped directive body text here.\n\n"
           "Another paragraph with plain words in it.\n")  # fmt: skip
    (docs / "intro.rst.txt").write_text(rst, encoding="utf-8")
    text = write_lines(tmp_path / "mine.txt", ["My own  sentence   here.", "x"])
    got = english.read_english([wn, fortunes, tmp_path / "_sources", text])
    assert got == [
        "A domesticated carnivorous mammal",
        "the dog barked all night long",
        "A city is a large community where people are lonesome together",
        "A set object holds distinct items.",
        "It is unordered",
        "Another paragraph with plain words in it.",
        "My own sentence here.",
    ]
    assert len(english.read_english([wn, fortunes], limit=2, seed=0)) == 2
    with pytest.raises(DataError, match="English data not found"):
        english.read_english([tmp_path / "nowhere"])


def test_interface_strings_held_out_text_and_equal_shares(tmp_path: Path) -> None:
    ui, django = tmp_path / "ui" / "locale", tmp_path / "django"
    ui.mkdir(parents=True)
    entries = ["Cancel", "Save the file", "Open the   notebook", "OK"]
    (ui / "app.pot").write_text(
        'msgid ""\nmsgstr ""\n' + "".join(f'\nmsgid "{e}"\nmsgstr ""\n' for e in entries),
        encoding="utf-8",
    )
    write_po(django, "fr")
    # one word is enough for an interface string (a text file still needs three)
    text = write_lines(tmp_path / "mine.txt", ["Cancel", "A sentence of mine.", "Save the file"])
    assert english.read_english([ui]) == ["Cancel", "Save the file", "Open the notebook"]
    assert english.read_english([text, ui]) == [
        "A sentence of mine.", "Save the file", "Cancel", "Open the notebook"
    ]  # fmt: skip
    # what the checks read is never trained: Django's msgids leave the pool
    assert english.read_english([ui], exclude=[django]) == ["Cancel", "Open the notebook"]
    with pytest.raises(DataError, match=r"english_exclude: .* not found"):
        english.read_english([ui], exclude=[tmp_path / "nowhere"])
    big = write_lines(tmp_path / "big.txt", [f"Sentence number {i} here." for i in range(100)])
    got = english.read_english([big, ui, text], limit=8, seed=0)
    assert {"Cancel", "Save the file", "Open the notebook", "A sentence of mine."} < set(got)
    assert len(got) == 8  # the small sources give their unused shares to the big one
    assert english.read_english([big, ui, text], limit=8, seed=0) == got  # seeded


def test_debian_stands_for_the_installed_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(english, "default_sources", lambda: (tmp_path / "a", tmp_path / "b"))
    with pytest.raises(DataError, match="apt-get install"):
        english.english_sources(["debian"])
    (tmp_path / "b").mkdir()
    assert english.english_sources(["debian", "x.txt"]) == [tmp_path / "b", Path("x.txt")]


def test_broad_english_is_mixed_in_at_the_ratio(models: dict, data: Path, tmp_path: Path) -> None:
    sentences = [f"{c} and the {c.split()[-1]}" for c in captions(80)["en"]]  # not in train
    source = write_lines(tmp_path / "english.txt", sentences)
    run(
        models, data, tmp_path, "mix", english_data=[str(source)], english_ratio=0.5, loss="fd"
    )  # fmt: skip  (no DR queue taking anchors out of the mix)
    card = json.loads((tmp_path / "mix/student/polyclip.json").read_text())
    stats = card["provenance"]["data_stats"]
    parallel = sum(stats["pairs"].values()) - stats["broad_english"]
    assert stats["broad_english"] == parallel  # ratio 0.5: as many as the parallel pairs
    assert card["languages"] == ["de", "fr"]  # distilled on their pairs
    run(models, data, tmp_path, "all", english_data=[str(source)], english_ratio=1.0, loss="fd")
    card = json.loads((tmp_path / "all/student/polyclip.json").read_text())
    assert card["languages"] == []  # broad English only: no language was distilled
    tables = list(card["retention"].values())
    assert tables and not any(r["distilled"] for t in tables for r in t["languages"].values())
    with pytest.raises(ConfigError, match="go together"):
        load_config("dr", {"english_data": [str(source)]})
    with pytest.raises(DataError, match="no usable English"):  # every sentence held out
        run(models, data, tmp_path, "none", english_data=[str(source)], english_ratio=0.5,
            english_exclude=[str(source)], loss="fd")  # fmt: skip


# ---- what is trained --------------------------------------------------------------------------
def test_freeze_layers_keeps_the_bottom_layers(models: dict, data: Path, tmp_path: Path) -> None:
    run(models, data, tmp_path, "frozen", freeze_layers=1, val_split="")
    before = backbone_state(models["student"])
    after = backbone_state(tmp_path / "frozen" / "student")
    layer0 = [k for k in before if ".layer.0." in k or "embeddings" in k]
    layer1 = [k for k in before if ".layer.1." in k and k.endswith("weight")]
    assert all(torch.equal(before[k], after[k]) for k in layer0)
    assert not all(torch.equal(before[k], after[k]) for k in layer1)
    with pytest.raises(ConfigError, match="has 2 layers"):
        run(models, data, tmp_path, "toomany", freeze_layers=3, val_split="")


def test_lora_adapters_are_merged_into_a_plain_student(
    models: dict, data: Path, tmp_path: Path
) -> None:
    run(models, data, tmp_path, "lora", lora_r=4, lora_alpha=8.0, val_split="")
    saved = tmp_path / "lora" / "student"
    state = backbone_state(saved)
    assert not any("lora" in k for k in state)
    assert set(state) == set(backbone_state(models["student"]))
    before = backbone_state(models["student"])
    assert not torch.equal(state["encoder.layer.0.attention.self.query.weight"],
                           before["encoder.layer.0.attention.self.query.weight"])  # fmt: skip
    embeddings = next(k for k in state if "word_embeddings" in k)
    assert torch.equal(state[embeddings], before[embeddings])  # not adapted
    card = json.loads((saved / "polyclip.json").read_text())
    assert card["provenance"]["trained_params"] < 10_000  # adapters and head only
    texts = captions(8)["de"]
    np.testing.assert_allclose(  # what was merged is what the adapters computed
        load_text_encoder(saved).encode(texts), _checkpoint_student(tmp_path / "lora", texts),
        atol=1e-5,
    )  # fmt: skip


def _checkpoint_student(run_dir: Path, texts: list[str]) -> np.ndarray:
    """The student as the trainer held it (adapters unmerged), rebuilt from the checkpoint."""
    from peft import LoraConfig, get_peft_model

    cfg = load_config(run_dir / "config.yaml")
    enc = SentenceEncoder.load(run_dir / "student")
    base = SentenceEncoder.new_student(cfg.student, dimension=enc.dimension, space="s",
                                       teacher="t", prefixes={}, max_seq_length=32)  # fmt: skip
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=cfg.lora_targets)
    base.model.backbone = get_peft_model(base.model.backbone, lora)
    base.model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"])
    return base.encode(texts)


def test_mlp_head_round_trips_through_st_and_onnx(
    xlmr_dir: Path, tmp_path: Path, models: dict, data: Path
) -> None:
    run(models, data, tmp_path, "mlp", head_hidden=12, freeze_backbone=True, val_split="")
    saved = tmp_path / "mlp" / "student"
    ours = load_text_encoder(saved)
    assert ours.model.hidden.out_features == 12 and ours.dimension == 16
    texts = captions(6)["fr"]
    st = SentenceTransformer(str(saved), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours.encode(texts), st, atol=1e-5)
    assert backbone_state(saved).keys() == backbone_state(xlmr_dir).keys()
    export_bundle(saved, tmp_path / "bundle", ExportOptions())
    np.testing.assert_allclose(load_text_encoder(tmp_path / "bundle").encode(texts),
                               ours.encode(texts), atol=1e-4)  # fmt: skip
    with pytest.raises(ConfigError, match="MLP head starts random"):
        load_config("dr", {"head_hidden": 8, "head_init": "lstsq"})


def test_preservation_keeps_the_pooled_features_near_the_base(
    models: dict, data: Path, tmp_path: Path
) -> None:
    drifts = {}
    for name, weight in (("free", 0.0), ("kept", 100.0)):
        run(models, data, tmp_path, name, preserve_weight=weight, max_steps=4, val_split="")
        student = SentenceEncoder.load(tmp_path / name / "student")
        base = SentenceEncoder.load(models["student"])
        batch = student.tokenize(captions(16)["de"])
        with torch.no_grad():
            p_s, p_b = student.model.pooled(**batch), base.model.pooled(**batch)
        drifts[name] = float((p_s - p_b).pow(2).sum(-1).mean() / p_b.pow(2).sum(-1).mean())
    assert drifts["kept"] < drifts["free"] / 5
    logged = [json.loads(x) for x in (tmp_path / "kept/metrics.jsonl").read_text().splitlines()]
    assert all("preserve" in x for x in logged if x["type"] == "train")


def test_wise_ft_interpolates_backbone_and_head(
    models: dict, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run(models, data, tmp_path, "ft", head_init="lstsq", val_split="")
    rundir = tmp_path / "ft"
    assert main(["train", "wise", str(rundir), "--alphas", "0,0.5,1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    base, tuned = backbone_state(models["student"]), backbone_state(rundir / "student")
    key = "encoder.layer.1.output.dense.weight"
    for alpha in (0.0, 0.5, 1.0):
        mixed = backbone_state(rundir / f"wise-{alpha:g}")
        torch.testing.assert_close(mixed[key], torch.lerp(base[key], tuned[key], alpha))
    head0 = load_file(rundir / "wise-0" / "2_Dense" / "model.safetensors")
    start = load_file(rundir / HEAD_INIT)
    torch.testing.assert_close(head0["linear.weight"], start["weight"])
    card = json.loads((rundir / "wise-0.5" / "polyclip.json").read_text())
    assert card["provenance"]["wise_ft"]["alpha"] == 0.5 and "retention" not in card
    assert len(transformer_layers(load_text_encoder(rundir / "wise-0.5").model.backbone)) == 2
    shutil.rmtree(rundir / "wise-1")
