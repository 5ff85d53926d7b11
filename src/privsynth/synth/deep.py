"""Deep tabular generators: an any-order autoregressive network over tokenized columns (``deep``, ``dp-deep``).

Each column becomes tokens (categories; numbers as exact values or fine quantile bins decoded within the bin;
missing as a token), and one network predicts every column from any subset of the others. It is trained on column
orders drawn per row, so sampling can put any columns first: ``sample(n, conditions=...)`` fixes their tokens and
draws the rest given them, exactly and at the cost of an unconditional draw, however rare the condition;
``rebalance(column, mix, n)`` does the same for a target class mix. Reference: Tiwald, Krchova, Kulkarni,
Sidorenko and others, "TabularARGN: A Flexible and Efficient Auto-Regressive Framework for Generating High-
Fidelity Synthetic Data", arXiv:2501.12012 (2025), itself in the line of order-agnostic NADE (Uria, Murray and
Larochelle, ICML 2014).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from privsynth.data.schema import Kind, Schema
from privsynth.data.sources import Source
from privsynth.errors import DataError, ParameterError
from privsynth.privacy.accountant import Accountant
from privsynth.privacy.budget import Budget, check_positive, split_exactly
from privsynth.privacy.dp_sgd import noisy_sample_rate, privacy_record, spend_dp_sgd
from privsynth.progress import report
from privsynth.synth._deep_codec import Codec, DomainCodec, fit_codec
from privsynth.synth._deep_net import (
    AnyOrderNet,
    History,
    block_poisson_steps,
    fit_dp_sgd,
    fit_early_stopping,
    sample_tokens,
)
from privsynth.synth.base import Conditions, Synthesizer, register
from privsynth.synth.domain import domain_column, learn_domains, needs_budget
from privsynth.synth.dp import FitRecord, resolve_budget
from privsynth.threads import torch_threads

logger = logging.getLogger(__name__)

_ORDER_CANDIDATES = 24  # random column orders scored on the validation rows when picking the sampling order


class _AnyOrderSynthesizer(Synthesizer):
    """Sampling, conditioning and rebalancing shared by ``deep`` and ``dp-deep`` (set ``codecs_``, ``net_`` and
    ``order_``, the column indices in sampling order)."""

    codecs_: list[Codec]
    net_: AnyOrderNet
    order_: list[int]

    def _sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        return self._draw(n, {}, rng)

    def _sample_conditional(self, n: int, conditions: Conditions, rng: np.random.Generator) -> pd.DataFrame:
        return self._draw(n, {column: [value] * n for column, value in conditions.items()}, rng)

    def sample_given(self, given: pd.DataFrame, seed: int | None = None) -> pd.DataFrame:
        """One row per row of ``given``: its columns keep that row's values, the others are drawn given them.

        Each row has its own condition (a visit given its patient's synthetic row, say), drawn exactly as
        ``sample(conditions=...)`` draws one shared condition. Values must lie in the model's domain: a category
        it knows, a number, or missing. Same seed, same rows.
        """
        self._check_fitted()
        if len(given) == 0:
            raise ParameterError("sample_given needs at least one row of given values")
        for column in given.columns:
            self._codec(str(column))
        values = {str(column): given[column].tolist() for column in given.columns}
        return self._draw(len(given), values, np.random.default_rng(seed))

    def _draw(self, n: int, given: Mapping[str, Sequence[Any]], rng: np.random.Generator) -> pd.DataFrame:
        """``n`` rows whose columns in ``given`` take the listed values (one per row); the rest are drawn."""
        names = [codec.column.name for codec in self.codecs_]
        context: list[str] = list(getattr(self, "context_", ()))
        missing = [c for c in context if c not in given]
        if missing:
            raise ParameterError(
                f"'{missing[0]}' is a context column of this model (always given, never generated): draw rows with "
                f"sample_given and a value for each of {', '.join(context)}"
            )
        fixed: dict[int, np.ndarray] = {}
        exact: dict[int, pd.Series] = {}
        for name, values in given.items():
            j = names.index(name)
            codes, uniques = pd.factorize(pd.Series(list(values), dtype=object), use_na_sentinel=False)
            conditions = [self.codecs_[j].condition(value) for value in uniques]
            fixed[j] = np.array([token for token, _ in conditions], dtype=np.int64)[codes]
            wanted = pd.Series([value for _, value in conditions], dtype=object).iloc[codes]
            exact[j] = self.codecs_[j].restore(wanted.reset_index(drop=True))
        order = list(fixed) + [j for j in self.order_ if j not in fixed]

        def draw(probs: np.ndarray) -> np.ndarray:
            cumulative = np.cumsum(probs, axis=1)
            u = rng.random(len(probs))[:, None] * cumulative[:, -1:]
            return np.asarray(np.minimum((cumulative <= u).sum(axis=1), probs.shape[1] - 1), dtype=np.int64)

        with _threads(getattr(self, "threads", None)):
            tokens = sample_tokens(self.net_, order, fixed, n, draw, allowed=[c.sampled() for c in self.codecs_])
        columns = {
            names[j]: exact[j] if j in exact else codec.decode(tokens[:, j], rng).reset_index(drop=True)
            for j, codec in enumerate(self.codecs_)
        }
        return pd.DataFrame(columns)

    def rebalance(self, column: str, mix: Mapping[Any, float] | str, n: int, seed: int | None = None) -> pd.DataFrame:
        """``n`` rows in which categorical ``column`` follows the class ``mix``, the other columns drawn given it.

        ``mix`` maps each wanted category to its share of the rows (shares >= 0 summing to 1; categories left
        out get none), or is ``"uniform"``: every category the model knows, equally. Row counts are the shares
        times ``n`` rounded by largest remainder, so they sum to ``n``; rows come shuffled. Each row is an exact
        conditional draw, so a rare class costs no more than a common one. Same seed, same rows.
        """
        self._check_fitted()
        kind = self._codec(column, "rebalance").column.kind
        if kind is not Kind.CATEGORICAL:
            raise ParameterError(
                f"rebalance needs a categorical column; '{column}' is {kind.value} "
                "(condition on a value with sample(..., conditions=...) instead)"
            )
        if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1:
            raise ParameterError(f"the number of rows must be a positive whole number, not {n!r}")
        shares = self._mix_shares(column, mix)
        counts = _largest_remainder(np.array(list(shares.values())), int(n))
        rng = np.random.default_rng(seed)
        values = np.repeat(np.array(list(shares), dtype=object), counts)
        values = values[rng.permutation(len(values))]
        return self._draw(int(n), {column: list(values)}, rng)

    def _mix_shares(self, column: str, mix: Mapping[Any, float] | str) -> dict[Any, float]:
        if isinstance(mix, str):
            if mix != "uniform":
                raise ParameterError(f"mix must be 'uniform' or a mapping from category to share, not {mix!r}")
            known = self.known_categories(column)
            return dict.fromkeys(known, 1.0 / len(known))
        if not isinstance(mix, Mapping) or not mix:
            raise ParameterError(f"mix must be 'uniform' or a non-empty mapping from category to share, not {mix!r}")
        shares: dict[Any, float] = {}
        for value, share in mix.items():
            category = self._check_conditions({column: value})[column]
            self._codec(column).condition(category)
            if isinstance(share, bool) or not isinstance(share, int | float) or not share >= 0 or share == math.inf:
                raise ParameterError(f"the share of '{value}' in '{column}' must be a number >= 0, not {share!r}")
            shares[category] = shares.get(category, 0.0) + float(share)
        total = sum(shares.values())
        if abs(total - 1.0) > 1e-6:
            raise ParameterError(f"the shares of '{column}' must sum to 1, not {total:g}: {dict(mix)}")
        return {value: share / total for value, share in shares.items() if share > 0}

    def known_categories(self, column: str) -> list[Any]:
        """The categories of ``column`` the model can generate (what ``rebalance(mix="uniform")`` spreads over)."""
        return self._codec(column).categories()

    def _codec(self, column: str, action: str = "condition on") -> Codec:
        """The codec of ``column``: the model's fitted domain of it (a DP one for ``dp-deep``)."""
        for codec in self.codecs_:
            if codec.column.name == column:
                return codec
        names = ", ".join(c.column.name for c in self.codecs_)
        raise ParameterError(f"cannot {action} '{column}': the model has no such column ({names})")


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """:func:`privsynth.threads.torch_threads`, or ``count`` torch threads when given."""
    with torch_threads():
        if count is not None:
            torch.set_num_threads(count)
        yield


def _largest_remainder(shares: np.ndarray, n: int) -> np.ndarray:
    """Whole counts proportional to ``shares`` that sum to ``n`` (Hamilton's method)."""
    exact = shares / shares.sum() * n
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(-(exact - counts), kind="stable")[: n - int(counts.sum())]] += 1
    return np.asarray(counts, dtype=np.int64)


@register
class DeepSynthesizer(_AnyOrderSynthesizer):
    """Any-order autoregressive network over tokenized columns (non-private); strong multi-column fidelity.

    Parameters
    ----------
    bins:
        Most tokens per numeric column: columns with at most this many distinct values keep them exactly,
        others get this many quantile bins.
    within:
        Quantile points per numeric bin used to spread decoded values inside the bin.
    rare:
        Categories seen fewer times than this share one token (they are generated by frequency).
    hidden, depth, dropout:
        Width and number of hidden layers (the first, then ``depth - 1`` residual blocks), dropout rate.
    epochs, batch_size, learning_rate, patience:
        Adam with a cosine learning rate over ``epochs``; stops early when the validation loss has not improved
        for ``patience`` epochs. The first epochs (a fifth, at most 5) train on random column orders, after which
        the order that fits the validation rows best becomes the sampling order and training focuses on it
        (with random columns moved to the front, as conditions are).
    validation:
        Share of rows held out for early stopping and for choosing the sampling order.
    max_seconds:
        Stop training after about this long (None: no limit); the best epoch so far is kept.
    context:
        Columns that are always given when sampling (``sample_given``; a child row's parent columns, say): they
        come first in every training order and are never predicted, so the network spends nothing on them and
        ``sample`` without them is refused.
    threads:
        Torch threads for training and sampling (None: :func:`privsynth.threads.threads`, up to 2, 1 on a busy
        machine). On small tables (a few hundred rows a batch) a second thread spins more than it works.
    seed:
        Seeds the split, the initial weights and the training orders: same data and seed, same model.
    """

    name = "deep"
    context_: list[str]

    def __init__(
        self,
        bins: int = 48,
        within: int = 16,
        rare: int = 5,
        hidden: int = 128,
        depth: int = 1,
        dropout: float = 0.0,
        epochs: int = 30,
        batch_size: int = 1024,
        learning_rate: float = 5e-3,
        patience: int = 6,
        validation: float = 0.1,
        max_seconds: float | None = None,
        context: Sequence[str] = (),
        threads: int | None = None,
        seed: int = 0,
    ) -> None:
        self.bins = bins
        self.within = within
        self.rare = rare
        self.hidden = hidden
        self.depth = depth
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.validation = validation
        self.max_seconds = max_seconds
        self.context = tuple(context)
        self.threads = threads
        self.seed = seed

    def _fit(self, source: Source, schema: Schema, *, epsilon: float | None, delta: float | None, ledger: Any) -> None:
        self._check_params()
        unknown = [c for c in self.context if c not in schema.names]
        if unknown:
            raise ParameterError(f"context column '{unknown[0]}' is not in the data ({', '.join(schema.names)})")
        if len(set(self.context)) == len(schema.names):
            raise ParameterError("every column is a context column: leave at least one for the model to generate")
        self.context_ = list(dict.fromkeys(self.context))
        report("fit deep", 0, 3, "reading data")
        df = source.to_pandas(schema.names)
        if len(df) < 10:
            raise DataError(f"{source.name} has {len(df)} rows; the deep generator needs at least 10 to learn from")
        report("fit deep", 1, 3, "encoding")
        self.codecs_ = [
            fit_codec(col, df[col.name], bins=self.bins, within=self.within, rare=self.rare) for col in schema
        ]
        tokens = torch.from_numpy(np.column_stack([c.encode(df[c.column.name]) for c in self.codecs_]))
        rng = np.random.default_rng(self.seed)
        shuffled = torch.from_numpy(rng.permutation(len(df)))
        held = max(1, round(self.validation * len(df)))
        validation, train = tokens[shuffled[:held]], tokens[shuffled[held:]]
        report("fit deep", 2, 3, "training")
        with _threads(self.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            generator = torch.Generator().manual_seed(self.seed)
            self.net_ = AnyOrderNet([c.size for c in self.codecs_], self.hidden, self.depth, self.dropout)
            self.history_, self.order_ = fit_early_stopping(
                self.net_,
                train,
                validation,
                epochs=self.epochs,
                warmup=max(1, min(self.epochs // 5, 5)),
                candidates=_ORDER_CANDIDATES,
                batch_size=self.batch_size,
                learning_rate=self.learning_rate,
                patience=self.patience,
                max_seconds=self.max_seconds,
                generator=generator,
                context=[schema.names.index(c) for c in self.context_],
            )
        logger.info(
            "deep: %d epochs in %.1f s (%s); validation loss %.3f; sampling order %s",
            len(self.history_.validation_loss),
            self.history_.seconds,
            self.history_.stopped,
            min(self.history_.validation_loss),
            [schema.names[j] for j in self.order_],
        )
        report("fit deep", 3, 3)

    def _check_params(self) -> None:
        for name in ("bins", "within", "rare", "hidden", "depth", "epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ParameterError(f"{name} must be a positive whole number, not {value!r}")
        if not 0 < self.validation < 1:
            raise ParameterError(f"validation must be a share between 0 and 1, not {self.validation!r}")
        if not 0 <= self.dropout < 1:
            raise ParameterError(f"dropout must be in [0, 1), not {self.dropout!r}")
        if not self.learning_rate > 0:
            raise ParameterError(f"learning_rate must be > 0, not {self.learning_rate!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)):
            raise ParameterError(f"threads must be a positive whole number or None, not {self.threads!r}")
        if self.threads is not None and self.threads < 1:
            raise ParameterError(f"threads must be a positive whole number or None, not {self.threads!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ParameterError(f"max_seconds must be > 0 or None, not {self.max_seconds!r}")


_COUNT_SHARE = 0.01  # share of rho for the noisy row count that sets the sampling rate


@register
class DPDeepSynthesizer(_AnyOrderSynthesizer):
    """The ``deep`` network trained with DP-SGD on public or DP-learned domains: (epsilon, delta)-DP.

    The budget comes from :func:`privsynth.synth.dp.resolve_budget` and is spent in three parts, all through
    the accountant of :func:`privsynth.synth.dp.open_fit` (and so the ledger, under the dataset's name):

    1. Domains: columns without a public domain (and numeric columns whose quantile bins are learned inside
       public bounds) get theirs from :func:`privsynth.synth.domain.learn_domains`, with ``preprocessing`` of
       rho (nothing when every domain is public). Categories, bounds and bins never come from the data unnoised.
    2. A row count with Gaussian noise (1% of rho, sensitivity 1) sets the Poisson sampling rate
       ``batch_size / n`` and the number of steps; the true n is never used.
    3. DP-SGD on the rest: per-row gradient clipping at ``max_grad_norm`` (the L2 sensitivity of a step's sum)
       and Gaussian noise, with the smallest noise multiplier whose RDP fits the rho left (see
       :mod:`privsynth.privacy.dp_sgd` for why this composes soundly with the zCDP spends).

    The fit never fails on the data and never reports a value from it: a category outside the domain, a number
    outside it, a value of the wrong type or an unexpected missing value goes to an *other* or *missing* token,
    or is clipped, inside the mechanism (:class:`~privsynth.synth._deep_codec.DomainCodec`). Conditions and
    :meth:`rebalance` are checked against the fitted DP domains only, and their errors name no category or bound.
    There is no validation split, early stopping, choice of sampling order, training loss or timing (each would
    read the data without noise): training runs ``epochs`` passes, and sampling follows the schema's column order.
    ``record_`` (a :class:`~privsynth.synth.dp.FitRecord`) is what the fit may publish; ``privacy_`` adds the
    epsilon opacus's own accountant gives for the same run, as a cross-check.

    DP-SGD noise and floating point. The accounting assumes exact Gaussian noise; the noise is drawn as
    floating-point numbers, whose representation can leak the value they were added to (Mironov, "On
    Significance of the Least Significant Bits for Differential Privacy", CCS 2012, for the Laplace mechanism;
    Jin, McMurtry, Rubinstein and Ohrimenko, "Are We There Yet? Timing and Floating-Point Attacks on
    Differential Privacy Systems", IEEE S&P 2022, for opacus's Gaussian). The noise is therefore drawn in opacus's
    ``secure_mode``: each coordinate is the sum of four Gaussian draws scaled by one half, a defence against the
    attack on a single draw (Holohan and Braghin, "Secure Random Sampling in Differential Privacy",
    ESORICS 2021). What remains, and why it is accepted: the draws come from torch's Mersenne Twister, seeded
    with 64 bits from the operating system, not from a cryptographic generator (opacus's full secure mode needs
    ``torchcsprng``, which has no build for this torch); and the sum is still a float32, not an exact sample.
    The published attacks need each noisy output; here only the final weights are published, after every
    noisy gradient has passed through Adam and been added to hundreds of others, so no single draw is
    observable. An exact sampler (OpenDP's) would close the gap at a cost measured in
    ``benchmarks/results/dp_sgd_noise.json`` (``docs/PRIVACY_NOTES.md``, "DP-SGD noise").

    Parameters
    ----------
    bins:
        Bins per numeric column of a learned domain (see :func:`~privsynth.synth.domain.learn_domains`).
    hidden, depth:
        Width and depth of the network (small: DP-SGD noise grows with the number of weights).
    epochs, batch_size, learning_rate, max_grad_norm:
        DP-SGD: expected passes over the data, expected batch size, Adam's step size, clipping norm.
    preprocessing:
        Share of rho spent on learning domains, when some column needs it.
    in_memory_rows:
        Rows the fit may hold. When the noisy row count is above it, the rows stay in their engine (DuckDB,
        PostgreSQL, Spark) and each DP-SGD step's Poisson sample is drawn there, for a block of about
        ``in_memory_rows / batch_size`` steps per query (:func:`~privsynth.synth._deep_net.block_poisson_steps`):
        the samples are distributed exactly as when all rows are loaded (each row in each step independently
        with the accounted ``sample_rate``), so the accounting is the same. The choice depends only on the noisy
        count (a DP release) and the public parameter, never on the true row count.
    seed:
        Seeds the initial weights only; DP-SGD's sampling and noise are seeded by the operating system.
    """

    name = "dp-deep"
    differentially_private = True

    record_: FitRecord

    def __init__(
        self,
        bins: int = 16,
        hidden: int = 128,
        depth: int = 1,
        epochs: int = 10,
        batch_size: int = 512,
        learning_rate: float = 3e-3,
        max_grad_norm: float = 1.0,
        preprocessing: float = 0.1,
        in_memory_rows: int = 1_000_000,
        seed: int = 0,
    ) -> None:
        self.bins = bins
        self.hidden = hidden
        self.depth = depth
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_grad_norm = max_grad_norm
        self.preprocessing = preprocessing
        self.in_memory_rows = in_memory_rows
        self.seed = seed

    def _fit(self, source: Source, schema: Schema, *, epsilon: float | None, delta: float | None, ledger: Any) -> None:
        for name in ("bins", "hidden", "depth", "epochs", "batch_size", "in_memory_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ParameterError(f"{name} must be a positive whole number, not {value!r}")
        check_positive("learning_rate", self.learning_rate)
        check_positive("max_grad_norm", self.max_grad_norm)
        if not 0 < self.preprocessing < 1:
            raise ParameterError(f"preprocessing must be a share between 0 and 1, not {self.preprocessing!r}")
        budget = resolve_budget(self.name, epsilon, delta, schema)
        paid = needs_budget(schema, self.bins)
        with self._accounting(budget, ledger, source, schema) as (accountant, cap, source, schema):
            released = self._train(source, schema, budget, accountant, cap, paid)
        self._record_fit(budget, accountant, released)

    def _train(
        self,
        source: Source,
        schema: Schema,
        budget: Budget,
        accountant: Accountant,
        cap: Budget | None,
        paid: list[str],
    ) -> dict[str, Any]:
        """Learn domains, count, train; returns the values released through a mechanism that a card may show."""
        domain_share = self.preprocessing if paid else 0.0
        rho_domains, rho_count, _ = split_exactly(
            budget.rho, [domain_share, _COUNT_SHARE, 1 - domain_share - _COUNT_SHARE]
        )
        report("fit dp-deep", 0, 3, "domains")
        domains = learn_domains(source, schema, accountant if paid else None, rho=rho_domains, bins=self.bins)
        self.codecs_ = [DomainCodec(domains[name]) for name in schema.names]
        report("fit dp-deep", 1, 3, "row count")
        noisy_rows, sample_rate = noisy_sample_rate(
            source.num_rows(),
            batch_size=self.batch_size,
            rho=rho_count,
            budget=budget,
            accountant=accountant,
            records="row",
        )
        steps = math.ceil(self.epochs / sample_rate)
        sgd = spend_dp_sgd(
            accountant,
            budget,
            cap,
            sample_rate=sample_rate,
            steps=steps,
            max_grad_norm=self.max_grad_norm,
            purpose="train the dp-deep network",
        )
        train = _training_rows(source, schema, self.codecs_, noisy_rows, self.in_memory_rows, self.batch_size)
        report("fit dp-deep", 2, 3, "DP-SGD")
        with torch_threads(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net_ = AnyOrderNet([c.size for c in self.codecs_], self.hidden, self.depth, 0.0)
            fit_dp_sgd(
                self.net_,
                train if isinstance(train, torch.Tensor) else partial(train, sample_rate, steps),
                sample_rate=sample_rate,
                steps=steps,
                noise_multiplier=sgd.sigma,
                max_grad_norm=self.max_grad_norm,
                learning_rate=self.learning_rate,
                expected_batch_size=self.batch_size,
                order=list(range(len(schema))),
            )
        passes = math.ceil(steps * sample_rate)
        self.history_ = History(best_epoch=passes, stopped=f"{steps} DP-SGD steps ({passes} passes over the data)")
        self.order_ = list(range(len(schema)))
        self.privacy_ = privacy_record(budget, accountant, sgd)
        report("fit dp-deep", 3, 3)
        return {
            "noisy_rows": noisy_rows,
            "noise_multiplier": sgd.sigma,
            "sample_rate": sample_rate,
            "steps": steps,
            "domains": {name: domains[name].cost for name in schema.names},
        }

    def _released_schema(self) -> Schema:
        """The structure plus the domains the fit released (DP outputs or public), as the model keeps it."""
        codecs = cast(list[DomainCodec], self.codecs_)
        return Schema([domain_column(codec.domain) for codec in codecs], target=self.schema_.target)

    def _check_conditions(self, conditions: Conditions) -> dict[str, Any]:
        """Conditions checked against the fitted DP domains (the codecs) only, never the inferred schema."""
        return {column: self._codec(column).condition(value)[1] for column, value in conditions.items()}


def _encode(codecs: list[Codec], frame: pd.DataFrame) -> torch.Tensor:
    """The rows of ``frame`` as one token per column (what DP-SGD trains on)."""
    if not len(frame):
        return torch.zeros((0, len(codecs)), dtype=torch.long)
    return torch.from_numpy(np.column_stack([codec.encode(frame[codec.column.name]) for codec in codecs]))


def _training_rows(
    source: Source, schema: Schema, codecs: list[Codec], noisy_rows: float, in_memory_rows: int, batch_size: int
) -> torch.Tensor | Callable[[float, int, torch.Generator], Iterator[torch.Tensor]]:
    """Every row encoded, when the noisy row count is at most ``in_memory_rows``; above, a function that yields
    each step's Poisson sample drawn by the source's engine, ``in_memory_rows // batch_size`` steps per query
    (about ``in_memory_rows`` rows held at a time)."""
    if noisy_rows <= in_memory_rows:
        return _encode(codecs, source.to_pandas(schema.names))
    logger.info("dp-deep: each block of DP-SGD steps draws its Poisson sample in the source's engine")
    block = max(1, in_memory_rows // batch_size)

    def steps_from_engine(sample_rate: float, steps: int, secret: torch.Generator) -> Iterator[torch.Tensor]:
        def draw(rate: float) -> torch.Tensor:
            return _encode(codecs, source.poisson_sample(rate, schema.names))

        return block_poisson_steps(draw, sample_rate, steps, block, secret)

    return steps_from_engine
