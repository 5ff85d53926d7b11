"""Private Evolution for text: differentially private synthetic text from a model's API, with no training.

Aug-PE: Xie, Lin, Yekhanin, Li et al., "Differentially Private Synthetic Data via Foundation Model APIs 2: Text"
(ICML 2024, arXiv:2403.01749), after PE: Lin, Gopi, Kulkarni, Nori and Yekhanin, "Differentially Private
Synthetic Data via Foundation Model APIs 1: Images" (ICLR 2024, arXiv:2305.15560).

The model never sees a private text. It writes an initial population from a public prompt (one per declared
label); then, ``iterations`` times, every private text votes for its nearest synthetic text in an embedding
space (:func:`measure`), the vote histogram gets Gaussian noise, the best-voted texts are kept (:func:`select`)
and the model writes variations of them. The only access to private data is the vote histogram.

Privacy: each private text casts exactly one vote per iteration, for the nearest synthetic text of its own label,
so adding or removing one private text changes one count by one: L2 sensitivity 1. Each histogram gets discrete
Gaussian noise of standard deviation sigma, which is 1/(2 sigma²)-zCDP (Canonne, Kamath and Steinke, NeurIPS
2020) and, for the continuous Gaussian, 1/sigma-GDP (Dong, Roth and Su, "Gaussian Differential Privacy", JRSS-B
2022). ``iterations`` histograms compose to T/(2 sigma²)-zCDP, which is what the ledger is charged; sigma is set
from the budget's rho (``sigma = sqrt(T / (2 rho))``). Aug-PE accounts the same mechanism as sqrt(T)/sigma-GDP,
which gives a slightly smaller epsilon for the same noise: :func:`pe_noise_multiplier` and :func:`pe_epsilon`
(:mod:`privsynth.text.pe_accounting`) reproduce that accounting (and the paper's published noise multipliers),
and a fit reports both epsilons.
Everything else (prompts, selection, variations, sampling) is post-processing of the noisy histograms.

The release boundary: the number of private texts is never read (Aug-PE treats it as public; here it is not).
Delta is capped by :func:`privsynth.synth.dp.resolve_budget` instead of being checked against 1/N, and whether the
noise drowns the votes is judged from the noisy histograms' totals (post-processing). Texts that cannot vote
(not a string, empty, a label outside the declared set) stay in the private data and in the guarantee but cast no
vote: nothing about them is reported, counted or raised. The budget is kept in the ledger under the dataset name
the user declares, never under a hash of the texts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from privsynth.errors import ParameterError
from privsynth.privacy.accountant import Accountant
from privsynth.privacy.budget import Budget, check_positive, split_exactly
from privsynth.progress import report
from privsynth.synth.dp import FitRecord, LedgerArg, open_fit, resolve_budget
from privsynth.text._dp import corpus_name, present
from privsynth.text.llm import Embedder, TextGenerator, local_generator
from privsynth.text.pe_accounting import check_iterations, gdp_delta, gdp_epsilon, pe_epsilon, pe_noise_multiplier

__all__ = ["PrivateEvolution", "gdp_delta", "gdp_epsilon", "pe_epsilon", "pe_noise_multiplier"]

logger = logging.getLogger(__name__)

MAX_LABELS = 100
"""Most labels PE conditions on: every label needs its own synthetic texts, and a label with few votes reads as
noise. A label column with more classes should be grouped first (or left out)."""

_NOISE_LIMIT = 10.0
"""Warn when the noise standard deviation exceeds this many times the average number of votes a synthetic text
receives (judged from the noisy histograms): the selection is then a coin toss."""

_SETTINGS = (
    "iterations",
    "population",
    "variations_per_sample",
    "keep_selected",
    "selection",
    "threshold",
    "prompt",
    "label_prompt",
    "variation_prompt",
    "max_tokens",
    "temperature",
    "seed",
)
"""The constructor's settings: the parameters a fit's record (and its data card) shows."""

_CHUNK = 25
"""Prompts sent to the model per call, between progress reports."""


# ---- the algorithm -----------------------------------------------------------------------------------------------


def measure(
    private: np.ndarray,
    private_groups: np.ndarray,
    synthetic: np.ndarray,
    synthetic_groups: np.ndarray,
    *,
    rho: float,
    accountant: Accountant,
    iteration: int,
) -> np.ndarray:
    """The noisy nearest-neighbour vote histogram over the synthetic texts (one count per synthetic text).

    Each private embedding (a row of ``private``, unit length) votes once, for the most similar synthetic
    embedding of its own group (label); a group with no synthetic text gets no votes from it.
    Sensitivity: one private text adds one vote, so the histogram moves by 1 in L2 (add/remove one text).
    Cost: rho-zCDP, discrete Gaussian noise with sigma = 1 / sqrt(2 rho), through
    :func:`~privsynth.privacy.mechanisms.gaussian_mechanism`.
    """
    from privsynth.privacy.mechanisms import gaussian_mechanism  # needs OpenDP (the dp extra)

    votes = np.zeros(len(synthetic), dtype=np.int64)
    for group in np.unique(private_groups):
        candidates = np.flatnonzero(synthetic_groups == group)
        if candidates.size == 0:
            continue
        voters = private[private_groups == group]
        nearest = candidates[np.argmax(voters @ synthetic[candidates].T, axis=1)]
        np.add.at(votes, nearest, 1)
    return np.asarray(
        gaussian_mechanism(
            votes,
            sensitivity=1.0,
            rho=rho,
            accountant=accountant,
            purpose=f"private evolution: nearest-neighbour votes, iteration {iteration}",
        ),
        dtype=np.float64,
    )


def select(scores: np.ndarray, count: int, mode: Literal["rank", "sample"], rng: np.random.Generator) -> np.ndarray:
    """Indices of ``count`` texts to keep from noisy ``scores`` (post-processing): the highest (``rank``, Aug-PE's
    default) or drawn with probability proportional to the positive part (``sample``, PE's Algorithm 1)."""
    if count <= 0 or scores.size == 0:
        return np.zeros(0, dtype=np.int64)
    if mode == "rank":
        order = np.lexsort((rng.random(scores.size), -scores))
        return order[: min(count, scores.size)]
    weights = np.clip(scores, 0, None)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    return rng.choice(scores.size, size=count, replace=True, p=weights / weights.sum())


class PrivateEvolution:
    """Differentially private synthetic text by Private Evolution (Aug-PE) with a local or remote model.

    The constructor stores settings only. :meth:`fit` spends (epsilon, delta) on ``iterations`` noisy vote
    histograms; :meth:`sample` returns synthetic texts (and labels) at no further privacy cost.

    Parameters: ``generator`` (a :class:`~privsynth.text.llm.TextGenerator`, default the local SmolLM2),
    ``embedder`` (default all-MiniLM-L6-v2), ``iterations`` (T, the number of histograms), ``population``
    (synthetic texts per iteration), ``variations_per_sample`` (variations the model writes of each kept text),
    ``keep_selected`` (kept texts survive into the next population, as in Aug-PE), ``selection`` (``rank`` or
    ``sample``), ``threshold`` (noisy counts below it count as zero; Aug-PE's ``count_threshold``), ``prompt``
    (the public task description that seeds the first population), ``label_prompt`` (format with ``{prompt}``
    and ``{label}``), ``variation_prompt`` (format with ``{text}``), ``max_tokens``, ``temperature`` and ``seed``.
    """

    def __init__(
        self,
        generator: TextGenerator | None = None,
        embedder: Embedder | None = None,
        *,
        iterations: int = 5,
        population: int = 300,
        variations_per_sample: int = 1,
        keep_selected: bool = True,
        selection: Literal["rank", "sample"] = "rank",
        threshold: float = 0.0,
        prompt: str = "Write a short social media post.",
        label_prompt: str = "{prompt} It is of the kind: {label}.",
        variation_prompt: str = (
            "Rewrite the following text in different words, keeping its topic, tone and length. "
            "Reply with the new text only.\n\nText: {text}"
        ),
        max_tokens: int = 48,
        temperature: float = 0.8,
        seed: int = 0,
    ) -> None:
        self.generator = generator
        self.embedder = embedder
        self.iterations = iterations
        self.population = population
        self.variations_per_sample = variations_per_sample
        self.keep_selected = keep_selected
        self.selection = selection
        self.threshold = threshold
        self.prompt = prompt
        self.label_prompt = label_prompt
        self.variation_prompt = variation_prompt
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed

    # ---- fitting ----

    def fit(
        self,
        texts: Sequence[Any] | pd.Series,
        labels: Sequence[Any] | pd.Series | None = None,
        *,
        public_labels: Sequence[str] | None = None,
        epsilon: float,
        delta: float | None = None,
        ledger: LedgerArg = None,
        dataset: str | None = None,
        content: str | None = None,
    ) -> PrivateEvolution:
        """Evolve a synthetic population towards ``texts`` under (epsilon, delta)-DP.

        ``labels`` (optional) must come with ``public_labels``, the label set declared public knowledge: the
        model writes texts for each declared label and private texts vote within their own label. A text that is
        not a string, is blank, or has a label outside ``public_labels`` casts no vote (it is covered by the
        guarantee like any other text, and nothing about it is reported). The budget (``delta`` defaults to
        :data:`~privsynth.synth.dp.DEFAULT_DELTA`) is reserved in ``ledger`` (default: the default ledger;
        ``False``: none) under ``dataset``, the name the user gives the corpus, before any text is embedded;
        ``content`` (optional, e.g. :meth:`Source.fingerprint`) is kept by the ledger only as a keyed hash, to warn
        when the same texts come back under another name.
        Sets ``record_`` (what the fit may publish), ``sigma_`` (noise per vote count), ``epsilon_`` (the
        ledger's zCDP epsilon), ``epsilon_gdp_`` (the tighter GDP epsilon of the same noise), ``charges_``,
        ``texts_``, ``labels_`` and ``scores_`` (the last population and its noisy votes) and ``history_`` (every
        population that was voted on, with its noisy votes: iteration 1 is the model prompted without private
        data; all of it is DP post-processing).
        """
        self._check_settings()
        budget = resolve_budget("pe", epsilon, delta)
        name = corpus_name(dataset, ledger, "pe")
        items, voting = _clean_texts(texts)
        groups, names = self._groups(items, labels, public_labels)
        groups[~voting] = -1
        rhos = split_exactly(budget.rho, [1 / self.iterations] * self.iterations)
        sigma = 1 / math.sqrt(2 * min(rhos))
        generator = self.generator or local_generator()
        embedder = self.embedder or Embedder()
        rng = np.random.default_rng(self.seed)
        purpose = (
            f"private evolution, {self.iterations} iterations at epsilon={budget.epsilon:g}, delta={budget.delta:g}"
        )
        with open_fit(budget, ledger, name, purpose, content=content) as (accountant, _):
            voters = [text for text, group in zip(items, groups, strict=True) if group >= 0]
            private = embedder.embed(voters) if voters else np.zeros((0, 1))
            private_groups = groups[groups >= 0]
            del items, voters
            pool, pool_groups, scores, history, totals = self._iterate(
                generator, embedder, private, private_groups, names, rhos, accountant, rng
            )
        self._warn_noise(sigma, float(np.mean(totals)), budget)
        self.history_ = pd.concat(history, ignore_index=True)
        self.label_names_ = names
        self.texts_ = pool
        self.labels_ = pool_groups
        self.scores_ = scores
        self.sigma_ = sigma
        self.epsilon_ = accountant.spent_epsilon
        self.epsilon_gdp_ = pe_epsilon(sigma, budget.delta, self.iterations)
        self.charges_ = accountant.charges
        self.budget_ = budget
        self.record_ = self._record(names, budget, accountant, None if ledger is False else name)
        self._generator = generator
        truncated = getattr(generator, "truncated", 0)
        if truncated:
            logger.info("%d prompts were cut to fit the model's context window", truncated)
        return self

    def _record(
        self, names: list[str | None], budget: Budget, accountant: Accountant, dataset: str | None
    ) -> FitRecord:
        """What the fit may publish: the settings, the declared labels, the budget and its spends."""
        parameters: dict[str, Any] = {key: getattr(self, key) for key in _SETTINGS}
        if names != [None]:
            parameters["public_labels"] = list(names)
        return FitRecord.of(
            "pe",
            parameters,
            budget=budget,
            accountant=accountant,
            dataset=dataset,
            assumptions=(
                "the number of private texts was not read: delta is capped instead of checked against 1/n",
                "texts that are not strings, are blank or carry a label outside the declared set cast no vote",
                "private texts longer than the embedding model's window are cut to fit it before they vote",
            ),
        )

    def _iterate(
        self,
        generator: TextGenerator,
        embedder: Embedder,
        private: np.ndarray,
        private_groups: np.ndarray,
        names: list[str | None],
        rhos: Sequence[float],
        accountant: Accountant,
        rng: np.random.Generator,
    ) -> tuple[list[str], np.ndarray, np.ndarray, list[pd.DataFrame], list[float]]:
        """The ``iterations`` rounds: the population votes (one noisy histogram at ``rhos[t - 1]`` each), the
        votes under ``threshold`` count as zero, and the model varies the texts kept. Returns the last population,
        its groups and its votes, every population that was voted on, and each histogram's noisy total."""
        pool, pool_groups = self._initial(generator, names, rng)
        scores = np.zeros(0)
        history: list[pd.DataFrame] = []
        totals: list[float] = []
        for t in range(1, self.iterations + 1):
            report("private evolution", t - 1, self.iterations, f"iteration {t}: votes")
            scores = measure(
                private,
                private_groups,
                embedder.embed(pool),
                pool_groups,
                rho=rhos[t - 1],
                accountant=accountant,
                iteration=t,
            )
            totals.append(float(scores.sum()))
            history.append(_population(t, pool, pool_groups, scores, names))
            scores = np.where(scores < self.threshold, 0.0, scores)
            if t < self.iterations:
                report("private evolution", t - 0.5, self.iterations, f"iteration {t}: variations")
                pool, pool_groups = self._evolve(generator, pool, pool_groups, scores, len(names), rng, t)
        report("private evolution", self.iterations, self.iterations, "done")
        return pool, pool_groups, scores, history, totals

    def _check_settings(self) -> None:
        check_iterations(self.iterations)
        for name in ("population", "variations_per_sample", "max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        if self.population < 2:
            raise ParameterError(f"population must be at least 2, got {self.population}")
        if self.selection not in ("rank", "sample"):
            raise ParameterError(f"selection must be 'rank' or 'sample', not {self.selection!r}")
        check_positive("threshold", self.threshold, allow_zero=True)
        for name, field in (("label_prompt", "{label}"), ("variation_prompt", "{text}")):
            if field not in getattr(self, name):
                raise ParameterError(f"{name} must contain {field}, got {getattr(self, name)!r}")

    def _groups(
        self, texts: list[str], labels: Sequence[Any] | pd.Series | None, public_labels: Sequence[str] | None
    ) -> tuple[np.ndarray, list[str | None]]:
        """Each text's label index (-1: not a declared label, no vote) and the label names (``[None]``: no labels)."""
        if labels is None:
            if public_labels is not None:
                raise ParameterError("public_labels was given without labels: pass the label of each text too")
            return np.zeros(len(texts), dtype=np.int64), [None]
        values = list(labels)
        if len(values) != len(texts):
            raise ParameterError("labels and texts differ in length: give exactly one label per text")
        if public_labels is None:
            raise ParameterError(
                "labels need public_labels, the label set declared public knowledge: privsynth never reads the "
                "set of labels from private data. Pass public_labels=[...] (for example the app names a tweet "
                "can come from)."
            )
        names: list[str | None] = [str(name) for name in dict.fromkeys(public_labels)]
        if not names:
            raise ParameterError("public_labels is empty: declare at least one label")
        if len(names) > MAX_LABELS or 2 * len(names) > self.population:
            raise ParameterError(
                f"{len(names)} public labels is too many for a population of {self.population}: each label needs "
                f"at least 2 synthetic texts and PE handles at most {MAX_LABELS} labels. Group rare labels into "
                "'other' first, or fit without labels."
            )
        index = {name: i for i, name in enumerate(names)}
        groups = np.array([index.get(str(value), -1) if present(value) else -1 for value in values], dtype=np.int64)
        return groups, names

    def _warn_noise(self, sigma: float, total: float, budget: Budget) -> None:
        """Warn when the noise drowns the votes (see :data:`_NOISE_LIMIT`) or delta is not below 1/n, both judged
        from ``total``, the mean of the noisy histograms' totals: a noisy count of the voting texts (standard
        deviation sigma sqrt(population / iterations)), so this is post-processing."""
        total = max(total, 0.0)
        if sigma > _NOISE_LIMIT * total / self.population:
            logger.warning(
                "epsilon=%g over %d iterations gives noise sigma=%.3g (%.3g under GDP accounting) on each vote "
                "count, more than %g times the votes a synthetic text gets on average by the noisy histograms: "
                "the selection is mostly noise. Raise epsilon, use fewer iterations or a smaller population.",
                budget.epsilon,
                self.iterations,
                sigma,
                pe_noise_multiplier(budget.epsilon, budget.delta, self.iterations),
                _NOISE_LIMIT,
            )
        if total > 0 and budget.delta * total >= 1:
            logger.warning(
                "delta=%g is not below 1/n for a corpus of this size (by the noisy vote total): choose a smaller delta",
                budget.delta,
            )

    # ---- generation (post-processing) ----

    def _initial(
        self, generator: TextGenerator, names: list[str | None], rng: np.random.Generator
    ) -> tuple[list[str], np.ndarray]:
        """The first population, written from the public prompt: an equal share for each declared label."""
        sizes = _shares(np.ones(len(names)), self.population)
        prompts: list[str] = []
        pool_groups: list[int] = []
        for group, (name, size) in enumerate(zip(names, sizes, strict=True)):
            text = self.prompt if name is None else self.label_prompt.format(prompt=self.prompt, label=name)
            prompts += [text] * size
            pool_groups += [group] * size
        report("private evolution", 0, self.iterations, "initial population")
        return self._write(generator, prompts, int(rng.integers(2**31))), np.array(pool_groups, dtype=np.int64)

    def _evolve(
        self,
        generator: TextGenerator,
        pool: list[str],
        pool_groups: np.ndarray,
        scores: np.ndarray,
        n_groups: int,
        rng: np.random.Generator,
        iteration: int,
    ) -> tuple[list[str], np.ndarray]:
        """The next population: per label (sized by its share of the noisy votes), the best-voted texts kept
        and ``variations_per_sample`` variations of each."""
        totals = np.array([np.clip(scores[pool_groups == g], 0, None).sum() for g in range(n_groups)])
        sizes = _shares(totals + 1e-9, self.population, minimum=2)
        per_parent = self.variations_per_sample + int(self.keep_selected)
        kept_by_group: list[list[str]] = []
        parents: list[str] = []
        wanted_by_group: list[int] = []
        for group, size in enumerate(sizes):
            members = np.flatnonzero(pool_groups == group)
            chosen = members[select(scores[members], math.ceil(size / per_parent), self.selection, rng)]
            kept = [pool[i] for i in chosen][:size] if self.keep_selected else []
            wanted = size - len(kept)
            kept_by_group.append(kept)
            wanted_by_group.append(wanted)
            parents += [pool[chosen[i % len(chosen)]] for i in range(wanted)]
        varied = self._write(generator, [self.variation_prompt.format(text=text) for text in parents], iteration)
        texts: list[str] = []
        groups: list[int] = []
        start = 0
        for group, (kept, wanted) in enumerate(zip(kept_by_group, wanted_by_group, strict=True)):
            texts += kept + varied[start : start + wanted]
            groups += [group] * (len(kept) + wanted)
            start += wanted
        return texts, np.array(groups, dtype=np.int64)

    def _write(self, generator: TextGenerator, prompts: list[str], seed: int) -> list[str]:
        """The model's completions of ``prompts``, in chunks so that progress is reported as they come."""
        base = (self.seed * 7919 + seed) % 2**31
        texts: list[str] = []
        for start in range(0, len(prompts), _CHUNK):
            chunk = prompts[start : start + _CHUNK]
            texts += generator.generate(
                chunk, max_tokens=self.max_tokens, temperature=self.temperature, seed=base + start
            )
            report("private evolution: writing", len(texts), len(prompts), "texts from the model")
        return [_tidy(text) for text in texts]

    # ---- saving ----

    def __getstate__(self) -> dict[str, Any]:
        """What a saved model keeps: the settings and the fitted population with its noisy votes, not the
        language or embedding model (nor a remote generator, whose API key must not reach a file). After
        loading, :meth:`sample` writes its variations with the local model unless ``generator`` is set again."""
        state = dict(self.__dict__)
        state.pop("_generator", None)
        state["generator"] = None
        state["embedder"] = None
        return state

    # ---- sampling (post-processing) ----

    def sample(self, n: int, *, seed: int | None = None) -> pd.DataFrame:
        """``n`` synthetic texts (with a ``label`` column when fitted with labels), free under DP.

        Up to the population size these are the texts of the last population with the highest noisy votes;
        beyond it the model writes variations of them (post-processing, no privacy cost).
        """
        if not hasattr(self, "texts_"):
            raise ParameterError("call fit(...) before sample(...)")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ParameterError(f"n must be a positive integer, got {n!r}")
        rng = np.random.default_rng(self.seed if seed is None else seed)
        order = select(self.scores_, len(self.texts_), "rank", rng)
        chosen = list(order[:n])
        texts = [self.texts_[i] for i in chosen]
        groups = [int(self.labels_[i]) for i in chosen]
        if n > len(order):
            extra = select(self.scores_, n - len(order), "sample", rng)
            prompts = [self.variation_prompt.format(text=self.texts_[i]) for i in extra]
            generator = getattr(self, "_generator", None) or self.generator or local_generator()
            self._generator = generator
            texts += self._write(generator, prompts, int(rng.integers(2**31)))
            groups += [int(self.labels_[i]) for i in extra]
        frame = pd.DataFrame({"text": pd.array(texts, dtype="str")})
        if self.label_names_ != [None]:
            frame["label"] = pd.array([self.label_names_[g] for g in groups], dtype="str")
        return frame


# ---- helpers ------------------------------------------------------------------------------------------------------


def _clean_texts(texts: Sequence[Any] | pd.Series) -> tuple[list[str], np.ndarray]:
    """The private texts as strings and which of them vote: a text that is not a string, or is blank, casts no
    vote. Nothing is raised or logged about them: which texts are unusable is private too."""
    if isinstance(texts, str):
        raise ParameterError("texts must be a sequence of strings, not one string: wrap it in a list")
    values = [value if isinstance(value, str) else "" for value in texts]
    voting = np.array([bool(value.strip()) for value in values], dtype=bool)
    return values, voting


def _shares(weights: np.ndarray, total: int, minimum: int = 1) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders), each share at least ``minimum``."""
    count = len(weights)
    spare = total - minimum * count
    exact = weights / weights.sum() * spare
    shares = np.floor(exact).astype(int)
    shares[np.argsort(-(exact - shares), kind="stable")[: spare - shares.sum()]] += 1
    return [int(share) + minimum for share in shares]


def _population(
    iteration: int, texts: list[str], groups: np.ndarray, scores: np.ndarray, names: list[str | None]
) -> pd.DataFrame:
    """One voted population as a frame: iteration, text, label (when labelled) and noisy votes."""
    frame = pd.DataFrame({"iteration": iteration, "text": pd.array(texts, dtype="str")})
    if names != [None]:
        frame["label"] = pd.array([names[g] for g in groups], dtype="str")
    frame["votes"] = scores
    return frame


def _tidy(text: str) -> str:
    """A completion cleaned of quotes and a leading 'Text:' label that small models like to echo."""
    text = text.strip()
    for prefix in ("Text:", "New text:", "Rewritten text:"):
        if text.lower().startswith(prefix.lower()):
            text = text[len(prefix) :].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text
