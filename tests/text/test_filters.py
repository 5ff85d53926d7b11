import json
import re

import numpy as np
import pytest

from privsynth.data.datasets import load_dataset
from privsynth.errors import ParameterError
from privsynth.text.filters import REMOVAL_RULES, apply_filters, repeat_ratio, scrub_pii


@pytest.fixture(scope="module")
def tweets() -> dict[str, list[str]]:
    train, holdout = load_dataset("trump_tweets", "train"), load_dataset("trump_tweets", "holdout")
    rng = np.random.default_rng(0)
    return {
        "train": train["text"].to_numpy()[rng.permutation(len(train))].tolist(),
        "holdout": holdout["text"].to_numpy()[rng.permutation(len(holdout))].tolist(),
        "all": load_dataset("trump_tweets", "all")["text"].tolist(),
    }


@pytest.fixture(scope="module")
def clean(tweets: dict[str, list[str]]) -> list[str]:
    """400 real tweets that already pass every filter: nothing in them is a duplicate of another."""
    kept, _ = apply_filters(tweets["train"][:450])
    return kept[:400]


def _adds_up(counts: dict[str, object]) -> None:
    removed = counts["removed"]
    assert isinstance(removed, dict)
    assert counts["kept"] + sum(removed.values()) == counts["input"]


def test_filters_remove_exactly_the_planted_duplicates(clean: list[str]) -> None:
    rng = np.random.default_rng(1)
    exact = [f"  {clean[i].upper()} " for i in rng.choice(len(clean), 20, replace=False)]  # case and spacing only
    near = []
    for i in rng.choice([i for i, t in enumerate(clean) if len(t.split()) >= 15], 15, replace=False):
        words = clean[i].split()
        words[len(words) // 2] = "tremendous"  # one word changed in a long tweet
        near.append(" ".join(words))
    kept, counts = apply_filters([*clean, *exact, *near])
    assert kept == clean
    assert counts.removed["exact_duplicate"] == 20
    assert counts.removed["near_duplicate"] == 15
    assert sum(counts.removed.values()) == 35
    assert counts.used_private_data is False
    _adds_up(counts.to_dict())


def test_near_duplicate_threshold_none_keeps_near_copies(clean: list[str]) -> None:
    words = [*clean[0].split(), "again"]
    kept, counts = apply_filters([clean[0], " ".join(words)], near_duplicate_threshold=None, min_words=0)
    assert len(kept) == 2 and counts.removed["near_duplicate"] == 0


def test_real_tweets_mostly_pass_and_counts_go_in_the_card(tweets: dict[str, list[str]]) -> None:
    kept, counts = apply_filters(tweets["train"][:2000])
    data = json.loads(json.dumps(counts.to_dict()))
    assert set(data["removed"]) == set(REMOVAL_RULES)
    _adds_up(data)
    # Measured on this seeded sample: short tweets ("Thank you!") and retweeted near-copies are what goes.
    assert 0.95 <= data["kept"] / data["input"] <= 0.99
    assert data["removed"]["too_short"] > data["removed"]["low_alpha"] + data["removed"]["repetitive"]
    assert data["settings"]["near_duplicate"].startswith("character 5-gram Jaccard >= 0.7")
    assert len(kept) == data["kept"]


def test_pii_is_replaced_by_typed_placeholders() -> None:
    text = (
        "Mail jane.doe@example.org or call (212) 555-1234, +44 20 7946 0958, 1-800-342-3557 or 212 555 1234. "
        "SSN 123-45-6789, card 4111 1111 1111 1111, server 192.168.0.1. Jane Doe met JOHN."
    )
    scrubbed, counts = scrub_pii(text, ["Jane Doe", "John"])
    assert counts == {"EMAIL": 1, "ID": 3, "PHONE": 4, "NAME": 2}
    assert scrubbed == (
        "Mail [EMAIL] or call [PHONE], [PHONE], [PHONE] or [PHONE]. "
        "SSN [ID], card [ID], server [ID]. [NAME] met [NAME]."
    )


def test_pii_scrubbing_leaves_numbers_that_are_not_pii_alone() -> None:
    text = "In 2016 300 people came, 1,000,000 watched on 2016-05-12; card 4111 1111 1111 1112; v1.2.3.4 Johnson"
    scrubbed, counts = scrub_pii(text, ["John"])
    assert scrubbed == text
    assert sum(counts.values()) == 0


def test_pii_found_in_the_real_corpus(tweets: dict[str, list[str]]) -> None:
    totals = dict.fromkeys(("EMAIL", "ID", "PHONE", "NAME"), 0)
    changed = 0
    for text in tweets["all"]:
        scrubbed, counts = scrub_pii(text)
        changed += scrubbed != text
        for kind, count in counts.items():
            totals[kind] += count
    # 20,761 tweets: restaurant and hotline numbers ("212.836.3249", "1-800-342-3557") and three addresses.
    assert totals == {"EMAIL": 3, "ID": 0, "PHONE": 7, "NAME": 0}
    assert changed == 9


def test_names_from_a_list_are_scrubbed_and_counted(tweets: dict[str, list[str]]) -> None:
    sample = tweets["train"][:1000]
    kept, counts = apply_filters(sample, names=["Hillary", "Obama"], deduplicate=False, min_words=0)
    whole_word = re.compile(r"(?<!\w)(hillary|obama)(?!\w)", re.IGNORECASE)
    mentions = sum(len(whole_word.findall(t)) for t in sample)
    assert counts.pii_replaced["NAME"] == mentions > 20
    assert not any(whole_word.search(t) for t in kept)
    assert any("Obamacare" in t for t in kept)  # a longer word that contains a name is not a name
    assert counts.texts_scrubbed >= 20


def test_quality_rules_name_what_they_removed() -> None:
    texts = [
        "",
        "   ",
        "Thank you!",
        "1234 5678 #### $$$$ 99.5%",
        "ha ha ha ha ha ha ha ha ha ha",
        "the best the best the best the best the best",
        "A long tweet " + "word " * 60,
        "We will make the economy strong again, and bring back our jobs!",
    ]
    kept, counts = apply_filters(texts, max_words=40)
    assert kept == ["We will make the economy strong again, and bring back our jobs!"]
    assert counts.removed["empty"] == 2
    assert counts.removed["too_short"] == 1
    assert counts.removed["low_alpha"] == 1
    assert counts.removed["repetitive"] == 2
    assert counts.removed["too_long"] == 1
    assert repeat_ratio("ha ha ha ha ha ha") == pytest.approx(0.75)
    assert repeat_ratio(texts[-1]) == 0.0


def test_copies_of_private_texts_are_removed_and_flagged(tweets: dict[str, list[str]], clean: list[str]) -> None:
    private = clean[:200]
    fresh, _ = apply_filters(tweets["holdout"][:120])
    long_private = [t for t in private if len(t.split()) >= 15]
    copies = [t.lower() for t in private[:10]]
    near = []
    for text in long_private[:10]:
        words = text.split()
        words[len(words) // 2] = "tremendous"
        near.append(" ".join(words))
    runs = [" ".join(p.split()[:9] + f.split()[-12:]) for p, f in zip(long_private[10:20], fresh[:10], strict=True)]
    synthetic = [*fresh[10:110], *copies, *near, *runs]
    kept, counts = apply_filters(synthetic, private_texts=private)
    assert counts.used_private_data is True
    assert counts.removed["private_copy"] == 10
    assert counts.removed["private_near_copy"] == 10
    assert counts.removed["private_substring"] == 10
    assert kept == fresh[10:110]
    assert counts.to_dict()["settings"]["copy_words"] == 8


def test_fresh_real_texts_rarely_look_like_copies(tweets: dict[str, list[str]]) -> None:
    _, counts = apply_filters(tweets["holdout"][:600], private_texts=tweets["train"][:3000])
    flagged = counts.removed["private_copy"] + counts.removed["private_near_copy"] + counts.removed["private_substring"]
    # Real tweets repeat slogans and retweet themselves: a few percent of fresh ones share 8 words with others.
    assert 0 < flagged / 600 < 0.05


def test_bad_input_names_the_position_and_value() -> None:
    with pytest.raises(ParameterError, match=r"texts\[1\] is float \(nan\), not a string"):
        apply_filters(["fine text here", float("nan")])  # type: ignore[list-item]
    with pytest.raises(ParameterError, match=r"private_texts\[0\] is NoneType"):
        apply_filters(["fine text here"], private_texts=[None])  # type: ignore[list-item]
    with pytest.raises(ParameterError, match="texts must be a list of strings, not str"):
        apply_filters("one string")
    with pytest.raises(ParameterError, match="near_duplicate_threshold must be in"):
        apply_filters(["a b c"], near_duplicate_threshold=1.5)
    with pytest.raises(ParameterError, match="max_words must be"):
        apply_filters(["a b c"], min_words=5, max_words=2)


def test_kept_index_points_at_the_kept_inputs() -> None:
    texts = ["a fine first sentence here", "", "a fine first sentence here", "call me at jane@example.com today now"]
    kept, counts = apply_filters(texts)
    assert counts.kept_index == [0, 3]
    assert kept == [texts[0], "call me at [EMAIL] today now"]
    assert "kept_index" not in counts.to_dict()
