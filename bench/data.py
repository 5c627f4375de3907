"""Texts the benchmarks send: a built-in multilingual caption list and text files.

Multi30k-style aligned splits are read by :func:`polyclip.encoders.captions.read_parallel`.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from polyclip.bench.client import BenchError

# Short captions in several languages and scripts, so a default load run exercises the tokenizer
# the way multilingual traffic does without needing any data file.
CAPTIONS: tuple[str, ...] = (
    "A dog runs through the tall grass.",
    "Two children are playing football in a park.",
    "A woman in a red coat walks down a snowy street.",
    "A man is riding a bicycle along the beach at sunset.",
    "Ein Hund läuft durch das hohe Gras.",
    "Zwei Kinder spielen Fußball in einem Park.",
    "Eine Frau in einem roten Mantel geht eine verschneite Straße entlang.",
    "Ein Mann fährt bei Sonnenuntergang mit dem Fahrrad am Strand entlang.",
    "Un chien court dans les hautes herbes.",
    "Deux enfants jouent au football dans un parc.",
    "Une femme en manteau rouge marche dans une rue enneigée.",
    "Un homme fait du vélo le long de la plage au coucher du soleil.",
    "Pes běží vysokou trávou.",
    "Dvě děti hrají fotbal v parku.",
    "Žena v červeném kabátě jde zasněženou ulicí.",
    "Muž jede na kole po pláži při západu slunce.",
    "Un perro corre por la hierba alta.",
    "Dos niños juegan al fútbol en un parque.",
    "Un cane corre nell'erba alta.",
    "Due bambini giocano a calcio in un parco.",
    "Собака бежит по высокой траве.",
    "Двое детей играют в футбол в парке.",
    "背の高い草の中を犬が走っている。",
    "两个孩子在公园里踢足球。",
    "كلب يركض عبر العشب الطويل.",
    "लंबी घास में एक कुत्ता दौड़ रहा है।",
    "Bir köpek uzun çimenlerin arasında koşuyor.",
    "Pies biegnie przez wysoką trawę.",
    "A group of people stand in front of an old stone building.",
    "Eine Gruppe von Menschen steht vor einem alten Steingebäude.",
    "Un groupe de personnes se tient devant un vieux bâtiment en pierre.",
    "Skupina lidí stojí před starou kamennou budovou.",
)


def read_lines(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, gzip-compressed when the name ends in ``.gz``."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as f:
                lines = f.read().splitlines()
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise BenchError(f"text file not found: {path}") from e
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise BenchError(f"cannot read {path}: {e}") from e
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise BenchError(f"{path} has no non-empty lines")
    return texts
