"""Cross-lingual retrieval in the teacher's space, retention, and language purity (§6.2).

Documents are the teacher's embeddings of the English captions and queries a model's embeddings
of the same captions in language X, so Recall@k says whether a student's X lands where the
teacher put the English, i.e. whether it can query an index the teacher built. Two baselines
frame that: the teacher itself on X (no student at all) and the student's base model in its own
space (what multilingual pre-training alone reaches, with its e5 ``query:``/``passage:``
prefixes). Each student's retention is its R@1 over the base's, per language, for the languages
it was distilled on and the others (:mod:`polyclip.training.retention`). Two purity figures ask
whether embeddings group by language instead of by meaning: the share of same-language
neighbours among each embedding's 10 nearest, and the paper's clustering purity (k-means into as
many clusters as languages; the share of points in their cluster's majority language). The
retrieval scoring itself is :mod:`polyclip.encoders.metrics`, shared with export and bench.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from polyclip.encoders.base import l2_normalize
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.load import load_text_encoder
from polyclip.encoders.metrics import METRICS, encode_languages, score_languages
from polyclip.encoders.report import new_figure
from polyclip.training.retention import retention_table, similarity_preservation

log = logging.getLogger(__name__)

PURITY_K = 10
_PURITY_CHUNK = 1024  # rows of the similarity matrix held at once


# ---------------------------------------------------------------- representation analysis
def neighbour_purity(embeddings_by_lang: Mapping[str, np.ndarray], k: int = PURITY_K) -> float:
    """Mean share of each embedding's k cosine neighbours (itself excluded) in its own language.

    Neighbours come from the pooled embeddings of parallel captions in all languages. 1.0 means
    the space is split by language; a language-agnostic one, whose nearest neighbours are the
    same caption in the other languages, stays near 1/n_langs.
    """
    sizes = [len(e) for e in embeddings_by_lang.values()]
    if len(sizes) < 2:
        raise EncoderError("language purity needs embeddings in at least two languages")
    if not 1 <= k < sum(sizes):
        raise EncoderError(f"language purity with k={k} needs more than {k} embeddings")
    x = l2_normalize(np.concatenate(list(embeddings_by_lang.values())).astype(np.float32))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    same = 0
    for start in range(0, len(x), _PURITY_CHUNK):
        sims = x[start : start + _PURITY_CHUNK] @ x.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = -np.inf
        neighbours = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        same += int((labels[neighbours] == labels[start : start + len(sims), None]).sum())
    return same / (len(x) * k)


def cluster_purity(embeddings_by_lang: Mapping[str, np.ndarray], seed: int = 0) -> float:
    """k-means (k = number of languages) on the pooled unit embeddings; the share of points in
    their cluster's majority language. 1.0: the clusters are the languages; near 1/k: they are
    not (parallel captions of one meaning fall together)."""
    from sklearn.cluster import KMeans

    sizes = [len(e) for e in embeddings_by_lang.values()]
    if len(sizes) < 2:
        raise EncoderError("clustering purity needs embeddings in at least two languages")
    x = l2_normalize(np.concatenate(list(embeddings_by_lang.values())).astype(np.float32))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    clusters = KMeans(n_clusters=len(sizes), n_init=4, random_state=seed).fit_predict(x)
    majority = sum(np.bincount(labels[clusters == c]).max() for c in np.unique(clusters))
    return float(majority / len(x))


def pca_2d(embeddings_by_lang: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Project the pooled embeddings on their top two principal axes (deterministic signs)."""
    x = np.concatenate(list(embeddings_by_lang.values())).astype(np.float64)
    x -= x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    axes = vt[:2] * np.sign(vt[:2, [0]] + 1e-12)  # SVD signs are arbitrary; pin them for reruns
    points = x @ axes.T
    splits = np.cumsum([len(e) for e in embeddings_by_lang.values()])[:-1]
    return dict(zip(embeddings_by_lang, np.split(points, splits), strict=True))


# ---------------------------------------------------------------- several models, one report
@dataclass
class ModelResult:
    """One table row: a model or baseline, its retrieval numbers, purity and retention."""

    label: str
    role: str  # "teacher", "base" or "student"
    space: str  # "teacher" (documents by the teacher) or "own" (documents by itself)
    path: str
    languages: dict[str, dict[str, float]]
    avg: dict[str, float]
    neighbour_purity: float  # same-language share of the 10 nearest neighbours
    cluster_purity: float  # k-means into as many clusters as languages
    projection: dict[str, np.ndarray] = field(repr=False)  # PCA points per language, not saved
    queries: dict[str, np.ndarray] = field(repr=False)  # per language, not saved
    retention: dict[str, Any] | None = None  # students, when the base was evaluated

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("projection")
        out.pop("queries")
        return out


def _result(
    label: str,
    role: str,
    space: str,
    path: str,
    queries: dict[str, np.ndarray],
    docs: np.ndarray,
    purity_k: int,
) -> ModelResult:
    """Score one model and measure how its query embeddings cluster by language."""
    return ModelResult(
        label,
        role,
        space,
        path,
        **score_languages(queries, docs),
        neighbour_purity=neighbour_purity(queries, purity_k),
        cluster_purity=cluster_purity(queries),
        projection=pca_2d(queries),
        queries=queries,
    )


def evaluate_models(
    teacher: str,
    students: Sequence[str],
    data: Mapping[str, Sequence[str]],
    langs: Sequence[str],
    *,
    base: str | None = None,
    device: str = "cpu",
    purity_k: int = PURITY_K,
) -> list[ModelResult]:
    """The teacher-on-X baseline, the base model in its own space, then each student.

    The teacher's English documents are embedded once and shared by every student; each model
    is loaded, encoded and released in turn so only one sits in memory.
    """
    langs = [*dict.fromkeys(lang for lang in langs if lang != "en")]
    log.info("teacher %s: %d captions x %d languages", teacher, len(data["en"]), len(langs) + 1)
    enc = load_text_encoder(teacher, device=device)
    docs = enc.encode(data["en"], prefix="passage")
    queries = encode_languages(enc, data, langs, "query")
    prefixes = enc.info.prefixes
    same_prefix = prefixes.get("query", "") == prefixes.get("passage", "")
    queries["en"] = docs if same_prefix else enc.encode(data["en"], prefix="query")
    results = [_result("teacher on X", "teacher", "teacher", teacher, queries, docs, purity_k)]
    if base:
        log.info("base %s, in its own space", base)
        enc = load_text_encoder(base, device=device)
        own_docs = enc.encode(data["en"], prefix="passage")
        queries = encode_languages(enc, data, [*langs, "en"], "query")
        results.append(_result("base, own space", "base", "own", base, queries, own_docs, purity_k))
    for path in students:
        log.info("student %s", path)
        enc = load_text_encoder(path, device=device)
        queries = encode_languages(enc, data, [*langs, "en"], "query")
        result = _result(enc.info.name, "student", "teacher", path, queries, docs, purity_k)
        if base:
            own = results[1]
            similarity = {
                lang: similarity_preservation(result.queries[lang], own.queries[lang])
                for lang in langs
            }
            distilled = getattr(enc, "card", {}).get("languages", [])
            result.retention = retention_table(
                result.languages, own.languages, distilled, similarity, len(docs)
            )
        results.append(result)
    labels = [r.label for r in results]
    for r in results:  # two students saved under the same name stay apart in the table
        if labels.count(r.label) > 1:
            r.label = f"{r.label} ({r.path})"
    return results


# ---------------------------------------------------------------- presentation
def markdown_table(results: Sequence[ModelResult], langs: Sequence[str]) -> str:
    """Rows are models, columns R@1/5/10 (%) and MRR@10 per language, the X average, en, purity."""
    groups = [*langs, "avg", "en"]
    head = ["model", "space", *(f"{g} {m.upper()}" for g in groups for m in METRICS),
            "nbr purity@10", "cluster purity"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.label, r.space]
        for g in groups:
            metrics = r.avg if g == "avg" else r.languages[g]
            cells += [
                f"{metrics[m]:.3f}" if m == "mrr@10" else f"{metrics[m]:.1f}" for m in METRICS
            ]
        cells += [f"{r.neighbour_purity:.3f}", f"{r.cluster_purity:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def retention_markdown(results: Sequence[ModelResult], langs: Sequence[str]) -> str:
    """Per student and language: R@1 in the teacher's space, the base's own R@1, retention, ρ."""
    rows = [r for r in results if r.retention]
    if not rows:
        return ""
    head = ["model", *langs, "mean distilled", "mean held-out"]
    lines = [
        "Retention = student R@1 (student(X) → teacher(en)) / base R@1 (base(X) → base(en));"
        " \\* = distilled on that language; ρ = how well the student keeps the base's pairwise"
        " similarities of the same texts (Spearman).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        table = r.retention or {}
        cells = [r.label]
        for lang in langs:
            row = table["languages"].get(lang)
            if row is None or row["retention"] is None:
                cells.append("–")
                continue
            star = "\\*" if row["distilled"] else ""
            cells.append(
                f"{row['retention']:.2f}{star} ({row['student']['r@1']:.1f} / "
                f"{row['base']['r@1']:.1f}; ρ {row.get('similarity_rho', float('nan')):.2f})"
            )
        for kind in ("distilled", "held_out"):
            value = table["mean"][kind]
            cells.append("–" if value is None else f"{value:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_recall(results: Sequence[ModelResult], langs: Sequence[str]) -> Figure:
    """Grouped bars: R@1 per language (and the X average), one bar per model."""
    groups = [*langs, "avg", "en"]
    width = 0.8 / len(results)
    fig = new_figure(max(6.0, 1.4 * len(groups) * max(1, len(results) / 3)), 4)
    ax = fig.subplots()
    for i, r in enumerate(results):
        values = [(r.avg if g == "avg" else r.languages[g])["r@1"] for g in groups]
        offset = (i - (len(results) - 1) / 2) * width
        ax.bar(np.arange(len(groups)) + offset, values, width, label=f"{r.label} [{r.space}]")
    ax.set_xticks(np.arange(len(groups)), [f"{g}→en" if g != "avg" else "avg X→en" for g in groups])
    ax.set_ylabel("R@1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title("X→English caption retrieval")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1, 1))
    return fig


def plot_projection(results: Sequence[ModelResult]) -> Figure:
    """One PCA scatter per model, coloured by language: clusters by colour mean high purity."""
    fig = new_figure(4.5 * len(results), 4.5)
    axes = fig.subplots(1, len(results), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        for lang, pts in r.projection.items():
            ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.5, label=lang)
        ax.set_title(
            f"{r.label}\nneighbour purity {r.neighbour_purity:.2f}, "
            f"cluster purity {r.cluster_purity:.2f}",
            fontsize="medium",
        )
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(markerscale=3, fontsize="small")
    fig.suptitle("PCA of parallel captions, coloured by language")
    return fig
