"""DP-SGD over the LoRA adapters with opacus (Abadi et al., CCS 2016), and the non-private baseline.

The noise multiplier and sampling rate come from the caller (:mod:`privsynth.privacy.dp_sgd` calibrates and charges
them); this module takes exactly the steps that were paid for and checks that it did. opacus fails silently in two
ways that matter here: its optimizer degrades to plain, unclipped and noiseless SGD when no weight holds
per-sample gradients, and an empty Poisson sample cannot run through the model. Every step checks the first
(:func:`check_per_sample_gradients`) and handles the second (:func:`empty_batch_gradients`); both are public so
the tests can reach the failures.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import torch

from privsynth.errors import ParameterError
from privsynth.privacy.dp_sgd import release_opacus, secret_generator
from privsynth.progress import report
from privsynth.text.dp_finetune.encoding import Encoded

__all__ = [
    "check_per_sample_gradients",
    "empty_batch_gradients",
    "mean_nll",
    "private_training",
    "sequence_logprob",
    "train_dp",
    "train_plain",
    "trainable",
]

_LORA_MARK = "lora_"


def train_dp(
    model: Any,
    encoded: Encoded,
    *,
    sample_rate: float,
    noise_multiplier: float,
    max_grad_norm: float,
    learning_rate: float,
    batch_size: int,
    physical_batch_size: int,
    epochs: int,
) -> tuple[float, list[tuple[Any, ...]]]:
    """DP-SGD over the adapters of ``model``: ``(seconds, history)``, the time it took (a diagnostic for the data
    holder, never released) and what an opacus ``RDPAccountant`` attached to the optimizer counted. Poisson
    samples of expected size ``batch_size`` are split into forward passes of ``physical_batch_size`` texts (memory
    only). Every optimizer step is checked to clip; a run whose noisy steps differ from the ``epochs * 1 /
    sample_rate`` paid for fails."""
    from opacus.accountants import RDPAccountant  # type: ignore[import-untyped]
    from opacus.utils.batch_memory_manager import BatchMemoryManager  # type: ignore[import-untyped]

    secret = secret_generator()  # the operating system's seed (a test's inside seeded_noise only)
    module, optimizer, loader = private_training(
        model,
        encoded,
        sample_rate=sample_rate,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        learning_rate=learning_rate,
        expected_batch_size=batch_size,
        generator=secret,
    )
    steps = epochs * len(loader)
    tracker = RDPAccountant()
    optimizer.attach_step_hook(tracker.get_optimizer_hook_fn(sample_rate=sample_rate))
    start = time.perf_counter()
    step = 0
    report("fit dp-lora", 0, steps, "DP-SGD")
    try:
        with (
            warnings.catch_warnings(),
            BatchMemoryManager(
                data_loader=loader, max_physical_batch_size=physical_batch_size, optimizer=optimizer
            ) as physical,
        ):
            # the adapters' inputs need no gradient (the base is frozen); torch says so on every step
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            for _ in range(epochs):
                for ids, attention, targets in physical:
                    _set_rate(optimizer, learning_rate, step, steps)
                    if ids.shape[0]:
                        torch.autograd.backward(mean_nll(module, ids, attention, targets).mean())
                    else:
                        empty_batch_gradients(model)
                    check_per_sample_gradients(model, ids.shape[0])
                    optimizer.step()
                    if not optimizer._is_last_step_skipped:
                        # no timing in the event: a step's time follows the size of its Poisson batch
                        step += 1
                        report("fit dp-lora", step, steps, f"step {step} of {steps}")
                    optimizer.zero_grad(set_to_none=True)
    finally:
        release_opacus(module, model)
    model.eval()
    history = [tuple(entry) for entry in tracker.history]
    taken = sum(int(entry[2]) for entry in tracker.history)
    if taken != steps or any(entry[:2] != (noise_multiplier, sample_rate) for entry in tracker.history):
        raise RuntimeError(f"DP-SGD took {taken} noisy steps, {tracker.history}, but {steps} were paid for")
    return time.perf_counter() - start, history


def train_plain(
    model: Any,
    encoded: Encoded,
    *,
    learning_rate: float,
    batch_size: int,
    physical_batch_size: int,
    epochs: int,
    seed: int,
) -> tuple[float, int]:
    """Adam on shuffled batches, no clipping or noise: the non-private baseline. ``(seconds, steps)``."""
    n = encoded.ids.shape[0]
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(n / batch_size)
    optimizer = torch.optim.Adam(trainable(model), lr=learning_rate)
    start = time.perf_counter()
    step = 0
    model.train()
    report("fit dp-lora", 0, steps, "LoRA without DP")
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for first in range(0, n, batch_size):
            rows = order[first : first + batch_size]
            _set_rate(optimizer, learning_rate, step, steps)
            optimizer.zero_grad(set_to_none=True)
            for chunk in torch.split(rows, physical_batch_size):
                nll = mean_nll(model, encoded.ids[chunk], encoded.attention[chunk], encoded.targets[chunk])
                torch.autograd.backward(nll.sum() / rows.shape[0])
            optimizer.step()
            step += 1
            report("fit dp-lora", step, steps, f"step {step} of {steps}")
    model.eval()
    return time.perf_counter() - start, steps


def private_training(
    model: Any,
    encoded: Encoded,
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

    params = trainable(model)
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


def trainable(model: Any) -> list[torch.nn.Parameter]:
    """The weights that train: the LoRA adapters (the base model is frozen)."""
    return [p for p in model.parameters() if p.requires_grad]


def _set_rate(optimizer: Any, learning_rate: float, step: int, steps: int) -> None:
    """Cosine decay of the step size from ``learning_rate`` to 0 over ``steps``."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate * (1 + math.cos(math.pi * step / max(1, steps))) / 2


def sequence_logprob(
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


def mean_nll(model: Any, ids: torch.Tensor, attention: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row mean negative log-likelihood per target token: one loss per text, so one gradient per text."""
    total, count = sequence_logprob(model, ids, attention, targets)
    return -total / count.clamp(min=1.0)
