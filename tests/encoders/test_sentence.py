"""Students and sentence-transformers folders through the real loaders, on tiny models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from polyclip.encoders import EncoderError, load_text_encoder
from polyclip.encoders.sentence import SentenceEncoder, pool

TEXTS = ["a dog runs in the park", "ein hund läuft", "le chat", "two red cat", "a", "un homme"]


def _student(backbone: Path, head: str = "linear", pooling: str = "mean") -> SentenceEncoder:
    return SentenceEncoder.new_student(
        backbone,
        dimension=16,
        space="teacher-x",
        teacher="teacher-x",
        pooling=pooling,  # type: ignore[arg-type]
        head=head,  # type: ignore[arg-type]
        prefixes={"query": "query: ", "passage": "passage: "},
        max_seq_length=24,
    )


def test_student_shapes_and_unit_norm(backbone_dir: Path) -> None:
    enc = _student(backbone_dir)
    out = enc.encode(TEXTS)
    assert out.shape == (len(TEXTS), 16) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert enc.dimension == 16 and enc.info.space == "teacher-x"


def test_deterministic_and_batch_invariant(xlmr_dir: Path) -> None:
    enc = _student(xlmr_dir)
    one = np.concatenate([enc.encode([t]) for t in TEXTS])
    eight = enc.encode(TEXTS, batch_size=8)
    again = enc.encode(TEXTS, batch_size=2)
    np.testing.assert_allclose(one, eight, atol=1e-5)
    np.testing.assert_allclose(eight, again, atol=1e-5)


def test_order_is_kept_when_sorting_by_length(xlmr_dir: Path) -> None:
    enc = _student(xlmr_dir)
    rev = enc.encode(TEXTS[::-1])
    np.testing.assert_allclose(enc.encode(TEXTS)[::-1], rev, atol=1e-5)


def test_overlong_input_is_truncated(xlmr_dir: Path) -> None:
    enc = _student(xlmr_dir)
    long = " ".join(["dog"] * 500)
    assert enc.count_tokens([long]) == [24]
    cut = " ".join(["dog"] * 22)  # 22 words + <s> + </s> == 24 tokens
    np.testing.assert_allclose(enc.encode([long]), enc.encode([cut]), atol=1e-5)


def test_prefixes_change_the_input(xlmr_dir: Path) -> None:
    enc = _student(xlmr_dir)
    assert enc.apply_prefix(["x"], "query") == ["query: x"]
    q = enc.encode(["a dog"], prefix="query")
    np.testing.assert_allclose(q, enc.encode(["query: a dog"]), atol=1e-6)
    assert not np.allclose(q, enc.encode(["a dog"]))
    with pytest.raises(EncoderError, match="prefix"):
        enc.encode(["a"], prefix="doc")  # type: ignore[arg-type]


def test_single_string_is_refused(xlmr_dir: Path) -> None:
    with pytest.raises(EncoderError, match="list"):
        _student(xlmr_dir).encode("a dog")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("head", "pooling"), [("linear", "mean"), ("tanh", "cls"), ("none", "max")]
)
def test_student_round_trip(tmp_path: Path, xlmr_dir: Path, head: str, pooling: str) -> None:
    enc = SentenceEncoder.new_student(
        xlmr_dir,
        dimension=32,
        space="s",
        teacher="t",
        head=head,
        pooling=pooling,  # type: ignore[arg-type]
    )
    with torch.no_grad():  # make the head non-trivial so a lost head would show
        for p in enc.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    before = enc.encode(TEXTS)
    enc.save(tmp_path / "s", languages=["de", "fr"], provenance={"objective": "dr"})
    card = json.loads((tmp_path / "s" / "polyclip.json").read_text())
    assert card["languages"] == ["de", "fr"] and card["head"] == head
    again = load_text_encoder(tmp_path / "s")
    np.testing.assert_allclose(before, again.encode(TEXTS), atol=1e-5)
    assert again.info.space == "s" and again.info.prefixes == enc.info.prefixes


def test_student_folder_loads_in_sentence_transformers(tmp_path: Path, xlmr_dir: Path) -> None:
    """The on-disk format is a real sentence-transformers folder, head and all."""
    st = pytest.importorskip("sentence_transformers")
    enc = _student(xlmr_dir, head="tanh")
    enc.save(tmp_path / "s")
    ref = st.SentenceTransformer(str(tmp_path / "s"), device="cpu")
    theirs = ref.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(enc.encode(TEXTS), theirs, atol=1e-4)


def test_head_none_needs_matching_width(xlmr_dir: Path) -> None:
    with pytest.raises(EncoderError, match="head 'none'"):
        SentenceEncoder.new_student(xlmr_dir, dimension=16, space="s", teacher="t", head="none")


def test_bare_transformers_dir_uses_mean_pooling(xlmr_dir: Path) -> None:
    enc = load_text_encoder(xlmr_dir)
    assert enc.dimension == 32
    tok = enc.tokenizer(["a dog", "the red cat sits"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = enc.model.backbone(**tok)[0]
    expected = pool(hidden, tok["attention_mask"], "mean")
    expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
    np.testing.assert_allclose(enc.encode(["a dog", "the red cat sits"]), expected, atol=1e-5)


def test_missing_and_corrupt_dirs(tmp_path: Path, xlmr_dir: Path) -> None:
    with pytest.raises(EncoderError, match="not found"):
        load_text_encoder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match="not a model directory"):
        load_text_encoder(tmp_path / "empty")
    broken = tmp_path / "broken"
    shutil.copytree(xlmr_dir, broken)
    (broken / "modules.json").write_text("{not json")
    with pytest.raises(EncoderError, match=r"modules\.json"):
        load_text_encoder(broken)
    (broken / "modules.json").unlink()
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(EncoderError, match="cannot load"):
        load_text_encoder(broken)


def test_offline_hub_id_gives_clear_error() -> None:
    with pytest.raises(EncoderError, match=r"could not be fetched .* Offline"):
        load_text_encoder("sentence-transformers/not-a-real-model-xyz")


def test_student_max_length_is_capped_by_the_backbone(xlmr_dir: Path) -> None:
    enc = SentenceEncoder.new_student(xlmr_dir, dimension=16, space="s", teacher="t")
    assert enc.max_seq_length == 32  # tiny XLM-R: 34 positions - 2; the default asks for 128
    assert enc.encode([" ".join(["dog"] * 300)]).shape == (1, 16)


def test_saved_tokenizer_class_loads_in_transformers_4(tmp_path: Path, xlmr_dir: Path) -> None:
    """transformers 5 names its tokenizers ``TokenizersBackend``; users on 4.x must load ours."""
    _student(xlmr_dir).save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    again = load_text_encoder(tmp_path / "s")
    assert again.count_tokens(["a dog runs"]) == [5]


@pytest.mark.parametrize("kind", ["student", "dual", "bundle"])
def test_tokenize_once_then_encode_ids_equals_encode(
    kind: str, xlmr_dir: Path, dual_dir: Path, tmp_path: Path
) -> None:
    """The server's path (tokenize each input once, batch the ids) gives encode()'s rows."""
    from polyclip.export.bundle import ExportOptions, export_bundle
    from tests.tiny import save_student

    texts = ["a dog runs in the park", "ein hund", "un chat rouge sur la rue", "x" * 200]
    if kind == "student":
        model = save_student(xlmr_dir, tmp_path / "s")
    elif kind == "dual":
        model = dual_dir
    else:
        model = tmp_path / "b"
        export_bundle(save_student(xlmr_dir, tmp_path / "s"), model, ExportOptions())
    enc = load_text_encoder(model)
    ids = enc.tokenize_each(texts)
    assert [len(x) for x in ids] == enc.count_tokens(texts)
    assert max(len(x) for x in ids) <= enc.max_seq_length
    np.testing.assert_allclose(enc.encode_ids(ids[::-1])[::-1], enc.encode(texts), atol=1e-5)
