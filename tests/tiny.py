"""Tiny random models built in code (open_clip's test style): no hub, no network, seconds to run.

Each builder saves with ``save_pretrained`` so tests go through the real loaders.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    DistilBertConfig,
    DistilBertModel,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SiglipProcessor,
    XLMRobertaConfig,
    XLMRobertaModel,
)

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R ids: bos 0, pad 1, eos 2
WORDS = (
    "a the dog cat man woman child runs walks sits on in street park water red blue two "
    "ein der hund katze mann frau kind läuft sitzt auf im park wasser rot blau zwei "
    "un le chien chat homme femme enfant court marche rue parc eau rouge bleu deux "
    "query: passage: photo of with and"
).split()
VOCAB = {tok: i for i, tok in enumerate(SPECIALS + sorted(set(WORDS)))}
HIDDEN = 32
PREFIXES = {"query": "query: ", "passage": "passage: "}


def word_tokenizer(max_len: int = 32) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with XLM-R's special tokens, made in code."""
    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
        model_max_length=max_len,
    )


def _text_kwargs(max_len: int = 34) -> dict:
    return dict(
        vocab_size=len(VOCAB),
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=max_len,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


def save_backbone(kind: str, out: Path, seed: int = 0) -> Path:
    """A tiny XLM-R, BERT or DistilBERT backbone with its tokenizer, saved to ``out``."""
    torch.manual_seed(seed)
    if kind == "xlmr":
        model = XLMRobertaModel(XLMRobertaConfig(hidden_size=HIDDEN, **_text_kwargs()))
    elif kind == "bert":
        model = BertModel(BertConfig(hidden_size=HIDDEN, **_text_kwargs()))
    elif kind == "distilbert":
        model = DistilBertModel(
            DistilBertConfig(
                vocab_size=len(VOCAB),
                dim=HIDDEN,
                n_layers=2,
                n_heads=2,
                hidden_dim=37,
                max_position_embeddings=34,
                pad_token_id=1,
            )
        )
    else:
        raise ValueError(kind)
    model.save_pretrained(out)
    word_tokenizer().save_pretrained(out)
    return out


def save_dual(kind: str, out: Path, seed: int = 0, dim: int = 16) -> Path:
    """A tiny CLIP or SigLIP model (text + 32x32 vision tower) with its processor."""
    torch.manual_seed(seed)
    text = _text_kwargs(max_len=16)
    text.update(hidden_size=HIDDEN)
    vision = dict(
        hidden_size=HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    tok = word_tokenizer(max_len=16)
    if kind == "clip":
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=dim))
        image_proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)
        processor = CLIPProcessor(image_processor=image_proc, tokenizer=tok)
    elif kind == "siglip":
        text.update(projection_size=HIDDEN)
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
        image_proc = SiglipImageProcessor(size={"height": 32, "width": 32})
        processor = SiglipProcessor(image_processor=image_proc, tokenizer=tok)
    else:
        raise ValueError(kind)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def save_teacher(backbone: Path, out: Path, seed: int = 0, dim: int = 16) -> Path:
    """A tiny text-only teacher in sentence-transformers layout, with no card: it defines its own
    space, whose id is computed from its weights."""
    from polyclip.encoders.sentence import SentenceEncoder

    torch.manual_seed(seed)
    enc = SentenceEncoder.new_student(
        backbone, dimension=dim, space="unused", teacher="none", prefixes={}, name=out.name
    )
    enc.card = {}
    return enc.save(out)


def save_student(
    backbone: Path,
    out: Path,
    head: str = "linear",
    dimension: int = 16,
    space: str = "tiny-teacher",
) -> Path:
    """A tiny student (pooling + head) with prefixes and a polyclip card."""
    from polyclip.encoders.sentence import SentenceEncoder

    torch.manual_seed(1)
    enc = SentenceEncoder.new_student(
        backbone,
        dimension=dimension,
        space=space,
        teacher="tiny-teacher",
        head=head,  # type: ignore[arg-type]
        prefixes=PREFIXES,
        max_seq_length=24,
        name=f"student-{backbone.name}-{head}",
    )
    return enc.save(out)
