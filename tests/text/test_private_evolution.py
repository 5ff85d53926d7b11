import math

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("opendp")

from privsynth.data.datasets import load_dataset
from privsynth.errors import ParameterError
from privsynth.privacy.accountant import Accountant
from privsynth.privacy.budget import Budget
from privsynth.privacy.ledger import Ledger
from privsynth.text.llm import Embedder, LlamaCppGenerator, local_generator
from privsynth.text.pe_accounting import gdp_delta, pe_epsilon, pe_noise_multiplier
from privsynth.text.private_evolution import PrivateEvolution, _clean_texts, measure

# Aug-PE's published noise multipliers (AI-secure/aug-pe, notebook/dp_budget.ipynb; the values its run scripts use):
# T = 10 iterations, delta = 1 / (N log N).
AUG_PE_NOISE = [
    (1_939_290, 1, 15.34),  # Yelp
    (1_939_290, 2, 8.03),
    (1_939_290, 4, 4.24),
    (8_396, 1, 11.60),  # OpenReview
    (8_396, 2, 6.22),
    (8_396, 4, 3.38),
    (75_316, 1, 13.26),  # PubMed
    (75_316, 2, 7.01),
    (75_316, 4, 3.75),
]


@pytest.fixture(scope="module")
def tweets() -> tuple[list[str], list[str]]:
    train = load_dataset("trump_tweets", "train")
    return train["text"].tolist(), train["source"].tolist()


@pytest.mark.parametrize(("n", "epsilon", "published"), AUG_PE_NOISE)
def test_noise_multiplier_reproduces_aug_pe_published_values(n: int, epsilon: float, published: float) -> None:
    sigma = pe_noise_multiplier(epsilon, 1 / (n * math.log(n)), 10)
    assert sigma == pytest.approx(published, rel=0.01)


def test_pe_epsilon_inverts_the_noise_multiplier() -> None:
    sigma = pe_noise_multiplier(4.0, 1e-5, 5)
    assert pe_epsilon(sigma, 1e-5, 5) == pytest.approx(4.0, rel=1e-9)
    # More iterations at the same noise cost more.
    assert pe_epsilon(sigma, 1e-5, 10) > 4.0


def test_gdp_delta_matches_the_closed_form_at_epsilon_zero() -> None:
    # At epsilon 0, delta is the total variation between N(0,1) and N(mu,1): 2 Phi(mu/2) - 1.
    assert gdp_delta(0.0, 1.0) == pytest.approx(0.382924922548026, abs=1e-12)


def test_zcdp_calibration_is_a_little_noisier_than_gdp() -> None:
    budget = Budget.from_epsilon_delta(4.0, 1e-5)
    sigma = math.sqrt(5 / (2 * budget.rho))
    gdp = pe_noise_multiplier(4.0, 1e-5, 5)
    assert gdp < sigma < 1.1 * gdp
    assert pe_epsilon(sigma, 1e-5, 5) < 4.0


def test_votes_prefer_synthetic_texts_that_resemble_the_private_ones(tweets: tuple[list[str], list[str]]) -> None:
    texts, _ = tweets
    embedder = Embedder()
    private = embedder.embed(texts[:60])
    holdout = load_dataset("trump_tweets", "holdout")["text"].tolist()[:5]
    unrelated = [
        "Preheat the oven to 180 degrees and grease the tin.",
        "The mitochondria is the powerhouse of the cell.",
        "Replace the printer cartridge by lifting the front cover.",
        "Tomatoes grow best in full sun with regular watering.",
        "The train to Lyon leaves from platform nine at noon.",
    ]
    synthetic = embedder.embed(holdout + unrelated)
    accountant = Accountant(Budget.from_rho(100.0, 1e-6))
    scores = measure(
        private,
        np.zeros(60, dtype=np.int64),
        synthetic,
        np.zeros(10, dtype=np.int64),
        rho=50.0,
        accountant=accountant,
        iteration=1,
    )
    assert scores.shape == (10,)
    assert scores.sum() == pytest.approx(60, abs=3)  # sigma = 0.1 on each count
    assert scores[:5].sum() > 50
    assert accountant.spent == pytest.approx(50.0)
    assert "l2_sensitivity=1" in accountant.charges[0].mechanism


def test_votes_stay_within_their_label(tweets: tuple[list[str], list[str]]) -> None:
    texts, _ = tweets
    embedder = Embedder()
    private = embedder.embed(texts[:30])
    synthetic = embedder.embed(texts[100:104])
    groups = np.array([0] * 20 + [1] * 10, dtype=np.int64)
    scores = measure(
        private,
        groups,
        synthetic,
        np.array([0, 0, 0, 1], dtype=np.int64),
        rho=5000.0,
        accountant=Accountant(Budget.from_rho(5000.0, 1e-6)),
        iteration=1,
    )
    assert scores[:3].sum() == pytest.approx(20, abs=0.5)
    assert scores[3] == pytest.approx(10, abs=0.5)


def test_unusable_texts_cast_no_vote_and_are_not_reported() -> None:
    texts, voting = _clean_texts(["fine", math.nan, None, "  ", 3, "also fine"])
    assert texts[0] == "fine" and voting.tolist() == [True, False, False, False, False, True]
    with pytest.raises(ParameterError, match="not one string"):
        _clean_texts("one string")


def test_labels_need_a_declared_public_label_set(tweets: tuple[list[str], list[str]]) -> None:
    texts, sources = tweets
    with pytest.raises(ParameterError, match="public_labels"):
        PrivateEvolution(LlamaCppGenerator()).fit(texts[:50], sources[:50], epsilon=4, ledger=False)


def test_thousands_of_classes_are_refused(tweets: tuple[list[str], list[str]]) -> None:
    texts, _ = tweets
    ids = [f"user{i}" for i in range(2000)]
    with pytest.raises(ParameterError, match="2000 public labels is too many"):
        PrivateEvolution(LlamaCppGenerator()).fit(texts[:2000], ids, public_labels=ids, epsilon=4, ledger=False)


def test_delta_above_the_cap_is_refused_without_reading_the_texts(tweets: tuple[list[str], list[str]]) -> None:
    texts, _ = tweets
    with pytest.raises(ParameterError, match=r"delta=0\.05 is too large") as error:
        PrivateEvolution(LlamaCppGenerator()).fit(texts[:37], epsilon=4, delta=0.05, ledger=False)
    assert "37" not in str(error.value)


def test_a_recorded_fit_needs_a_declared_dataset_name(tweets: tuple[list[str], list[str]]) -> None:
    texts, _ = tweets
    with pytest.raises(ParameterError, match="dataset='NAME'"):
        PrivateEvolution(LlamaCppGenerator()).fit(texts[:100], epsilon=4)


def test_tiny_fit_spends_the_budget_through_the_ledger(tweets: tuple[list[str], list[str]], tmp_path) -> None:
    texts, sources = tweets
    ledger = Ledger(tmp_path / "ledger.db")
    labels = ["Twitter for Android", "Twitter for iPhone"]
    chosen = [i for i, source in enumerate(sources) if source in labels][:20]
    model = PrivateEvolution(
        local_generator(), iterations=2, population=4, max_tokens=16, prompt="Write a tweet by a US politician."
    )
    model.fit(
        [texts[i] for i in chosen],
        [sources[i] for i in chosen],
        public_labels=labels,
        epsilon=8.0,
        ledger=ledger,
        dataset="tweets-sample",
    )
    budget = Budget.from_epsilon_delta(8.0, 1e-6)  # the default delta
    assert len(model.charges_) == 2
    assert ledger.spent("tweets-sample") == pytest.approx(budget.rho, rel=1e-9)
    assert model.sigma_ == pytest.approx(math.sqrt(2 / (2 * budget.rho)), rel=1e-6)
    assert model.epsilon_ == pytest.approx(8.0, rel=1e-6)
    assert model.epsilon_gdp_ < 8.0
    assert list(model.history_["iteration"].value_counts().sort_index()) == [4, 4]
    synthetic = model.sample(6)  # two more than the population: variations, free under DP
    assert list(synthetic.columns) == ["text", "label"]
    assert len(synthetic) == 6
    assert set(synthetic["label"]) <= set(labels)
    assert synthetic["text"].str.len().gt(0).mean() >= 0.5
    record = model.record_
    assert record.method == "pe" and record.dataset == "tweets-sample" and record.delta == 1e-6
    assert record.parameters["population"] == 4 and record.parameters["public_labels"] == labels
    assert record.rho_spent == pytest.approx(budget.rho, rel=1e-9) and len(record.spends) == 2


@pytest.mark.slow
def test_evolution_moves_the_population_towards_the_private_texts(tweets: tuple[list[str], list[str]]) -> None:
    texts, _ = tweets
    embedder = Embedder()
    model = PrivateEvolution(
        local_generator(),
        embedder,
        iterations=3,
        population=40,
        max_tokens=40,
        prompt="Write a short tweet by Donald Trump. Reply with the tweet only.",
    )
    model.fit(texts[:300], epsilon=8.0, ledger=False)
    holdout = embedder.embed(load_dataset("trump_tweets", "holdout")["text"].tolist()[:300])

    def closeness(frame_texts: list[str]) -> float:
        return float((embedder.embed(frame_texts) @ holdout.T).max(axis=1).mean())

    first = model.history_.query("iteration == 1")["text"].tolist()
    final = model.sample(20)["text"].tolist()
    assert closeness(final) > closeness(first) + 0.02


class _Numbered:
    """A stand-in language model: each completion is a new text determined by its prompt and seed."""

    def generate(self, prompts: list[str], *, max_tokens: int, temperature: float, seed: int) -> list[str]:
        return [f"synthetic {seed} {i} {len(prompt)}" for i, prompt in enumerate(prompts)]


class _Hashed:
    """A stand-in embedder: a unit vector per text, seeded by the text."""

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = [np.random.default_rng(sum(map(ord, text))).standard_normal(4) for text in texts]
        vectors = np.array(rows).reshape(len(rows), 4)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_a_dp_fit_neither_fails_on_nor_reports_unusable_texts_or_labels(caplog: pytest.LogCaptureFixture) -> None:
    """Blank and non-string texts and undeclared labels cast no vote, silently; an empty corpus is fitted too."""
    texts = ["a real text", None, "  ", "zqxcanary 8675309", "another text"]
    labels = ["x", "x", "y", "zqxundeclared", "y"]
    with caplog.at_level("DEBUG"):
        model = PrivateEvolution(_Numbered(), _Hashed(), iterations=2, population=4)  # type: ignore[arg-type]
        model.fit(texts, labels, public_labels=["x", "y"], epsilon=0.1, ledger=False)
        PrivateEvolution(_Numbered(), _Hashed(), iterations=1, population=4).fit([], epsilon=1, ledger=False)  # type: ignore[arg-type]
    assert set(model.sample(4)["label"]) <= {"x", "y"} and len(model.charges_) == 2
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "zqx" not in logged and "8675309" not in logged


def test_noise_and_delta_warnings_come_from_the_noisy_vote_total(caplog: pytest.LogCaptureFixture) -> None:
    """sigma 57 against a noisy total of 20 votes over 4 texts: the selection is noise; a total of 2e6 texts is
    beyond 1/delta. The warnings name the noise and the budget, never a count."""
    budget = Budget.from_epsilon_delta(0.1, 1e-6)
    model = PrivateEvolution(iterations=2, population=4)
    with caplog.at_level("WARNING"):
        model._warn_noise(57.0, 20.0, budget)
        model._warn_noise(57.0, 2e6, budget)
    first, second = (record.getMessage() for record in caplog.records)
    assert "sigma=57 " in first and "the selection is mostly noise" in first and "20" not in first
    assert "delta=1e-06 is not below 1/n" in second and "2e+06" not in second and "2000000" not in second
