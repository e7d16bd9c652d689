"""A word <-> index vocabulary, saved as one word per line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path


class Vocab:
    """Words in index order. ``stoi`` maps a word to its index, ``itos`` the reverse."""

    def __init__(self, words: Iterable[str] = ()):
        self.itos: list[str] = []
        self.stoi: dict[str, int] = {}
        for w in words:
            self.add(w)

    def add(self, word: str) -> int:
        idx = self.stoi.get(word)
        if idx is None:
            idx = self.stoi[word] = len(self.itos)
            self.itos.append(word)
        return idx

    @classmethod
    def from_counts(
        cls, counts: Counter, specials: Iterable[str] = (), max_size: int | None = None, min_freq: int = 1
    ) -> Vocab:
        """Specials first, then words by descending count (ties broken alphabetically, so it is deterministic)."""
        vocab = cls(specials)
        ranked = sorted(
            (w for w, c in counts.items() if c >= min_freq and w not in vocab.stoi), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(vocab))]
        for w in ranked:
            vocab.add(w)
        return vocab

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def __getitem__(self, word: str) -> int:
        return self.stoi[word]

    def save(self, path: str | Path) -> None:
        Path(path).write_text("".join(w + "\n" for w in self.itos), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls(Path(path).read_text(encoding="utf-8").splitlines())
