"""``polyclip eval`` and its API: purity checked by hand, retrieval on tiny models, the CLI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polyclip.__main__ import main
from polyclip.encoders.captions import read_parallel
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.load import load_text_encoder
from polyclip.encoders.metrics import evaluate_retrieval, retrieval_metrics
from polyclip.encoders.sentence import SentenceEncoder
from polyclip.training.evaluate import cluster_purity, neighbour_purity
from polyclip.training.retention import similarity_preservation
from tests.captions import write_po
from tests.tiny import HIDDEN, save_backbone

SUBJECTS = [
    ("dog", "hund", "chien"),
    ("cat", "katze", "chat"),
    ("man", "mann", "homme"),
    ("woman", "frau", "femme"),
    ("child", "kind", "enfant"),
]
VERBS = [("runs", "läuft", "court"), ("sits", "sitzt", "marche")]
PLACES = [("park", "park", "parc"), ("water", "wasser", "eau")]


def _captions() -> dict[str, list[str]]:
    """20 distinct parallel captions from the tiny vocabulary (word order need not be right)."""
    out: dict[str, list[str]] = {"en": [], "de": [], "fr": []}
    for s in SUBJECTS:
        for v in VERBS:
            for p in PLACES:
                out["en"].append(f"a {s[0]} {v[0]} in the {p[0]}")
                out["de"].append(f"ein {s[1]} {v[1]} im {p[1]}")
                out["fr"].append(f"un {s[2]} {v[2]} {p[2]}")
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """en and de gzipped, fr plain text: both file forms are read."""
    out = tmp_path_factory.mktemp("multi30k")
    for lang, lines in _captions().items():
        text = "\n".join(lines) + "\n"
        if lang == "fr":
            (out / f"val.{lang}").write_text(text, encoding="utf-8")
        else:
            with gzip.open(out / f"val.{lang}.gz", "wt", encoding="utf-8") as f:
                f.write(text)
    (out / "bad.en").write_text("one\ntwo\n", encoding="utf-8")
    (out / "bad.de").write_text("eins\n", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, xlmr_dir: Path) -> dict[str, Path]:
    """A tiny teacher, a student of it, an e5-like base with prefixes, and a misfit student."""
    root = tmp_path_factory.mktemp("eval_models")
    teacher = save_backbone("bert", root / "teacher", seed=1)
    student = SentenceEncoder.new_student(xlmr_dir, dimension=HIDDEN, space="teacher", teacher="t")
    base = SentenceEncoder.new_student(
        xlmr_dir,
        dimension=HIDDEN,
        space="base",
        teacher="",
        head="none",
        name="base",
        prefixes={"query": "query: ", "passage": "passage: "},
    )
    narrow = SentenceEncoder.new_student(xlmr_dir, dimension=8, space="teacher", teacher="t")
    return {
        "teacher": teacher,
        "student": student.save(root / "student", languages=["de"]),
        "base": base.save(root / "base"),
        "narrow": narrow.save(root / "narrow"),
    }


# ---------------------------------------------------------------- language purity
def test_purity_of_separated_languages_is_one() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 10
    emb = {lang: centres[i] + rng.normal(size=(30, 8)) for i, lang in enumerate("abc")}
    assert neighbour_purity(emb, k=10) == 1.0


def test_purity_by_hand_on_a_circle() -> None:
    """Four captions at 0, 10, 30 and 60 degrees, identical in two languages.

    Each caption's nearest neighbour is its own translation (other language), then the two
    copies of its closest other caption (gaps 10, 10, 20, 30 degrees): 0 of 1, then 1 of 3.
    """
    angles = np.radians([0, 10, 30, 60])
    pts = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    emb = {"en": pts, "de": pts.copy()}
    assert neighbour_purity(emb, k=1) == 0.0
    assert neighbour_purity(emb, k=3) == pytest.approx(1 / 3)


@pytest.mark.parametrize(("k", "expected"), [(3, 0.0), (7, 1 / 7), (11, 2 / 11), (39, 9 / 39)])
def test_purity_of_identical_languages_tends_to_one_over_n(k: int, expected: float) -> None:
    """Four identical languages: k = 4m - 1 neighbours are 3 translations + (m - 1) captions
    in all four languages, one of each in the same language -> (m - 1) / k, towards 1/4."""
    pts = np.random.default_rng(1).normal(size=(50, 16))
    emb = {lang: pts.copy() for lang in ("en", "de", "fr", "cs")}
    assert neighbour_purity(emb, k=k) == pytest.approx(expected)


def test_cluster_purity_separated_languages_and_shared_meanings() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 10
    apart = {lang: centres[i] + rng.normal(size=(30, 8)) for i, lang in enumerate("abc")}
    assert cluster_purity(apart) == 1.0
    meanings = centres[rng.integers(3, size=60)] + rng.normal(size=(60, 8)) * 0.1
    together = {lang: meanings + rng.normal(size=(60, 8)) * 0.01 for lang in "abc"}
    assert cluster_purity(together) == pytest.approx(1 / 3, abs=0.05)


def test_similarity_preservation() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 16))
    assert similarity_preservation(a, a * 3) == pytest.approx(1.0)
    rotated = a @ np.linalg.qr(rng.normal(size=(16, 16)))[0]  # same geometry, another basis
    assert similarity_preservation(a, rotated) == pytest.approx(1.0)
    assert abs(similarity_preservation(a, rng.normal(size=(50, 16)))) < 0.1


def test_purity_rejects_what_it_cannot_measure() -> None:
    with pytest.raises(EncoderError, match="two languages"):
        neighbour_purity({"en": np.eye(4)})
    with pytest.raises(EncoderError, match="k=10"):
        neighbour_purity({"en": np.eye(4), "de": np.eye(4)}, k=10)


# ---------------------------------------------------------------- data and retrieval API
def test_read_parallel_reads_gz_and_plain_and_limits(data_dir: Path) -> None:
    data = read_parallel(data_dir, "val", ["de", "fr"], limit=5)
    assert list(data) == ["en", "de", "fr"]
    assert data["fr"] == _captions()["fr"][:5]
    assert data["de"][0] == "ein hund läuft im park"


def test_evaluate_retrieval_api(models: dict[str, Path], data_dir: Path) -> None:
    data = read_parallel(data_dir, "val", ["de", "fr"])
    teacher = load_text_encoder(models["teacher"])
    student = load_text_encoder(models["student"])
    res = evaluate_retrieval(student, teacher, data, ["de", "fr", "en"])
    assert list(res["languages"]) == ["de", "fr", "en"]
    for m in res["languages"].values():
        assert set(m) == {"r@1", "r@5", "r@10", "mrr@10"}
        assert 0 <= m["r@1"] <= m["r@5"] <= m["r@10"] <= 100
    langs = res["languages"]
    assert res["avg"]["r@5"] == pytest.approx((langs["de"]["r@5"] + langs["fr"]["r@5"]) / 2)
    docs = teacher.encode(data["en"], prefix="passage")
    assert evaluate_retrieval(student, docs, data, ["de", "fr", "en"]) == res
    assert evaluate_retrieval(teacher, docs, data, ["en"])["avg"]["r@1"] == 100.0
    with pytest.raises(EncoderError, match="not in the teacher's embedding space"):
        evaluate_retrieval(load_text_encoder(models["narrow"]), docs, data, ["de"])


# ---------------------------------------------------------------- CLI
def test_cli_writes_report_tables_and_pngs(
    models: dict[str, Path], data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    argv = [
        "eval",
        "--teacher",
        str(models["teacher"]),
        "--base",
        str(models["base"]),
        "--student",
        str(models["student"]),
        "--student",
        str(models["teacher"]),
        "--data",
        str(data_dir),
        "--split",
        "val",
        "--langs",
        "de,fr",
        "--limit",
        "15",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert report["captions"] == 15 and report["languages"] == ["de", "fr"]
    rows = {r["label"]: r for r in report["models"]}
    assert [r["role"] for r in report["models"]] == ["teacher", "base", "student", "student"]
    assert set(rows) == {"teacher on X", "base, own space", "student", "teacher"}
    # The teacher scored as its own student reproduces the teacher-on-X baseline exactly.
    assert rows["teacher"]["languages"] == rows["teacher on X"]["languages"]
    assert rows["teacher"]["neighbour_purity"] == rows["teacher on X"]["neighbour_purity"]
    assert all(0 <= r["neighbour_purity"] <= 1 for r in rows.values())
    assert all(0.5 <= r["cluster_purity"] <= 1 for r in rows.values())  # two languages
    # Retention: the student's R@1 over the base's own-space R@1, distilled languages marked.
    kept = rows["student"]["retention"]["languages"]
    assert kept["de"]["distilled"] is True and kept["fr"]["distilled"] is False
    for lang in ("de", "fr"):
        want = (
            rows["student"]["languages"][lang]["r@1"]
            / rows["base, own space"]["languages"][lang]["r@1"]
        )
        assert kept[lang]["retention"] == pytest.approx(want, abs=1e-4)
    assert rows["teacher"]["retention"]["mean"]["distilled"] is None  # a card with no languages
    english = rows["student"]["retention"]["english"]  # en → en beside the cross-lingual rows
    assert english == pytest.approx(rows["student"]["languages"]["en"], abs=1e-4)
    card = json.loads((models["student"] / "polyclip.json").read_text(encoding="utf-8"))
    assert card["retention"][f"{data_dir.name}/val"]["languages"] == kept
    assert "retention on" in printed and "## Retention" in (out / "eval.md").read_text()
    # The base is scored in its own space with its e5 prefixes.
    base = load_text_encoder(models["base"])
    data = read_parallel(data_dir, "val", ["de"], limit=15)
    own = retrieval_metrics(
        base.encode(data["de"], prefix="query"), base.encode(data["en"], prefix="passage")
    )
    assert rows["base, own space"]["languages"]["de"] == own
    markdown = (out / "eval.md").read_text(encoding="utf-8")
    assert markdown.startswith("# polyclip eval") and markdown.split("\n\n", 1)[1] in printed
    assert "| teacher on X | teacher |" in printed and "de R@1" in printed
    for png in ("r1_by_language.png", "purity_projection.png"):
        with Image.open(out / png) as img:
            img.verify()
            assert img.format == "PNG"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--langs", "de,cs"], "no val.cs.gz or val.cs"),
        (["--split", "bad", "--langs", "de"], "line-aligned files must match"),
        (["--student", "{narrow}", "--langs", "de"], "not in the teacher's embedding space"),
        (["--langs", "en"], "at least one language other than en"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(
    extra: list[str],
    message: str,
    models: dict[str, Path],
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        "eval",
        "--teacher",
        str(models["teacher"]),
        "--data",
        str(data_dir),
        "--out",
        str(tmp_path),
        *(a.replace("{narrow}", str(models["narrow"])) for a in extra),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("polyclip eval: error: ") and message in err


def test_cli_on_gettext_catalogues_and_drift(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for lang in ("de", "fr"):
        write_po(tmp_path / "po", lang)
    argv = ["eval", "--teacher", str(models["teacher"]), "--student", str(models["student"]),
            "--base", str(models["base"]), "--data", str(tmp_path / "po"), "--split", "all",
            "--langs", "de,fr", "--out", str(tmp_path / "out"), "--no-card"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "out/eval.json").read_text())
    assert report["captions"] == 5 and report["split"] == "all"
    card = json.loads((models["student"] / "polyclip.json").read_text())
    assert "po/all" not in card.get("retention", {})  # --no-card
    texts = tmp_path / "traffic.txt"
    texts.write_text("\n".join(_captions()["de"]) + "\n", encoding="utf-8")
    capsys.readouterr()
    drift = ["eval", "drift", "--student", str(models["student"]), "--base", str(models["base"]),
             "--texts", str(texts)]  # fmt: skip
    assert main(drift) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["texts"] == 20 and -1 <= out["similarity_rho"] <= 1
