"""Probe sentences in ten languages (two each, plus whitespace cases) that every parity check
shares: the e5 conversion in ``polyclip models prepare``, the ONNX export gate and the real-model
tests. Short and long, Latin and non-Latin scripts, so a tokenizer or pooling mismatch shows."""

# fmt: off
PARITY_TEXTS: dict[str, list[str]] = {
    "en": ["A man in a red jacket is riding a bicycle down the hill.",
           "How much protein should an adult eat per day?"],
    "de": ["Zwei Kinder spielen am Strand mit einem großen gelben Ball.",
           "Die Straßenbahn fährt heute wegen Bauarbeiten nicht über den Hauptbahnhof."],
    "fr": ["Une femme âgée lit le journal sur un banc près de la fontaine.",
           "L'équipe a présenté ses résultats trimestriels lors de la réunion de lundi."],
    "cs": ["Pes běží po zelené louce a v tlamě nese klacek.",
           "Příliš žluťoučký kůň úpěl ďábelské ódy."],
    "es": ["Un grupo de músicos toca la guitarra en una plaza llena de gente.",
           "¿Cuál es la mejor época del año para visitar Andalucía?"],
    "ru": ["Мальчик в синей футболке прыгает через лужу.",
           "Москва является крупнейшим городом России по численности населения."],
    "zh": ["一个穿着白色衬衫的男人正在厨房里做饭。",
           "今天下午北京的天气晴朗，气温大约二十五度。"],
    "ja": ["公園で子どもたちがサッカーをしています。",
           "東京駅から京都までは新幹線で約二時間かかります。"],
    "ar": ["رجل يجلس على مقعد في الحديقة ويقرأ كتابا.",
           "تقع مدينة القاهرة على ضفاف نهر النيل في مصر."],
    # whitespace the tokenizer must treat as SentencePiece does (collapse, keep a trailing ▁)
    "ws": ["  Two  spaces,\ta tab and\na newline ", "trailing space "],
}
# fmt: on
