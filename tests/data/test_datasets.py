import pytest

from privsynth.data.datasets import DATASETS, bundled_schema, dataset_info, dataset_names, holdout_mask, load_dataset
from privsynth.data.schema import Schema
from privsynth.errors import ParameterError


@pytest.mark.parametrize(
    ("name", "train_shape", "holdout_rows"),
    [
        ("nassCDS", (20974, 14), 5243),
        ("covid_testing", (12419, 17), 3105),
        ("nafld1", (14039, 7), 3510),
        ("loans", (8000, 55), 2000),
        ("ames", (2344, 74), 586),
    ],
)
def test_bundled_split_is_fixed_80_20(name: str, train_shape: tuple[int, int], holdout_rows: int) -> None:
    train, holdout = load_dataset(name, "train"), load_dataset(name, "holdout")
    assert train.shape == train_shape
    assert len(holdout) == holdout_rows
    assert DATASETS[name].target in train.columns
    assert "rownames" not in train.columns


def test_split_is_disjoint_and_reproducible() -> None:
    everything = load_dataset("nafld1", "all")
    mask = holdout_mask("nafld1", len(everything))
    assert mask.sum() == round(0.2 * len(everything))
    assert (holdout_mask("nafld1", len(everything)) == mask).all()
    assert load_dataset("nafld1", "holdout").equals(everything[mask].reset_index(drop=True))


def test_declared_drops_are_gone() -> None:
    assert "caseid" not in load_dataset("nassCDS").columns
    assert not {"id", "case.id"} & set(load_dataset("nafld1").columns)


def test_unknown_dataset_lists_the_bundled_ones() -> None:
    with pytest.raises(ParameterError, match="unknown dataset 'iris'; bundled datasets: nassCDS"):
        load_dataset("iris")


def test_trump_tweets_is_a_text_corpus_with_a_fixed_split() -> None:
    train, holdout = load_dataset("trump_tweets", "train"), load_dataset("trump_tweets", "holdout")
    assert (len(train), len(holdout)) == (16609, 4152)
    assert list(train.columns) == ["source", "text", "created_at", "retweet_count", "favorite_count", "is_retweet"]
    info = DATASETS["trump_tweets"]
    assert (info.kind, info.text, info.target) == ("text", "text", "source")
    assert all(isinstance(t, str) and t.strip() for t in train["text"])
    assert train["source"].value_counts().index[:3].tolist() == [
        "Twitter Web Client",
        "Twitter for Android",
        "Twitter for iPhone",
    ]
    assert not set(train["text"].head(200)) & set(holdout["text"].head(200))


def test_dataset_names_by_kind_keeps_text_out_of_the_tables() -> None:
    assert dataset_names("table") == ["nassCDS", "covid_testing", "nafld1", "loans", "ames"]
    assert dataset_names("text") == ["trump_tweets"]
    assert dataset_names() == [*dataset_names("table"), "trump_tweets"]
    assert all(DATASETS[name].text is None for name in dataset_names("table"))
    with pytest.raises(ParameterError, match="kind must be 'table', 'text' or None, not 'image'"):
        dataset_names("image")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["nassCDS", "covid_testing", "nafld1"])
def test_bundled_schema_declares_the_documented_label_set_public(name: str) -> None:
    info = dataset_info(name)
    train = load_dataset(name)
    schema = bundled_schema(name, train)
    [(column, categories)] = info.public
    assert column == info.target and schema[column].public and schema[column].categories == list(categories)
    assert schema.target == info.target
    # The documented set is the one in the data, and nothing else in the inferred schema is declared public.
    assert set(train[column].dropna().unique()) == set(categories)
    assert [c.name for c in schema if c.public] == [column]
    assert [c.name for c in schema if c.name != column] == [c.name for c in Schema.infer(train) if c.name != column]
