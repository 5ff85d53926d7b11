"""Fit one peer synthesizer and sample from it, inside the peer's own virtual environment.

This file is run as a script by a peer environment's Python (``python _peer_runner.py FOLDER``); it must not
import privsynth, whose dependencies that environment lacks. ``FOLDER`` holds ``spec.json`` and ``train.parquet``
written by :func:`privsynth.bench.peers.run_peer`; the script writes ``synthetic.parquet`` and ``result.json``
(fit and sample seconds, library versions, the settings used) into the same folder.

``spec.json``: ``library`` (sdv, smartnoise, opendp, dpmm, mostlyai), ``model`` (copula, ctgan, tvae, mst, aim,
privbayes, argn, argn-dp), ``rows``,
``seed``, ``epsilon``, ``delta``, ``rho`` (the zCDP equivalent, for OpenDP), ``options`` (keyword arguments for
the peer's constructor) and ``columns``: a list of ``{name, kind, nullable, categories, bounds}`` with kind
``categorical`` (values are strings, missing as null) or ``integer`` / ``float`` (numbers, missing as NaN).
Categories and bounds are handed to smartnoise-synth and OpenDP as public knowledge: they spend nothing on them.
dpmm and MOSTLY AI's engine run at their defaults and read what they need from the rows: ``details`` says what.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

NUMERIC_BINS = 16  # bins per numeric column for the marginal (MST/AIM) peers, uniform within the bounds


def main(folder: Path) -> None:
    spec = json.loads((folder / "spec.json").read_text())
    train = pd.read_parquet(folder / "train.parquet")
    _seed_everything(int(spec["seed"]))
    runners = {
        "sdv": _run_sdv,
        "smartnoise": _run_smartnoise,
        "opendp": _run_opendp,
        "dpmm": _run_dpmm,
        "mostlyai": _run_mostlyai,
    }
    synthetic, fit_seconds, sample_seconds, details = runners[spec["library"]](spec, train)
    synthetic = pd.DataFrame(synthetic)[[c["name"] for c in spec["columns"]]]
    synthetic.to_parquet(folder / "synthetic.parquet", index=False)
    result = {"fit_seconds": fit_seconds, "sample_seconds": sample_seconds, "details": details}
    (folder / "result.json").write_text(json.dumps(result))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (the peers draw from numpy's global state)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# ---- SDV ------------------------------------------------------------------------------------------------------


def _run_sdv(spec: dict[str, Any], train: pd.DataFrame) -> tuple[pd.DataFrame, float, float, dict[str, Any]]:
    from sdv.metadata import Metadata  # type: ignore[import-not-found]
    from sdv.single_table import (  # type: ignore[import-not-found]
        CTGANSynthesizer,
        GaussianCopulaSynthesizer,
        TVAESynthesizer,
    )

    columns: dict[str, dict[str, str]] = {}
    for column in spec["columns"]:
        if column["kind"] == "categorical":
            columns[column["name"]] = {"sdtype": "categorical"}
        else:
            representation = "Int64" if column["kind"] == "integer" else "Float"
            columns[column["name"]] = {"sdtype": "numerical", "computer_representation": representation}
    metadata = Metadata.load_from_dict({"METADATA_SPEC_VERSION": "V1", "tables": {"table": {"columns": columns}}})
    classes = {"copula": GaussianCopulaSynthesizer, "ctgan": CTGANSynthesizer, "tvae": TVAESynthesizer}
    options = dict(spec.get("options") or {})
    if spec["model"] in ("ctgan", "tvae"):
        options.setdefault("enable_gpu", False)
    synthesizer = classes[spec["model"]](metadata, **options)
    start = time.perf_counter()
    synthesizer.fit({"table": train})  # SDV 2 takes a dict of tables, even for one table
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    synthetic = synthesizer.sample(int(spec["rows"]))
    if isinstance(synthetic, dict):
        synthetic = next(iter(synthetic.values()))
    sample_seconds = time.perf_counter() - start
    details = {"library": "sdv", "version": _version("sdv"), "model": type(synthesizer).__name__, "options": options}
    return synthetic, fit_seconds, sample_seconds, details


# ---- smartnoise-synth -----------------------------------------------------------------------------------------

_MISSING = "<missing>"  # the category a missing categorical value becomes for smartnoise's label encoder
_RHO_SHRINKS = (0.0, 1e-9, 1e-7, 1e-5)  # relative cuts of rho tried when OpenDP refuses its own budget split


def _run_smartnoise(spec: dict[str, Any], train: pd.DataFrame) -> tuple[pd.DataFrame, float, float, dict[str, Any]]:
    from snsynth import Synthesizer  # type: ignore[import-not-found]
    from snsynth.transform import BinTransformer, LabelTransformer  # type: ignore[import-not-found]
    from snsynth.transform.table import TableTransformer  # type: ignore[import-not-found]

    frame = train.copy()
    transformers = []
    bins_used: dict[str, int] = {}
    for column in spec["columns"]:
        name = column["name"]
        if column["kind"] == "categorical":
            frame[name] = frame[name].astype(object).where(frame[name].notna(), _MISSING)
            transformers.append(LabelTransformer(nullable=False))
        else:
            low, high = (float(b) for b in column["bounds"])
            bins = _bin_count(column)
            bins_used[name] = bins
            upper = high if high > low else low + 1.0
            transformers.append(BinTransformer(bins=bins, lower=low, upper=upper, nullable=bool(column["nullable"])))
    # Categories are learned by the label encoders from the rows: the same sets the schema lists, given free.
    transformer = TableTransformer(transformers)
    options = dict(spec.get("options") or {})
    synthesizer = Synthesizer.create(spec["model"], epsilon=float(spec["epsilon"]), delta=spec["delta"], **options)
    start = time.perf_counter()
    synthesizer.fit(frame, transformer=transformer, preprocessor_eps=0.0)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    sampled = synthesizer.sample(int(spec["rows"]))
    sample_seconds = time.perf_counter() - start
    names = [c["name"] for c in spec["columns"]]
    synthetic = sampled if isinstance(sampled, pd.DataFrame) else pd.DataFrame(list(sampled), columns=names)
    for column in spec["columns"]:
        if column["kind"] == "categorical":
            values = synthetic[column["name"]].astype(object)
            synthetic[column["name"]] = values.where(values != _MISSING, None)
    details = {
        "library": "smartnoise-synth",
        "version": _version("smartnoise-synth"),
        "model": type(synthesizer).__name__,
        "options": options,
        "numeric_bins": bins_used,
        "preprocessor_epsilon": 0.0,
    }
    return synthetic, fit_seconds, sample_seconds, details


def _bin_count(column: dict[str, Any]) -> int:
    """Uniform bins within the bounds; an integer column with a short range gets one bin per value."""
    low, high = (float(b) for b in column["bounds"])
    if column["kind"] == "integer" and high - low + 1 <= NUMERIC_BINS:
        return max(1, int(high - low) + 1)
    return NUMERIC_BINS


# ---- OpenDP dp.mbi --------------------------------------------------------------------------------------------

_SPLIT_MARGIN = 1e-9  # relative share of each MST selection's budget left unspent (see _leave_margin_in_mst_split)


def _leave_margin_in_mst_split() -> None:
    """Work around OpenDP 0.16's MST refusing its own budget split.

    ``_make_mst_select`` gives each of its d - 1 selections ``prior(d_out / (d - 1))`` (one float below the
    exact share), but the composition adds the d - 1 shares rounding up at every addition, so with 13 or more
    selections the sum regularly exceeds ``d_out`` by a few floats ("insufficient budget for query:
    0.0012177863399917385 > 0.0012177863399917377"), whatever rho is. ``prior`` as seen by the MST module is
    replaced by one that also leaves ``_SPLIT_MARGIN`` of the value unspent: MST spends at most that share
    less than it may (1e-9 of its budget), never more.
    """
    from opendp.extras.mbi import _mst

    namespace = vars(_mst)
    exact_prior = namespace["prior"]
    if getattr(exact_prior, "_privsynth_margin", False):
        return

    def prior_with_margin(x: float) -> float:
        return float(exact_prior(x * (1 - _SPLIT_MARGIN)))

    prior_with_margin._privsynth_margin = True  # type: ignore[attr-defined]
    namespace["prior"] = prior_with_margin


def _run_opendp(spec: dict[str, Any], train: pd.DataFrame) -> tuple[pd.DataFrame, float, float, dict[str, Any]]:
    import opendp.prelude as dp
    import polars as pl  # type: ignore[import-not-found]

    dp.enable_features("contrib")
    _leave_margin_in_mst_split()
    keys: dict[str, list[Any]] = {}
    cuts: dict[str, list[float]] = {}
    frame = pl.from_pandas(train)
    for column in spec["columns"]:
        name = column["name"]
        if column["kind"] == "categorical":
            keys[name] = [str(c) for c in column["categories"]]
            if column["nullable"]:
                frame = frame.with_columns(pl.col(name).fill_null(_MISSING))
                keys[name].append(_MISSING)
        else:
            # Cuts at the bounds too: OpenDP samples a value uniformly within its (left-open) bin, but the outer bins
            # (-inf, first cut] and (last cut, inf) within one unit of their cut; only values equal to the lower
            # bound land there, and come back clipped to it.
            low, high = (float(b) for b in column["bounds"])
            edges = np.linspace(low, high if high > low else low + 1.0, _bin_count(column) + 1)
            cuts[name] = [float(e) for e in edges]
            values = pl.col(name).cast(pl.Float64).fill_nan(None)
            if column["nullable"]:
                # Missingness as a column of its own (the modelled value of a missing cell is the lower bound).
                frame = frame.with_columns(values.is_null().cast(pl.Utf8).alias(name + _MISSING))
                keys[name + _MISSING] = ["false", "true"]
            frame = frame.with_columns(values.fill_null(low).clip(low, high))
    budget = float(spec["rho"])
    start = time.perf_counter()
    # OpenDP 0.16 can refuse its own split of rho by one ulp ("insufficient budget for query: 0.0012177985179769172
    # > 0.001217798517976917"); whether it does depends on rho alone, not on the data, so a slightly smaller rho
    # is tried. Each failed attempt has already measured the one-way marginals: the attempts are recorded.
    attempts: list[float] = []
    for shrink in _RHO_SHRINKS:
        rho = budget * (1 - shrink)
        attempts.append(rho)
        algorithm = {"mst": dp.mbi.MST, "aim": dp.mbi.AIM}[spec["model"]]()  # type: ignore[attr-defined]
        context = dp.Context.compositor(
            data=frame.lazy(), privacy_unit=dp.unit_of(contributions=1), privacy_loss=dp.loss_of(rho=rho)
        )
        try:
            table = context.query(rho=rho).contingency_table(keys=keys, cuts=cuts, algorithm=algorithm).release()
            break
        except dp.OpenDPException as exc:
            if "insufficient budget" not in str(exc) or shrink == _RHO_SHRINKS[-1]:
                raise
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    sampled = table.synthesize(int(spec["rows"])).to_pandas()
    sample_seconds = time.perf_counter() - start
    for column in spec["columns"]:
        name = column["name"]
        if column["kind"] == "categorical":
            values = sampled[name].astype(object)
            sampled[name] = values.where(values != _MISSING, None)
        elif column["nullable"]:
            sampled[name] = sampled[name].astype(float).where(sampled[name + _MISSING] != "true")
    details = {
        "library": "opendp",
        "version": _version("opendp"),
        "model": spec["model"].upper(),
        "rho": rho,
        "rho_attempts": attempts,
        "split_margin": _SPLIT_MARGIN if spec["model"] == "mst" else 0.0,
        "numeric_bins": {name: len(edges) - 1 for name, edges in cuts.items()},
    }
    return sampled, fit_seconds, sample_seconds, details


# ---- dpmm -----------------------------------------------------------------------------------------------------

_DPMM_PREPROCESSING_SHARE = 0.1  # of the total epsilon, for dpmm's PrivTree binning (its default 0.1 at epsilon 1)


def _run_dpmm(spec: dict[str, Any], train: pd.DataFrame) -> tuple[pd.DataFrame, float, float, dict[str, Any]]:
    """dpmm's pipeline at its defaults, but with the total epsilon split as a user of a fixed budget would.

    dpmm charges ``proc_epsilon`` (PrivTree bounds and bins of numeric columns) on top of the model's ``epsilon``;
    here the two add up to the spec's epsilon. It is given no domain: it reads categories, which columns have
    missing values and which are constant from the rows (it warns "PrivacyLeakage" for the categories).
    """
    from dpmm.pipelines import AIMPipeline, MSTPipeline, PrivBayesPipeline  # type: ignore[import-not-found]

    total = float(spec["epsilon"])
    options = dict(spec.get("options") or {})
    proc_epsilon = float(options.pop("proc_epsilon", _DPMM_PREPROCESSING_SHARE * total))
    options.setdefault("n_jobs", int(os.environ.get("OMP_NUM_THREADS", "1")))
    classes = {"privbayes": PrivBayesPipeline, "mst": MSTPipeline, "aim": AIMPipeline}
    pipeline = classes[spec["model"]](
        epsilon=total - proc_epsilon, delta=float(spec["delta"]), proc_epsilon=proc_epsilon, **options
    )
    seed = int(spec["seed"])
    start = time.perf_counter()
    pipeline.fit(train, random_state=seed)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    synthetic = pipeline.generate(n_records=int(spec["rows"]), random_state=seed + 1)
    sample_seconds = time.perf_counter() - start
    for column in spec["columns"]:
        if column["kind"] == "categorical":
            values = synthetic[column["name"]].astype(object)
            synthetic[column["name"]] = values.where(values.notna(), None)
    proc = pipeline.proc
    details = {
        "library": "dpmm",
        "version": _version("dpmm"),
        "model": type(pipeline.gen).__name__,
        "options": options,
        "epsilon_model": total - proc_epsilon,
        "epsilon_preprocessing": proc_epsilon,
        "preprocessing_spent": {k: v for k, v in proc.spent_epsilon.items() if v is not None},
        "numeric_bins": {k: int(v) for k, v in proc.n_bins.items()},
        "domains_given_free": False,
        "domains_from_data": ["categories", "columns with missing values", "constant columns"],
    }
    return synthetic, fit_seconds, sample_seconds, details


# ---- MOSTLY AI engine (TabularARGN) -----------------------------------------------------------------------------

_MOSTLYAI_VALUE_PROTECTION_SHARE = 0.1  # of the total epsilon, for the DP value ranges (its default is 1.0 absolute)


def _run_mostlyai(spec: dict[str, Any], train: pd.DataFrame) -> tuple[pd.DataFrame, float, float, dict[str, Any]]:
    """TabularARGN at its defaults on the CPU, given the schema's column kinds.

    In DP mode (``argn-dp``) training stops when DP-SGD's epsilon plus the epsilon spent on value ranges reaches
    the spec's epsilon; the value ranges get a tenth of it (its default, 1.0, would leave nothing to train with
    at epsilon 1). Its split of the rows into training and validation, and the checkpoint chosen by validation
    loss, are not part of its accounting. Without DP it reads value ranges and categories from the rows.
    """
    from mostlyai.engine import TabularARGN  # type: ignore[import-not-found]
    from mostlyai.engine.domain import DifferentialPrivacyConfig  # type: ignore[import-not-found]

    options = dict(spec.get("options") or {})
    differentially_private = spec["model"] == "argn-dp"
    if differentially_private:
        total = float(spec["epsilon"])
        privacy = {
            "max_epsilon": total,
            "delta": float(spec["delta"]),
            "value_protection_epsilon": _MOSTLYAI_VALUE_PROTECTION_SHARE * total,
            **options.pop("differential_privacy", {}),
        }
        options["differential_privacy"] = privacy
    encodings = {
        c["name"]: "TABULAR_CATEGORICAL" if c["kind"] == "categorical" else "TABULAR_NUMERIC_AUTO"
        for c in spec["columns"]
    }
    options.setdefault("device", "cpu")
    with tempfile.TemporaryDirectory(prefix="mostlyai-") as workspace:
        arguments = dict(options)
        if differentially_private:
            arguments["differential_privacy"] = DifferentialPrivacyConfig(**options["differential_privacy"])
        model = TabularARGN(
            tgt_encoding_types=encodings, workspace_dir=workspace, random_state=int(spec["seed"]), **arguments
        )
        start = time.perf_counter()
        model.fit(train)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        synthetic = model.sample(n_samples=int(spec["rows"]))
        sample_seconds = time.perf_counter() - start
        training = _mostlyai_training_log(Path(workspace))
    for column in spec["columns"]:
        values = synthetic[column["name"]]
        if column["kind"] == "categorical":
            values = values.astype(object)
            synthetic[column["name"]] = values.where(values.notna(), None)
        else:
            synthetic[column["name"]] = pd.to_numeric(values, errors="coerce").astype(float)
    details = {
        "library": "mostlyai-engine",
        "version": _version("mostlyai-engine"),
        "model": "TabularARGN",
        "options": {k: v for k, v in options.items() if k != "device"},
        **training,
        "domains_given_free": False,
        "domains_from_data": not differentially_private,
    }
    if differentially_private:
        details["outside_accounting"] = "the training/validation split and the checkpoint chosen by validation loss"
    return synthetic, fit_seconds, sample_seconds, details


def _mostlyai_training_log(workspace: Path) -> dict[str, Any]:
    """Epochs trained, the epoch of the kept checkpoint and its epsilon, from the engine's progress messages."""
    paths = list(workspace.rglob("progress-messages.csv"))
    if not paths:
        return {}
    log = pd.read_csv(paths[0])
    if log.empty or "epoch" not in log.columns:
        return {}
    kept = log[log["is_checkpoint"] > 0] if "is_checkpoint" in log.columns else log.iloc[0:0]
    last = kept.iloc[-1] if not kept.empty else log.iloc[-1]
    epsilon = last.get("dp_eps")
    return {
        "epochs": float(log["epoch"].max()),
        "checkpoint_epoch": float(last["epoch"]),
        "epsilon_spent": None if epsilon is None or pd.isna(epsilon) else float(epsilon),
    }


if __name__ == "__main__":
    main(Path(sys.argv[1]))
