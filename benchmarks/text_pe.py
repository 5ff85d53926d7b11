"""Private Evolution (Aug-PE) on the bundled trump_tweets corpus, against the model prompted without private data.

Private texts: ``--private`` tweets drawn (seeded) from the train split whose source is one of three apps, which are
declared public labels. PE runs ``--iterations`` noisy vote histograms at ``--epsilon`` (delta = 1/(N log N) as
Aug-PE, at most privsynth's 1e-5) with a population of ``--population`` texts and returns ``--population`` synthetic
tweets. The
non-private baseline is PE's first population: the same label-conditioned prompts, before any private vote.

Scores against ``--holdout`` tweets of the holdout split, in all-MiniLM-L6-v2 embedding space:
- Frechet distance between Gaussian fits of the embeddings (as FID, lower is better);
- precision and recall of Kynkaenniemi et al. (NeurIPS 2019), k = 3: the share of synthetic texts inside the
  holdout's k-NN balls, and of holdout texts inside the synthetic k-NN balls;
- mean cosine similarity of each holdout text to its nearest synthetic text;
- utility: accuracy of a logistic regression predicting the app from the embedding, trained on the synthetic
  texts and tested on the holdout (TSTR), next to training on the private texts themselves.
The noise floor is the private sample itself (real texts) scored as if synthetic, at the same size.

    .venv/bin/python benchmarks/text_pe.py                     # 300 private, T=5, population 300, epsilon 4
    .venv/bin/python benchmarks/text_pe.py --population 120 --output /tmp/pe.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import linalg
from sklearn.linear_model import LogisticRegression

from privsynth.bench.run_info import with_run
from privsynth.data.datasets import load_dataset
from privsynth.progress import ProgressEvent, listen
from privsynth.synth.dp import MAX_DELTA
from privsynth.text.llm import Embedder, local_generator
from privsynth.text.private_evolution import PrivateEvolution

RESULTS = Path(__file__).resolve().parent / "results" / "text_pe.json"
LABELS = ["Twitter for Android", "Twitter for iPhone", "Twitter Web Client"]
PROMPT = "Write a short tweet by Donald Trump. Reply with the tweet only."
LABEL_PROMPT = "{prompt} It was posted from {label}."


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``a`` and ``b``."""
    mean = a.mean(0) - b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    return float(mean @ mean + np.trace(cov_a + cov_b - 2 * np.real(root)))


def _radii(x: np.ndarray, k: int) -> np.ndarray:
    distances = np.sqrt(np.clip(2 - 2 * x @ x.T, 0, None))
    return np.sort(distances, axis=1)[:, k]


def precision_recall(synthetic: np.ndarray, real: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaenniemi et al. 2019) on unit vectors."""
    cross = np.sqrt(np.clip(2 - 2 * synthetic @ real.T, 0, None))
    precision = float((cross <= _radii(real, k)[None, :]).any(axis=1).mean())
    recall = float((_radii(synthetic, k)[None, :] >= cross.T).any(axis=1).mean())
    return precision, recall


def tstr(train_x: np.ndarray, train_y: list[str], test_x: np.ndarray, test_y: list[str]) -> float | None:
    if len(set(train_y)) < 2:
        return None
    model = LogisticRegression(max_iter=2000, C=1.0).fit(train_x, train_y)
    return float((model.predict(test_x) == np.array(test_y)).mean())


def score(
    name: str, frame: pd.DataFrame, embedder: Embedder, holdout: pd.DataFrame, holdout_x: np.ndarray
) -> dict[str, Any]:
    texts = [text if text.strip() else "." for text in frame["text"]]
    x = embedder.embed(texts)
    precision, recall = precision_recall(x, holdout_x)
    return {
        "set": name,
        "n": len(frame),
        "frechet_distance": round(frechet(x, holdout_x), 4),
        "precision_k3": round(precision, 3),
        "recall_k3": round(recall, 3),
        "holdout_nn_similarity": round(float((holdout_x @ x.T).max(axis=1).mean()), 4),
        "tstr_accuracy": tstr(x, frame["label"].tolist(), holdout_x, holdout["source"].tolist()),
        "mean_chars": round(float(frame["text"].str.len().mean()), 1),
        "empty_share": round(float((frame["text"].str.strip() == "").mean()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--private", type=int, default=300)
    parser.add_argument("--holdout", type=int, default=300)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--population", type=int, default=300)
    parser.add_argument("--epsilon", type=float, default=4.0)
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    train = load_dataset("trump_tweets", "train")
    train = train[train["source"].isin(LABELS)].reset_index(drop=True)
    private = train.iloc[rng.choice(len(train), args.private, replace=False)].reset_index(drop=True)
    holdout = load_dataset("trump_tweets", "holdout")
    holdout = holdout[holdout["source"].isin(LABELS)].reset_index(drop=True)
    holdout = holdout.iloc[rng.choice(len(holdout), args.holdout, replace=False)].reset_index(drop=True)
    delta = min(1 / (args.private * math.log(args.private)), MAX_DELTA)  # privsynth accepts delta <= 1e-5

    embedder = Embedder()
    holdout_x = embedder.embed(holdout["text"].tolist())
    generator = local_generator()
    model = PrivateEvolution(
        generator,
        embedder,
        iterations=args.iterations,
        population=args.population,
        prompt=PROMPT,
        label_prompt=LABEL_PROMPT,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    start = time.perf_counter()

    def show(event: ProgressEvent) -> None:
        print(f"{time.perf_counter() - start:7.0f} s  {event.completed}/{event.total}  {event.detail}", flush=True)

    with listen(show):
        model.fit(
            private["text"], private["source"], public_labels=LABELS, epsilon=args.epsilon, delta=delta, ledger=False
        )
    fit_seconds = time.perf_counter() - start
    synthetic = model.sample(args.population)
    history = model.history_
    baseline = history[history["iteration"] == 1][["text", "label"]].reset_index(drop=True)
    floor = private.rename(columns={"source": "label"}).iloc[: args.population][["text", "label"]]

    rows = [
        score(f"private evolution (epsilon {args.epsilon:g})", synthetic, embedder, holdout, holdout_x),
        score("baseline: model prompted without private data", baseline, embedder, holdout, holdout_x),
        score("floor: real private texts scored as synthetic", floor, embedder, holdout, holdout_x),
    ]
    per_iteration = [
        score(f"population voted at iteration {t}", group, embedder, holdout, holdout_x)
        for t, group in history.groupby("iteration")
    ]
    result = {
        "benchmark": "Private Evolution (Aug-PE) on dslabs trump_tweets",
        "generator": type(generator).__name__,
        "settings": {
            "private_texts": args.private,
            "holdout_texts": args.holdout,
            "iterations": args.iterations,
            "population": args.population,
            "epsilon": args.epsilon,
            "delta": delta,
            "max_tokens": args.max_tokens,
            "labels": LABELS,
            "prompt": PROMPT,
            "seed": args.seed,
        },
        "privacy": {
            "sigma": model.sigma_,
            "epsilon_zcdp_ledger": model.epsilon_,
            "epsilon_gdp_same_noise": model.epsilon_gdp_,
            "charges": len(model.charges_),
        },
        "fit_seconds": round(fit_seconds, 1),
        "generations": int(args.population + (args.iterations - 1) * (args.population // 2)),
        "results": rows,
        "per_iteration": per_iteration,
        "examples": synthetic.head(8).to_dict(orient="records"),
        "baseline_examples": baseline.head(4).to_dict(orient="records"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(with_run(result), indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: result[k] for k in ("fit_seconds", "privacy", "results")}, indent=2))


if __name__ == "__main__":
    main()
