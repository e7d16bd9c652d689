"""A small word tokeniser for English review text: HTML line breaks out, punctuation split off.

``"Great film!<br /><br />It's GOOD..."`` -> ``["great", "film", "!", "it's", "good", ".", ".", "."]``

Words are runs of letters/digits/underscores (Unicode-aware); an apostrophe *inside* a word is kept
(``don't``, ``it's``) so contractions stay one token. Every other non-space character is a token of
its own. Plain ``re`` is fast enough here (about 3 s for the 50k IMDB reviews on one core).
"""

from __future__ import annotations

import re

# <br />, <br/>, <br>, <BR /> ... all mean a line break in IMDB reviews.
_BREAK = re.compile(r"<br\s*/?\s*>", re.IGNORECASE)
_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")

# Part of the IMDB cache key: changing either pattern changes the tokens, so it must rebuild.
TOKENIZER_VERSION = f"{_BREAK.pattern}|{_TOKEN.pattern}"


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Split ``text`` into word and punctuation tokens."""
    if lowercase:
        text = text.lower()
    return _TOKEN.findall(_BREAK.sub(" ", text))
