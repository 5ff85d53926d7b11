"""Filters for synthetic texts: PII scrubbing, length and language-quality rules, exact and near-duplicate removal.

Filters are post-processing: run on generated texts alone they cost no privacy budget. The one exception is
``private_texts``: removing synthetic texts that copy private ones reads the private corpus again, so the
release is then no longer covered by the generator's differential-privacy guarantee alone. The counts record
that (``used_private_data``) so the data card can say so.

The rules, in the order they run (each counts what it removed, so the counts add up to the input):

1. ``empty``: nothing but whitespace.
2. PII scrubbing (replaces, removes nothing): e-mail addresses ``[EMAIL]``; government-id-like numbers
   (``123-45-6789``), Luhn-valid card numbers and IPv4 addresses ``[ID]``; phone numbers ``[PHONE]`` (written
   with ``+`` and a country code, an area code in parentheses, ``-`` or ``.`` separators (``1-800-...`` too), or
   as ``ddd ddd dddd``, with 7 to 15 digits); every name of a user-given list ``[NAME]`` (whole words, any case).
3. ``too_short`` / ``too_long``: fewer than ``min_words`` or more than ``max_words`` whitespace-separated words.
4. ``low_alpha``: letters are less than ``min_alpha_share`` of the non-space characters (markup, numbers, noise).
5. ``repetitive``: more than ``max_repeat_ratio`` of the word 3-grams repeat an earlier 3-gram of the same text
   (``1 - distinct / total``; degenerate loops of a language model score near 1, prose near 0).
6. ``exact_duplicate``: the same text as an earlier kept one after normalisation (Unicode NFKC, case folding,
   runs of whitespace as one space).
7. ``near_duplicate``: Jaccard similarity of character 5-gram sets of at least ``near_duplicate_threshold``
   with an earlier kept text. Candidates come from MinHash with locality-sensitive hashing (128 hashes in 32
   bands of 4: a pair at Jaccard 0.5 is a candidate with probability 0.87, at 0.7 with 0.9998), and each
   candidate's exact Jaccard decides. Character shingles work on short texts, where word shingles are too few.
8. With ``private_texts``: ``private_copy`` (normalised text equal to a private text), ``private_near_copy``
   (Jaccard as in 7 with a private text) and ``private_substring`` (shares a run of ``copy_words``
   consecutive words with a private text).

No rule needs a model or a download. Language identification is left out on purpose: the letter-share and
repetition rules are what can be checked by reading the code.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privsynth.data.schema import VALUE_PATTERNS, luhn_ok
from privsynth.errors import ParameterError

__all__ = [
    "FilterCounts",
    "NearDuplicateIndex",
    "apply_filters",
    "as_texts",
    "normalise",
    "repeat_ratio",
    "scrub_pii",
    "shingles",
    "word_ngrams",
]

PLACEHOLDERS = ("EMAIL", "ID", "PHONE", "NAME")
REMOVAL_RULES = (
    "empty",
    "too_short",
    "too_long",
    "low_alpha",
    "repetitive",
    "exact_duplicate",
    "near_duplicate",
    "private_copy",
    "private_near_copy",
    "private_substring",
)
SHINGLE = 5  # characters per shingle for near-duplicate detection
_HASHES, _BANDS = 128, 32  # MinHash signature length, LSH bands (of 4 rows each)
_PRIME = (1 << 61) - 1
_WHITESPACE = re.compile(r"\s+")


def _unanchored(what: str) -> str:
    """A whole-value PII pattern of :mod:`privsynth.data.schema` as a pattern to find inside free text."""
    return VALUE_PATTERNS[what].pattern.removeprefix("^").removesuffix("$")


_EMAIL = re.compile(_unanchored("e-mail address"))
_GOVERNMENT_ID = re.compile(rf"(?<![\w-]){_unanchored('government id')}(?![\w-])")
_CARD = re.compile(rf"(?<![\w-]){_unanchored('card number')}(?![\w-])")
_NETWORK = re.compile(rf"(?<![\w.]){_unanchored('network address')}(?!\w|\.\d)")
# The schema's phone pattern fits whole values; inside prose it would also take years and counts ("2016 300"),
# so text needs a phone-like layout: a + and country code, an area code in parentheses, - or . separators, or
# the 3-3-4 grouping.
_PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,4}(?!\w)"
    r"|(?<![\w+])(?:1[.-])?(?:\(\d{2,4}\)\s?|\d{2,4}[.-])\d{3,4}[.-]\d{3,4}(?!\w)"
    r"|(?<![\w+])\d{3} \d{3} \d{4}(?!\w)"
)


@dataclass
class FilterCounts:
    """What :func:`apply_filters` did: texts in and kept, removals by rule, PII placeholders inserted.

    :meth:`to_dict` is plain JSON for the data card. ``used_private_data`` is True when the private corpus was
    read to remove copies: the release is then not post-processing of a DP generator alone.
    """

    input: int
    kept: int
    removed: dict[str, int]
    pii_replaced: dict[str, int]
    texts_scrubbed: int
    used_private_data: bool
    settings: dict[str, Any] = field(default_factory=dict)
    kept_index: list[int] = field(default_factory=list, repr=False)  # positions of the kept texts in the input

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "kept": self.kept,
            "removed": dict(self.removed),
            "pii_replaced": dict(self.pii_replaced),
            "texts_scrubbed": self.texts_scrubbed,
            "used_private_data": self.used_private_data,
            "settings": dict(self.settings),
        }


def apply_filters(
    texts: Iterable[str],
    *,
    private_texts: Iterable[str] | None = None,
    names: Iterable[str] = (),
    scrub: bool = True,
    min_words: int = 3,
    max_words: int | None = None,
    min_alpha_share: float = 0.5,
    max_repeat_ratio: float = 0.5,
    deduplicate: bool = True,
    near_duplicate_threshold: float | None = 0.7,
    copy_words: int = 8,
) -> tuple[list[str], FilterCounts]:
    """The texts that pass every rule (scrubbed, in their original order) and the counts for the data card.

    See the module docstring for the rules. ``near_duplicate_threshold=None`` turns near-duplicate removal off
    (within the texts and against ``private_texts``); ``deduplicate=False`` keeps exact duplicates as well.
    """
    texts = as_texts(texts, "texts", allow_empty=True)
    if private_texts is not None:
        private_texts = as_texts(private_texts, "private_texts", allow_empty=True)
    _check_settings(min_words, max_words, min_alpha_share, max_repeat_ratio, near_duplicate_threshold, copy_words)
    name_list = [n.strip() for n in names if isinstance(n, str) and n.strip()]
    name_pattern = _name_pattern(name_list)

    removed = dict.fromkeys(REMOVAL_RULES, 0)
    replaced = dict.fromkeys(PLACEHOLDERS, 0)
    scrubbed_texts = 0
    private = _PrivateCopies.of(private_texts, copy_words, near_duplicate_threshold)
    seen: set[str] = set()
    index = NearDuplicateIndex(near_duplicate_threshold) if deduplicate and near_duplicate_threshold else None
    kept: list[str] = []
    kept_index: list[int] = []
    for position, text in enumerate(texts):
        if not text.strip():
            removed["empty"] += 1
            continue
        if scrub:
            cleaned = _scrub_counting(text, name_pattern, replaced)
            scrubbed_texts += int(cleaned != text)
            text = cleaned
        rule = _quality_rule(text, min_words, max_words, min_alpha_share, max_repeat_ratio) or private.rule(text)
        key = normalise(text)
        if rule is None and deduplicate and key in seen:
            rule = "exact_duplicate"
        grams = shingles(text) if index is not None and rule is None else None
        if rule is None and index is not None and grams is not None and index.match(grams):
            rule = "near_duplicate"
        if rule is not None:
            removed[rule] += 1
            continue
        seen.add(key)
        if index is not None and grams is not None:
            index.add(grams)
        kept.append(text)
        kept_index.append(position)
    settings: dict[str, Any] = {
        "scrub_pii": scrub,
        "names": len(name_list),
        "min_words": min_words,
        "max_words": max_words,
        "min_alpha_share": min_alpha_share,
        "max_repeat_ratio": max_repeat_ratio,
        "deduplicate": deduplicate,
        "near_duplicate": _near_duplicate_rule(near_duplicate_threshold),
        "copy_words": copy_words if private_texts is not None else None,
    }
    return kept, FilterCounts(
        input=len(texts),
        kept=len(kept),
        removed=removed,
        pii_replaced=replaced,
        texts_scrubbed=scrubbed_texts,
        used_private_data=private_texts is not None,
        settings=settings,
        kept_index=kept_index,
    )


def _check_settings(
    min_words: int,
    max_words: int | None,
    min_alpha_share: float,
    max_repeat_ratio: float,
    near_duplicate_threshold: float | None,
    copy_words: int,
) -> None:
    """Refuse a filter setting out of its range, naming it and the value."""
    if isinstance(min_words, bool) or not isinstance(min_words, int) or min_words < 0:
        raise ParameterError(f"min_words must be a whole number of at least 0, not {min_words!r}")
    if max_words is not None and (not isinstance(max_words, int) or max_words < max(min_words, 1)):
        raise ParameterError(f"max_words must be a whole number of at least min_words ({min_words}), not {max_words!r}")
    for label, share in (("min_alpha_share", min_alpha_share), ("max_repeat_ratio", max_repeat_ratio)):
        if not 0.0 <= share <= 1.0:
            raise ParameterError(f"{label} must be between 0 and 1, not {share!r}")
    if near_duplicate_threshold is not None and not 0.0 < near_duplicate_threshold <= 1.0:
        raise ParameterError(f"near_duplicate_threshold must be in (0, 1] or None, not {near_duplicate_threshold!r}")
    if isinstance(copy_words, bool) or not isinstance(copy_words, int) or copy_words < 2:
        raise ParameterError(f"copy_words must be a whole number of at least 2, not {copy_words!r}")


def _scrub_counting(text: str, name_pattern: re.Pattern[str] | None, replaced: dict[str, int]) -> str:
    """``text`` with its PII replaced by placeholders, adding what was replaced to the counts in ``replaced``."""
    cleaned, found = scrub_pii(text, names_pattern=name_pattern)
    for kind, count in found.items():
        replaced[kind] += count
    return cleaned


def _near_duplicate_rule(threshold: float | None) -> str | None:
    """The near-duplicate rule as the data card states it (None when it is off)."""
    if threshold is None:
        return None
    return f"character {SHINGLE}-gram Jaccard >= {threshold} (MinHash LSH candidates)"


def as_texts(texts: Iterable[Any], argument: str, *, allow_empty: bool = False) -> list[str]:
    """``texts`` (a list, tuple, array or pandas Series) as a list of strings.

    Raises :class:`ParameterError` naming ``argument``, the position and the value unless every item is a string
    (and, unless ``allow_empty``, has a non-space character).
    """
    if isinstance(texts, str | bytes | Mapping) or not isinstance(texts, Iterable):
        raise ParameterError(f"{argument} must be a list of strings, not {type(texts).__name__}")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ParameterError(
                f"{argument}[{i}] is {type(text).__name__} ({text!r:.40}), not a string: convert or drop it"
            )
    if not allow_empty:
        empty = [i for i, text in enumerate(texts) if not text.strip()]
        if empty:
            raise ParameterError(
                f"{argument} has {len(empty)} empty text(s) (first at position {empty[0]}): remove them, e.g. with "
                "privsynth.text.filters.apply_filters"
            )
    return texts


def scrub_pii(
    text: str, names: Iterable[str] = (), *, names_pattern: re.Pattern[str] | None = None
) -> tuple[str, dict[str, int]]:
    """``text`` with e-mails, ids, phone numbers and the given names replaced by typed placeholders, and how many
    of each were replaced (see the module docstring for what each pattern takes)."""
    counts = dict.fromkeys(PLACEHOLDERS, 0)

    def replace(pattern: re.Pattern[str], kind: str, text: str, accept: Any = None) -> str:
        def substitute(match: re.Match[str]) -> str:
            if accept is not None and not accept(match.group(0)):
                return match.group(0)
            counts[kind] += 1
            return f"[{kind}]"

        return pattern.sub(substitute, text)

    text = replace(_EMAIL, "EMAIL", text)
    text = replace(_GOVERNMENT_ID, "ID", text)
    text = replace(_CARD, "ID", text, luhn_ok)
    text = replace(_NETWORK, "ID", text, lambda s: all(int(part) <= 255 for part in s.split(".")))
    text = replace(_PHONE, "PHONE", text, lambda s: 7 <= sum(c.isdigit() for c in s) <= 15)
    pattern = names_pattern if names_pattern is not None else _name_pattern([n for n in names if n.strip()])
    if pattern is not None:
        text = replace(pattern, "NAME", text)
    return text, counts


def normalise(text: str) -> str:
    """The text as duplicates are compared: Unicode NFKC, case-folded, whitespace runs as one space, stripped."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def shingles(text: str, size: int = SHINGLE) -> frozenset[int]:
    """CRC-32 hashes of the character ``size``-grams of the normalised text (the whole text when shorter)."""
    norm = normalise(text)
    if len(norm) <= size:
        return frozenset({zlib.crc32(norm.encode())})
    data = norm.encode()
    return frozenset(zlib.crc32(data[i : i + size]) for i in range(len(data) - size + 1))


def word_ngrams(text: str, n: int) -> set[int]:
    """Hashes of the runs of ``n`` consecutive normalised words (empty for texts of fewer words)."""
    words = _words(text)
    return {hash(" ".join(words[i : i + n])) for i in range(len(words) - n + 1)}


def repeat_ratio(text: str) -> float:
    """The share of word 3-grams that repeat an earlier 3-gram of the same text (0 with fewer than 4 words)."""
    words = _words(text)
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if len(grams) < 2:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


class NearDuplicateIndex:
    """Shingle sets indexed by MinHash LSH; :meth:`match` says whether any indexed set has Jaccard >= threshold.

    The hash functions are fixed (seed 0), so the same texts always give the same answer.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        rng = np.random.default_rng(0)
        self._a = rng.integers(1, 1 << 31, _HASHES, dtype=np.uint64)
        self._b = rng.integers(0, _PRIME, _HASHES, dtype=np.uint64)
        self._buckets: list[dict[bytes, list[int]]] = [{} for _ in range(_BANDS)]
        self._sets: list[frozenset[int]] = []

    def signature(self, grams: frozenset[int]) -> np.ndarray:
        values = np.fromiter(grams, dtype=np.uint64, count=len(grams))
        return np.asarray(((self._a[:, None] * values[None, :] + self._b[:, None]) % _PRIME).min(axis=1))

    def _bands(self, grams: frozenset[int]) -> list[bytes]:
        rows = _HASHES // _BANDS
        signature = self.signature(grams)
        return [signature[b * rows : (b + 1) * rows].tobytes() for b in range(_BANDS)]

    def add(self, grams: frozenset[int]) -> None:
        position = len(self._sets)
        self._sets.append(grams)
        for bucket, key in zip(self._buckets, self._bands(grams), strict=True):
            bucket.setdefault(key, []).append(position)

    def match(self, grams: frozenset[int]) -> bool:
        checked: set[int] = set()
        for bucket, key in zip(self._buckets, self._bands(grams), strict=True):
            for position in bucket.get(key, ()):
                if position in checked:
                    continue
                checked.add(position)
                other = self._sets[position]
                if len(grams & other) >= self.threshold * len(grams | other):
                    return True
        return False


def _words(text: str) -> list[str]:
    return normalise(text).split(" ") if text.strip() else []


def _name_pattern(names: Sequence[str]) -> re.Pattern[str] | None:
    if not names:
        return None
    ordered = sorted(set(names), key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(n) for n in ordered) + r")(?!\w)", re.IGNORECASE)


def _quality_rule(
    text: str, min_words: int, max_words: int | None, min_alpha_share: float, max_repeat_ratio: float
) -> str | None:
    words = len(text.split())
    if words < min_words:
        return "too_short"
    if max_words is not None and words > max_words:
        return "too_long"
    visible = [c for c in text if not c.isspace()]
    if visible and sum(c.isalpha() for c in visible) < min_alpha_share * len(visible):
        return "low_alpha"
    if repeat_ratio(text) > max_repeat_ratio:
        return "repetitive"
    return None


@dataclass(frozen=True)
class _PrivateCopies:
    """What a copy of a private text looks like: the private texts normalised, their word ``copy_words``-grams
    and, unless near-duplicate removal is off, a MinHash index of their shingles (all empty without them)."""

    exact: set[str]
    grams: set[int]
    index: NearDuplicateIndex | None
    copy_words: int

    @classmethod
    def of(cls, private_texts: list[str] | None, copy_words: int, threshold: float | None) -> _PrivateCopies:
        if private_texts is None:
            return cls(set(), set(), None, copy_words)
        exact = {normalise(t) for t in private_texts}
        grams = {g for t in private_texts for g in word_ngrams(t, copy_words)}
        if threshold is None:
            return cls(exact, grams, None, copy_words)
        index = NearDuplicateIndex(threshold)
        for text in private_texts:
            index.add(shingles(text))
        return cls(exact, grams, index, copy_words)

    def rule(self, text: str) -> str | None:
        """The removal rule ``text`` breaks as a copy of a private text, if any."""
        if not self.exact:
            return None
        if normalise(text) in self.exact:
            return "private_copy"
        if self.index is not None and self.index.match(shingles(text)):
            return "private_near_copy"
        if self.grams and not self.grams.isdisjoint(word_ngrams(text, self.copy_words)):
            return "private_substring"
        return None
