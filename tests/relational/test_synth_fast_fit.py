"""The cheaper fit of related tables: the child model learns only the child's columns given its context (parent
columns, position, previous child), small tables train on one torch thread, and deep's own Adam gives exactly the
weights ``torch.optim.Adam`` gives (without importing ``torch._dynamo``)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from privsynth.errors import ParameterError
from privsynth.relational import RelatedData, RelatedSynthesizer, load_related
from privsynth.synth import _deep_net
from privsynth.synth.deep import DeepSynthesizer


@pytest.fixture(scope="module")
def pbc() -> RelatedData:
    return load_related("pbc", "train")


def test_the_visit_model_predicts_only_the_visit_columns_given_their_context(pbc: RelatedData) -> None:
    model = RelatedSynthesizer("deep", epochs=2, seed=0).fit(pbc)
    visits, patients = model.models_["pbcseq"], model.models_["pbc"]
    columns = model.model_columns_["pbcseq"]
    context = [c for c in columns if c.startswith(("__parent.", "__prev.")) or c == "__pos"]
    assert visits.context_ == context and len(context) == 39  # 26 patient columns, the position, 12 previous values
    assert "__gap" not in context and "bili" not in context
    assert patients.context_ == []  # the patients are drawn on their own
    assert visits.threads == patients.threads == 1  # 1,624 and 334 rows: one torch thread
    assert (visits.epochs, visits.patience, patients.patience) == (2, 2, 3)  # children: no early stopping
    with pytest.raises(ParameterError, match=r"'__parent\.time' is a context column of this model"):
        visits.sample(5, seed=0)
    tables = model.sample(seed=0)
    assert len(tables["pbcseq"]) > 1000 and tables["pbcseq"]["bili"].notna().all()


def test_a_context_column_must_be_a_column_and_one_must_be_left_to_generate(pbc: RelatedData) -> None:
    frame = pbc.tables["pbc"][["sex", "age", "bili"]]
    with pytest.raises(ParameterError, match="context column 'chol' is not in the data"):
        DeepSynthesizer(epochs=1, context=["chol"]).fit(frame)
    with pytest.raises(ParameterError, match="every column is a context column"):
        DeepSynthesizer(epochs=1, context=["sex", "age", "bili"]).fit(frame)
    with pytest.raises(ParameterError, match="threads must be a positive whole number"):
        DeepSynthesizer(epochs=1, threads=0).fit(frame)
    model = DeepSynthesizer(epochs=2, context=["sex"], threads=1).fit(frame)
    drawn = model.sample_given(pd.DataFrame({"sex": ["f", "m"]}), seed=0)
    assert drawn["sex"].tolist() == ["f", "m"] and drawn["age"].notna().all()


def test_deep_adam_gives_the_weights_torch_adam_gives(pbc: RelatedData, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = pbc.tables["pbc"].drop(columns=["id"])
    ours = DeepSynthesizer(epochs=3, batch_size=64, seed=3).fit(frame)
    monkeypatch.setattr(_deep_net, "Adam", lambda params, lr: torch.optim.Adam(params, lr=lr))
    theirs = DeepSynthesizer(epochs=3, batch_size=64, seed=3).fit(frame)
    mine, reference = ours.net_.state_dict(), theirs.net_.state_dict()
    assert all(torch.equal(mine[k], reference[k]) for k in mine)
    assert ours.order_ == theirs.order_
