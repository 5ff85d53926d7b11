"""Texts and labels as the token ids DP LoRA trains on and scores, and the checks on them.

Each text is one sequence ``<bos>Text: {text}<eos>``, or with labels ``<bos>Label: {label}\\nText: {text}<eos>``,
right-padded to ``max_length`` tokens. The head (``<bos>Text:`` or ``<bos>Label:``) is given, not predicted: the
targets mark every token after it, so a label is learned like the text it comes with. A row that must not be
learned from keeps its place (under DP it is still a record of the fit) with no target token at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from privsynth.errors import DataError, ParameterError
from privsynth.text._dp import present

__all__ = [
    "TEXT_HEAD",
    "Encoded",
    "check_labels",
    "check_texts",
    "declared_labels",
    "encode",
    "head_ids",
    "label_ids",
    "private_labels",
]

TEXT_HEAD = "Text:"
LABEL_HEAD = "Label:"


@dataclass(frozen=True)
class Encoded:
    """Texts as right-padded token ids: ``targets`` marks the tokens the loss and the likelihood count."""

    ids: torch.Tensor  # (n, max_length) long
    attention: torch.Tensor  # (n, max_length) long, 1 on real tokens
    targets: torch.Tensor  # (n, max_length) float, 1 on tokens that are predicted (after the head)
    truncated: int


def head_ids(tokenizer: Any, labelled: bool) -> list[int]:
    """Token ids of ``<bos>Text:`` or ``<bos>Label:``: what every sequence starts with, not predicted."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    head = LABEL_HEAD if labelled else TEXT_HEAD
    return bos + list(tokenizer(head, add_special_tokens=False)["input_ids"])


def label_ids(tokenizer: Any, label: str) -> list[int]:
    """Token ids of `` {label}\\nText:``, what follows the head of a labelled sequence before its text."""
    return list(tokenizer(f" {label}\n{TEXT_HEAD}", add_special_tokens=False)["input_ids"])


def _body(text: str, label: str | None) -> str:
    return f" {text}" if label is None else f" {label}\n{TEXT_HEAD} {text}"


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[str | None] | None,
    *,
    head: list[int],
    max_length: int,
    fallback: str | None,
    learn_blank: bool = True,
) -> Encoded:
    """Token ids of ``texts`` after ``head``, cut to ``max_length``; a row whose label is None (outside the public
    set), or whose text is blank unless ``learn_blank``, keeps its place but gets no target token, so it trains on
    nothing (it is written with ``fallback``, any public label, in place of its own)."""
    bodies = [
        _body(t, None if labels is None else (labels[i] if labels[i] is not None else fallback))
        for i, t in enumerate(texts)
    ]
    silent = [
        (labels is not None and labels[i] is None) or (not learn_blank and not t.strip()) for i, t in enumerate(texts)
    ]
    tokenized = tokenizer(bodies, add_special_tokens=False)["input_ids"] if bodies else []
    n, length = len(texts), max_length
    ids = torch.full((n, length), int(tokenizer.pad_token_id), dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.long)
    targets = torch.zeros((n, length), dtype=torch.float32)
    truncated = 0
    for row, body in enumerate(tokenized):
        sequence = head + list(body) + [int(tokenizer.eos_token_id)]
        if len(sequence) > length:
            truncated += 1
            sequence = sequence[:length]
        ids[row, : len(sequence)] = torch.tensor(sequence)
        attention[row, : len(sequence)] = 1
        if not silent[row]:
            targets[row, len(head) : len(sequence)] = 1.0
    return Encoded(ids, attention, targets, truncated)


def check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list, refused by position when one is not a string (outside DP: the data holder's own)."""
    if isinstance(texts, str):
        raise ParameterError("texts must be a sequence of strings, not one string")
    values = list(texts)
    if not values:
        raise DataError("texts is empty: DP fine-tuning needs at least one text")
    for i, text in enumerate(values):
        if not isinstance(text, str):
            raise DataError(f"texts must be strings; item {i} is {type(text).__name__}")
    return values


def declared_labels(public: Sequence[Any] | None) -> list[str]:
    """The label values the user declared public, as strings: the only label set a DP fit may use."""
    if public is None:
        raise ParameterError(
            "labels need public_labels, the label values declared public (a label set read from the data would "
            "leak): pass public_labels=[...]"
        )
    allowed = [str(value) for value in public]
    if not allowed or len(set(allowed)) != len(allowed):
        raise ParameterError(f"public_labels must be distinct and non-empty, got {allowed!r}")
    return allowed


def private_labels(labels: Sequence[Any], allowed: Sequence[str], n: int) -> list[str | None]:
    """The label of each private text, None for one outside ``allowed`` (that text trains on nothing): a DP fit
    never reports which labels it met."""
    if isinstance(labels, str):
        raise ParameterError("labels must be a sequence with one label per text, not one string")
    values = list(labels)
    if len(values) != n:
        raise ParameterError("labels and texts differ in length: give exactly one label per text")
    known = set(allowed)
    return [str(value) if present(value) and str(value) in known else None for value in values]


def check_labels(labels: Sequence[Any], allowed: Sequence[str], n: int) -> list[str]:
    """The labels as strings, refused when one is not declared (outside DP: the data holder's own experiment)."""
    values = [str(value) for value in labels]
    if len(values) != n:
        raise DataError(f"labels has {len(values)} values for {n} texts: give one label per text")
    unknown = next((value for value in values if value not in allowed), None)
    if unknown is not None:
        raise DataError(f"label {unknown!r} is not among public_labels {list(allowed)!r}: declare it or drop it")
    return values
