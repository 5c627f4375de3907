"""The trainer end to end on tiny models: CLI, resume, early stopping, objectives, accumulation."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from safetensors.torch import load_file

from polyclip.__main__ import main
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.load import load_text_encoder
from polyclip.encoders.sentence import SentenceEncoder
from polyclip.training.config import ConfigError, TrainConfig, load_config, resolve_recipe
from polyclip.training.heads import fit_ridge, pooled_features
from polyclip.training.runtime import close_distributed
from polyclip.training.teacher_cache import TeacherCache
from polyclip.training.trainer import EarlyStopping, Trainer, train
from tests.captions import captions, write_aligned, write_lines, write_po
from tests.tiny import save_teacher

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECIPES = ["fd", "ed", "sd", "mcl", "dr", "dr_fd", "dr_ed", "dr_ed_fd", "default", "quick"]


@pytest.fixture(scope="module")
def models(xlmr_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny teacher, the tiny XLM-R student base, and a dropout-free copy of it."""
    root = tmp_path_factory.mktemp("models")
    no_dropout = shutil.copytree(xlmr_dir, root / "xlmr-no-dropout")
    cfg = json.loads((no_dropout / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (no_dropout / "config.json").write_text(json.dumps(cfg))
    return {"teacher": save_teacher(xlmr_dir, root / "teacher"), "student": xlmr_dir,
            "student_no_dropout": no_dropout}  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Multi30k layout: 32 train captions (de, fr) and 8 val captions."""
    return write_aligned(tmp_path_factory.mktemp("data"), {"train": (32, 0), "val": (8, 40)})


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")  # shared: the teacher runs once for the module


def tiny(models: dict[str, Path], data: Path, cache_dir: Path, out: Path, **kw: Any) -> dict:
    """Overrides that point any recipe at the tiny models and data."""
    base = dict(teacher=str(models["teacher"]), student=str(models["student"]), data=str(data),
                cache_dir=str(cache_dir), out=str(out), languages=["de", "fr"], batch_size=8,
                queue_size=8, max_steps=2, warmup_steps=1, log_every=1, eval_every=0,
                checkpoint_every=0, train_max=0, val_max=0, max_seq_length=32)  # fmt: skip
    return base | kw


def run(models: dict, data: Path, cache_dir: Path, out: Path, recipe: str = "fd", **kw: Any):
    return train(load_config(recipe, tiny(models, data, cache_dir, out, **kw)))


def metrics(out: Path, kind: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def student_state(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


def test_cli_default_recipe_end_to_end(
    models: dict, data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """The recipe `make serve` trains, on tiny models; a file stands in for Debian's English."""
    out = tmp_path / "run"
    sentences = [f"{c} and the {c.split()[-1]}" for c in captions(80)["en"]]
    english = write_lines(tmp_path / "english.txt", sentences)
    write_po(tmp_path / "django", "de")  # the recipe holds the other-domain check's text out
    recipe = "training/recipes/default.yaml"
    argv = ["train", "--config", recipe, "--teacher", str(models["teacher"]),
            "--student", str(models["student"]), "--data", str(data), "--out", str(out),
            "--languages", "de,fr", "--max-steps", "4", "--batch-size", "8", "--queue-size", "16",
            "--seed", "3", "--set", f"cache_dir={cache_dir}", "--set", "eval_every=2",
            "--set", "log_every=2", "--set", f"english_data=[{english}]",
            "--set", f"english_exclude=[{tmp_path / 'django'}]"]  # fmt: skip
    assert main(argv) == 0
    student = load_text_encoder(out / "student")
    teacher_space = load_text_encoder(models["teacher"]).info.space
    assert student.dimension == 16 and student.info.space == teacher_space
    assert student.info.prefixes == {}  # trained without prefixes, so used without them
    card = json.loads((out / "student/polyclip.json").read_text())
    prov = card["provenance"]
    assert card["languages"] == ["de", "fr"] and prov["objective"] == "dr" and prov["seed"] == 3
    assert prov["steps_trained"] == 4 and prov["hyper_parameters"]["freeze_embeddings"] is True
    assert {"teacher", "weights", "data", "epochs", "val", "wall_time_s"} <= set(prov)
    stats = prov["data_stats"]
    parallel = sum(stats["pairs"].values()) - stats["broad_english"]
    share = stats["broad_english"] / (stats["broad_english"] + parallel)
    assert parallel > 0 and abs(share - 0.33) < 0.05  # a third of all pairs are broad English
    train_lines, evals = metrics(out, "train"), metrics(out, "eval")
    assert [r["step"] for r in train_lines] == [2, 4]
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert {"loss", "dr", "lr", "pairs_per_s", "epoch"} <= set(train_lines[0])
    assert {"val_r@1", "de_r@1", "fr_r@5"} <= set(evals[0])
    assert (out / "checkpoint.pt").exists() and (out / "config.yaml").exists()


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"data not found: {tmp_path / 'missing'}")
    assert main(["train", "--config", "nope"]) == 2
    assert "shipped recipes: default, dr, dr_ed" in capsys.readouterr().err
    assert main(["train", "--set", "lr=fast"]) == 2
    assert "lr must be float" in capsys.readouterr().err
    # checked with the config, before any data is read or the teacher runs
    assert main(["train", "--loss", "dr+kl", "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "unknown objective 'kl'" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_missing_student_fails_before_the_teacher_runs(
    models: dict, data: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(EncoderError, match="model directory not found"):
        run(models, data, cache, tmp_path / "run", student=str(tmp_path / "no-student"))
    assert not any(cache.rglob("*.npy"))  # the teacher never embedded a caption


def test_config_layers_and_checks() -> None:
    cfg = load_config("dr", {"lr": 3e-4, "languages": "de, cs"})
    assert (cfg.name, cfg.loss, cfg.queue_size, cfg.lr) == ("dr", "dr", 65536, 3e-4)
    assert cfg.languages == ["de", "cs"] and cfg.out_dir == Path("artifacts/runs/dr")
    assert load_config("fd").lr == 1e-5 and load_config("mcl").epochs == 2
    assert resolve_recipe("training/recipes/sd.yaml").name == "sd.yaml"
    with pytest.raises(ConfigError, match="unknown setting 'lr_max'"):
        load_config(None, {"lr_max": 1})
    with pytest.raises(ConfigError, match="precision must be one of"):
        TrainConfig(precision="fp8")


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_runs(
    recipe: str, models: dict, data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    extra: dict[str, list[str]] = {}
    cfg = load_config(recipe)
    if cfg.english_data:  # a file instead of Debian's packages and make data-ui (not in CI)
        english = [f"{c} and the {c.split()[-1]}" for c in captions(40)["en"]]
        extra["english_data"] = [str(write_lines(tmp_path / "english.txt", english))]
    if cfg.english_exclude:  # a catalogue instead of Django's (make data-gettext, not in CI)
        write_po(tmp_path / "held-out", "de")
        extra["english_exclude"] = [str(tmp_path / "held-out")]
    summary = run(models, data, cache_dir, tmp_path, recipe, eval_every=0, val_split="", **extra)
    assert summary["steps"] == 2
    prov = json.loads((tmp_path / "student/polyclip.json").read_text())["provenance"]
    assert prov["objective"] == load_config(recipe).loss and prov["val"] == {}


def test_loss_decreases_when_overfitting(
    models: dict, data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run(models, data, cache_dir, tmp_path, "mcl", lr=2e-3, max_steps=30, train_max=8,
        log_every=5, val_split="", student=str(models["student_no_dropout"]))  # fmt: skip
    losses = [r["loss"] for r in metrics(tmp_path, "train")]
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("group_by_length", [False, True])
def test_exact_resume(
    group_by_length: bool,
    models: dict,
    data: Path,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """6 steps straight == 3 steps, a crash, and a resume (dropout on: RNG state matters)."""
    kw = dict(
        max_steps=6, checkpoint_every=3, eval_every=2, lr=1e-3, group_by_length=group_by_length
    )
    run(models, data, cache_dir, tmp_path / "straight", "dr_ed", **kw)
    real_step, calls = Trainer._step, []

    def crash_on_fifth(self: Trainer, idx: Any) -> dict:
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("simulated crash")
        return real_step(self, idx)

    monkeypatch.setattr(Trainer, "_step", crash_on_fifth)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(models, data, cache_dir, tmp_path / "resumed", "dr_ed", **kw)
    monkeypatch.setattr(Trainer, "_step", real_step)
    run(models, data, cache_dir, tmp_path / "resumed", "dr_ed", **kw)
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)
            for d in ("straight", "resumed"))  # fmt: skip
    assert a["step"] == b["step"] == 6 and a["stream"] == b["stream"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    torch.testing.assert_close(a["loss"]["losses.dr.queue"], b["loss"]["losses.dr.queue"])
    assert a["loss"]["losses.dr.queue_ptr"] == b["loss"]["losses.dr.queue_ptr"]
    steps = [r["step"] for r in metrics(tmp_path / "resumed", "train")]
    assert steps == [1, 2, 3, 4, 5, 6]  # the crashed run's lines past step 3 were dropped


def test_early_stopping_keeps_the_best(
    models: dict, data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    stopper = EarlyStopping(patience=2)
    assert [stopper.update(s, i) for i, s in enumerate([1, 3, 3, 2])] == [1, 1, 0, 0]
    assert stopper.stop and (stopper.best, stopper.best_step) == (3, 1)
    summary = run(models, data, cache_dir, tmp_path, "mcl", lr=5e-3, max_steps=12,
                  eval_every=1, patience=2)  # fmt: skip
    evals = [r for r in metrics(tmp_path, "eval") if r["step"] > 0]
    best = max(evals, key=lambda r: (r["val_r@1"], -r["step"]))
    prov = json.loads((tmp_path / "student/polyclip.json").read_text())["provenance"]
    assert summary["best_step"] == best["step"] == prov["steps"]
    assert prov["val"]["val_r@1"] == pytest.approx(best["val_r@1"], abs=1e-3)
    after_best = [r for r in evals if r["step"] > best["step"]]
    assert len(after_best) <= 2
    assert prov["stopped_early"] == (summary["steps"] < 12)
    if prov["stopped_early"]:
        assert len(after_best) == 2


@pytest.mark.parametrize("recipe", ["fd", "mcl", "dr"])
def test_grad_accumulation_matches_one_big_batch(
    recipe: str, models: dict, data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Each part's negatives (MCL) and batch keys (DR) are the whole global batch, so two
    accumulated halves give the step of one full batch, for the contrastive objectives too."""
    kw = dict(student=str(models["student_no_dropout"]), lr=1e-3, max_steps=3, val_split="")
    run(models, data, cache_dir, tmp_path / "one", recipe, grad_accum=1, **kw)
    run(models, data, cache_dir, tmp_path / "two", recipe, grad_accum=2, **kw)
    a, b = student_state(tmp_path / "one"), student_state(tmp_path / "two")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_frozen_embeddings_stay_unchanged(
    models: dict, data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run(models, data, cache_dir, tmp_path, "fd", lr=1e-2, freeze_embeddings=True, val_split="")
    after = student_state(tmp_path)
    before = load_file(models["student"] / "model.safetensors")
    key = next(k for k in before if k.endswith("word_embeddings.weight"))
    torch.testing.assert_close(after[f"backbone.{key}"], before[key], rtol=0, atol=0)
    layer = next(k for k in before if k.endswith("layer.0.attention.self.query.weight"))
    assert not torch.equal(after[f"backbone.{layer}"], before[layer])


def test_image_anchors_with_a_clip_teacher(clip_dir: Path, models: dict, tmp_path: Path) -> None:
    caps = captions(12)
    rows = ["en\tde\timage"]
    for i, (en, de) in enumerate(zip(caps["en"], caps["de"], strict=True)):
        Image.new("RGB", (32, 32), (20 * i, 0, 255 - 20 * i)).save(tmp_path / f"{i}.png")
        rows.append(f"{en}\t{de}\t{i}.png")
    write_lines(tmp_path / "train.tsv", rows)
    write_lines(tmp_path / "val.tsv", rows[:5])
    models = {**models, "teacher": clip_dir}
    summary = run(models, tmp_path, tmp_path / "cache", tmp_path / "out", "mcl",
                  anchor="image", languages=["de"], batch_size=4)  # fmt: skip
    assert summary["steps"] == 2 and (tmp_path / "out/student").is_dir()
    assert next((tmp_path / "cache").iterdir()).name.startswith("clip-image-")


def test_bf16_autocast_on_cpu(
    models: dict, data: Path, cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """bf16 runs the student's matmuls in bf16 on a CPU; fp32 master weights; fp16 falls back."""
    seen: list[torch.dtype] = []
    real_init = Trainer.__init__

    def hooked(self: Trainer, *args: Any) -> None:
        real_init(self, *args)
        layer = self.student.model.backbone.encoder.layer[0].attention.self.query
        layer.register_forward_hook(lambda m, i, o: seen.append(o.dtype) if m.training else None)

    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(Trainer, "__init__", hooked)
        run(models, data, cache_dir, tmp_path / "bf16", "dr_ed", precision="bf16", device="cpu",
            max_steps=3, lr=1e-3)  # fmt: skip
        assert seen and set(seen) == {torch.bfloat16}
        seen.clear()
        run(models, data, cache_dir, tmp_path / "fp16", "fd", precision="fp16", device="cpu")
        assert seen and set(seen) == {torch.float32}
    assert "fp16 needs CUDA" in caplog.text
    state = torch.load(tmp_path / "bf16/checkpoint.pt", weights_only=True)["model"]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state.values())


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_native(native: bool) -> None:
    """auto: bf16 on CUDA or a CPU with native bf16, fp32 (no autocast) on any other CPU."""
    from polyclip.training import runtime

    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(runtime, "cpu_has_bf16", lambda: native)
        got = runtime.autocast_dtype("auto", torch.device("cpu"))
        assert got == (torch.bfloat16 if native else None)
        assert runtime.autocast_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert TrainConfig(precision="auto").precision == "auto"  # a valid choice


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16/bf16 autocast needs CUDA")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_on_cuda(
    precision: str, models: dict, data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    run(models, data, cache_dir, tmp_path, "dr_ed", precision=precision, device="cuda",
        max_steps=3, lr=1e-3)  # fmt: skip
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert bool(state["scaler"]) == (precision == "fp16")  # GradScaler only for fp16
    assert metrics(tmp_path, "eval")[-1]["val_r@1"] >= 0


def _ddp_worker(rank: int, world: int, port: int, kw: dict) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    trainer = Trainer(TrainConfig(**kw))
    trainer.fit()
    state = {**trainer.student.model.state_dict(), "queue": trainer.loss.dr.queue}
    torch.save(state, Path(kw["out"]).parent / f"rank{rank}.pt")
    del trainer  # its DDP reducer holds the group: free it first, as train() does
    close_distributed()


def test_ddp_two_ranks_on_gloo(models: dict, data: Path, cache_dir: Path, tmp_path: Path) -> None:
    """Two CPU ranks share each global batch, stay identical, and only rank 0 writes the run."""
    out = tmp_path / "run"
    kw = tiny(models, data, cache_dir, out, loss="dr", max_steps=2, checkpoint_every=1, lr=1e-3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # spawn, not fork: a child forked after the parent's OpenMP pool started can deadlock
    mp.start_processes(_ddp_worker, args=(2, port, kw), nprocs=2, start_method="spawn")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2 and len(state["rng"]) == 2
    assert load_text_encoder(out / "student").dimension == 16
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for key, value in rank0.items():
        torch.testing.assert_close(value, rank1[key], rtol=0, atol=0)
    torch.testing.assert_close(rank0["queue"], state["loss"]["losses.dr.queue"])


def test_validation_on_held_out_languages_and_retention_in_the_card(
    models: dict, data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    """Distilled on German only, validated on German and French: the card says how much of the
    base's own-space R@1 each keeps, French marked as never distilled."""
    run(models, data, cache_dir, tmp_path, "dr", languages=["de"], val_languages=["de", "fr"])
    card = json.loads((tmp_path / "student/polyclip.json").read_text())
    table = card["retention"][f"{data.name}/val"]
    assert table["documents"] == 8
    de, fr = table["languages"]["de"], table["languages"]["fr"]
    assert de["distilled"] is True and fr["distilled"] is False
    for row in (de, fr):
        assert row["base"]["r@1"] > 0 and 0 <= row["student"]["r@1"] <= 100
        assert row["retention"] == round(row["student"]["r@1"] / row["base"]["r@1"], 4)
        assert -1 <= row["similarity_rho"] <= 1
    assert table["mean"] == {"distilled": de["retention"], "held_out": fr["retention"]}
    assert {"fr_r@1", "retention_held_out"} <= set(metrics(tmp_path, "eval")[-1])
    assert card["languages"] == ["de"]


def test_english_only_distillation_runs_one_student_pass(
    models: dict, data: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """student(en) → teacher(en): the pair's two sides are one text, embedded once."""
    sizes: list[int] = []
    real = SentenceEncoder.tokenize
    monkeypatch.setattr(
        SentenceEncoder,
        "tokenize",
        lambda self, texts: sizes.append(len(texts)) or real(self, texts),
    )
    run(models, data, cache_dir, tmp_path, "dr", languages=["en"], val_languages=["de"],
        val_split="")  # fmt: skip
    assert sizes and set(sizes) == {8}  # batch_size 8, not 16: one pass per step
    assert json.loads((tmp_path / "student/polyclip.json").read_text())["languages"] == ["en"]


def test_lstsq_head_is_the_ridge_fit_and_a_student_without_steps(
    models: dict, data: Path, cache_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lstsq"
    summary = run(models, data, cache_dir, out, "fd", head_init="lstsq", freeze_backbone=True,
                  max_steps=0, epochs=0, ridge=1e-3)  # fmt: skip
    assert summary["steps"] == 0
    card = json.loads((out / "student/polyclip.json").read_text())
    fit = card["provenance"]["head_init"]
    assert fit["kind"] == "lstsq" and fit["anchors"] == 32 and fit["fit_cosine"] > 0.5
    assert card["languages"] == []  # fitted on English anchors only: nothing was distilled
    student = SentenceEncoder.load(out / "student")
    base = SentenceEncoder.new_student(
        models["student"], dimension=16, space="x", teacher="x", prefixes={}, max_seq_length=32
    )
    texts = captions(32)["en"]
    x = pooled_features(base, texts)
    y = TeacherCache.for_teacher(cache_dir, models["teacher"]).get(texts)
    w, b = fit_ridge(x, y, 1e-3)
    torch.testing.assert_close(student.model.dense.weight, torch.from_numpy(w), atol=1e-4, rtol=0)
    torch.testing.assert_close(student.model.dense.bias, torch.from_numpy(b), atol=1e-4, rtol=0)
    # As a head initialisation, training starts from the fit: a lower first FD loss.
    random = run(models, data, cache_dir, tmp_path / "random", "fd", max_steps=1, val_split="")
    fitted = run(models, data, cache_dir, tmp_path / "fit", "fd", max_steps=1, val_split="",
                 head_init="lstsq")  # fmt: skip
    assert random["steps"] == fitted["steps"] == 1
    first = [metrics(tmp_path / d, "train")[0]["fd"] for d in ("random", "fit")]
    assert first[1] < first[0] / 2


def test_ridge_fit_matches_least_squares() -> None:
    rng = np.random.default_rng(0)
    x, w_true = rng.normal(size=(200, 6)), rng.normal(size=(6, 3))
    y = x @ w_true + 0.5
    w, b = fit_ridge(x, y, ridge=0.0)
    np.testing.assert_allclose(w.T, w_true, atol=1e-4)
    np.testing.assert_allclose(b, 0.5, atol=1e-4)
    shrunk, _ = fit_ridge(x, y, ridge=10.0)
    assert np.linalg.norm(shrunk) < np.linalg.norm(w)


def test_summary_tabulates_the_best_step_of_each_run(
    models: dict, data: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = []
    for lr in (1e-4, 1e-3):
        runs.append(tmp_path / f"fd-{lr}")
        run(models, data, cache_dir, runs[-1], "fd", lr=lr, max_steps=4, eval_every=2)
    assert main(["train", "summary", *map(str, runs), "--out", str(tmp_path / "grid")]) == 0
    rows = json.loads((tmp_path / "grid/summary.json").read_text())["runs"]
    assert [r["lr"] for r in rows] == [1e-4, 1e-3]
    for row, path in zip(rows, runs, strict=True):
        card = json.loads((path / "student/polyclip.json").read_text())
        assert row["best_step"] == card["provenance"]["steps"]
        assert row["val_r@1"] == card["provenance"]["val"]["val_r@1"]
        assert row["trained_params"] == card["provenance"]["trained_params"] > 0
        (source,) = card["retention"]
        kept = card["retention"][source]
        assert row["retention"][source]["distilled"] == kept["mean"]["distilled"]
        assert row["score"] == pytest.approx(kept["mean"]["distilled"], abs=1e-4)
    assert "| fd-0.001 | fd | 0.001 |" in capsys.readouterr().out
    assert (tmp_path / "grid/summary.png").stat().st_size > 0


def _student_card(
    path: Path, kept: dict[str, float], english: float, seed: int = 0, lr: float = 1e-4
) -> Path:
    """A student folder whose card holds one retention source (de distilled, cs not)."""
    path.mkdir(parents=True)
    langs = {
        lang: {"distilled": lang == "de", "retention": r, "student": {"r@1": 90.0 * r}}
        for lang, r in kept.items()
    }
    means = {"distilled": kept["de"], "held_out": kept["cs"]}
    card = {
        "teacher": "t",
        "provenance": {"hyper_parameters": {"loss": "dr", "lr": lr, "seed": seed}, "steps": 3},
        "retention": {"po/val": {"languages": langs, "mean": means, "english": {"r@1": english}}},
    }
    (path / "polyclip.json").write_text(json.dumps(card))
    return path


def test_summary_selects_on_retention_with_an_english_floor(tmp_path: Path) -> None:
    keeps = _student_card(tmp_path / "run/wise-0.5", {"de": 1.0, "cs": 0.8}, english=97.0)
    forgets = _student_card(tmp_path / "run/wise-1.0", {"de": 1.1, "cs": 0.5}, english=99.0)
    monolingual = _student_card(tmp_path / "exp/other", {"de": 1.2, "cs": 1.0}, english=90.0)
    out = tmp_path / "sel"
    assert (
        main(["train", "summary", str(keeps), str(forgets), str(monolingual), "--out", str(out)])
        == 0
    )
    data = json.loads((out / "summary.json").read_text())
    scores = {r["run"]: r["score"] for r in data["runs"]}
    assert scores == {"run/wise-0.5": 0.9, "run/wise-1.0": 0.8, "exp/other": 1.1}
    assert data["selected"] == "run/wise-0.5"  # exp/other scores higher but fails en→en ≥ 95
    assert data["runs"][0]["r@1"] == {"de": 90.0, "cs": 72.0}
    assert data["runs"][0]["retention"]["po/val"]["min"] == 0.8


def test_summary_gives_mean_and_range_over_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cards = [
        _student_card(tmp_path / "a/s0", {"de": 1.0, "cs": 0.6}, english=99.0, seed=0),
        _student_card(tmp_path / "a/s1", {"de": 0.8, "cs": 0.7}, english=99.0, seed=1),
        _student_card(tmp_path / "b/s0", {"de": 0.5, "cs": 0.5}, english=99.0, lr=3e-4),
    ]
    assert main(["train", "summary", *map(str, cards), "--out", str(tmp_path / "s")]) == 0
    (group,) = json.loads((tmp_path / "s/summary.json").read_text())["seeds"]
    assert (group["objective"], group["lr"], group["seeds"]) == ("dr", 1e-4, [0, 1])
    assert group["runs"] == ["a/s0", "a/s1"]  # the other rate is no seed of theirs
    assert group["po/val distilled"] == pytest.approx({"mean": 0.9, "min": 0.8, "max": 1.0})
    assert group["po/val held_out"] == pytest.approx({"mean": 0.65, "min": 0.6, "max": 0.7})
    assert group["score"]["mean"] == pytest.approx(0.775)
    assert group["val_r@1"] is None  # student folders carry no validation R@1
    assert "| dr | 0.0001 | 0, 1 | – | 0.7750 (0.750–0.800) |" in capsys.readouterr().out
