"""DP fine-tuning of the local language model with LoRA adapters, and the canary exposure audit.

Training follows Yu et al., "Differentially Private Fine-tuning of Language Models" (ICLR 2022): the base model
(SmolLM2-135M-Instruct, :func:`privsynth.text.torch_model.load_causal_lm`) stays frozen, low-rank adapters
(Hu et al., "LoRA", ICLR 2022; the ``peft`` library) are the only trainable weights, and they are trained with
DP-SGD (Abadi et al., CCS 2016) by ``opacus``: Poisson sampling (``DPDataLoader``), per-text gradients clipped to
``max_grad_norm``, Gaussian noise on their sum. One text is one record. The noise multiplier is calibrated and
charged exactly as ``dp-deep`` does (:mod:`privsynth.privacy.dp_sgd`): the DP-SGD charge is its RDP up to
the budget's conversion order over that order, so it adds up in rho with every other spend in the ledger.

The audit is the exposure of Carlini et al. (USENIX Security 2019): random canaries are inserted into the training
texts and each one's likelihood is ranked among random candidates from the same template.

The modules: :mod:`.lora` (the :class:`DPLoRA` model: fit, save, sample), :mod:`.training` (DP-SGD over the
adapters with opacus, and the non-private baseline), :mod:`.encoding` (texts and labels as token ids, and their
checks) and :mod:`.canaries` (the exposure audit).
"""

from privsynth.text.dp_finetune.canaries import CanaryResult, canary_exposure, canary_texts, exposure
from privsynth.text.dp_finetune.lora import DPLoRA
from privsynth.text.dp_finetune.training import (
    check_per_sample_gradients,
    empty_batch_gradients,
    private_training,
)

__all__ = [
    "CanaryResult",
    "DPLoRA",
    "canary_exposure",
    "canary_texts",
    "check_per_sample_gradients",
    "empty_batch_gradients",
    "exposure",
    "private_training",
]
