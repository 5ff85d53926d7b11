"""The Datasheets-for-Datasets questions that apply to a synthetic release, answered from its data card.

Gebru et al. ("Datasheets for Datasets", CACM 2021) ask a creator to answer questions on motivation,
composition, collection process, uses and limitations. For a synthetic release most answers follow from what
the card already records (generator, source fingerprint, schema, privacy, generation, evaluation); the rest
(who made it, for whom, under which review) only a person knows. Users answer any question by its id
(``{"motivation.creators": "Data team, St. Elsewhere"}``); their answers replace the generated text and are
marked as theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from privsynth.errors import ParameterError

__all__ = ["QUESTIONS", "SECTIONS", "answer_datasheet"]

SECTIONS: Final = ("motivation", "composition", "collection_process", "uses", "limitations")

# id -> question. The id's prefix is the section.
QUESTIONS: Final[dict[str, str]] = {
    "motivation.purpose": "For what purpose was the dataset created?",
    "motivation.creators": "Who created the dataset, and on behalf of which entity?",
    "motivation.funding": "Who funded the creation of the dataset?",
    "composition.instances": "What do the instances represent?",
    "composition.count": "How many instances are there?",
    "composition.fields": "What data does each instance consist of?",
    "composition.missing": "Is any information missing from individual instances?",
    "composition.confidential": "Does the dataset contain data that might be considered confidential?",
    "collection_process.how": "How was the data associated with each instance acquired?",
    "collection_process.lineage": "Was the data derived from other synthetic data?",
    "collection_process.timeframe": "Over what timeframe was the data collected?",
    "collection_process.ethics": "Were any ethical review processes conducted?",
    "uses.recommended": "What tasks could the dataset be used for?",
    "uses.not_recommended": "Are there tasks for which the dataset should not be used?",
    "limitations.fidelity": "How closely does the dataset reproduce the data it stands for?",
    "limitations.privacy": "What does the privacy protection cover, and what not?",
    "limitations.retention": "Can the release be regenerated or extended?",
}

_NOT_RECORDED = "Not recorded (answer it with datasheet={'%s': ...} or --datasheet %s=...)."

# The evaluation metrics quoted in the fidelity answer, when a report was attached.
_QUOTED_METRICS: Final = (
    ("fidelity.tvd_1way", "1-way TVD"),
    ("fidelity.tvd_2way", "2-way TVD"),
    ("fidelity.detection_auc", "detection AUC"),
    ("diversity.rare_category_recall", "rare-category recall"),
    ("utility.tstr", "TSTR"),
    ("privacy.dcr_train_share", "DCR train share"),
)


def answer_datasheet(
    card: Mapping[str, Any], answers: Mapping[str, str] | None = None
) -> dict[str, list[dict[str, str]]]:
    """Every question of :data:`QUESTIONS`, by section, with the user's answer or one generated from ``card``."""
    given = check_answers(answers)
    generated = _generated(card)
    out: dict[str, list[dict[str, str]]] = {section: [] for section in SECTIONS}
    for key, question in QUESTIONS.items():
        section = key.split(".", 1)[0]
        if key in given:
            entry = {"id": key, "question": question, "answer": given[key], "provided_by": "user"}
        else:
            entry = {"id": key, "question": question, "answer": generated[key], "provided_by": "privsynth"}
        out[section].append(entry)
    return out


def check_answers(answers: Mapping[str, str] | None) -> dict[str, str]:
    """The user's answers as plain strings; an unknown question id is a :class:`ParameterError` listing them."""
    if not answers:
        return {}
    unknown = [key for key in answers if key not in QUESTIONS]
    if unknown:
        raise ParameterError(f"unknown datasheet question(s) {unknown}; the questions are: {', '.join(QUESTIONS)}")
    blank = [key for key, value in answers.items() if not str(value).strip()]
    if blank:
        raise ParameterError(f"datasheet answer(s) {blank} are empty; leave a question out to have it generated")
    return {key: str(value).strip() for key, value in answers.items()}


def _generated(card: Mapping[str, Any]) -> dict[str, str]:
    mix = card.get("mix")
    facts = _mix_answers(card, mix) if mix else _synthetic_answers(card)
    for key in ("motivation.creators", "motivation.funding", "collection_process.ethics"):
        facts[key] = _NOT_RECORDED % (key, key)
    facts["collection_process.timeframe"] = (
        f"The rows were generated at {card['created']} (UTC). The period the source data covers is not recorded."
    )
    facts["collection_process.lineage"] = _lineage_answer(card)
    facts["limitations.retention"] = _retention_answer(card.get("retention") or {})
    return facts


def _synthetic_answers(card: Mapping[str, Any]) -> dict[str, str]:
    generator, source, privacy = card["generator"], card["source"], card["privacy"]
    method = generator["method"]
    dp = bool(privacy.get("differentially_private"))
    excluded = [e["column"] for e in card.get("excluded_columns", [])]
    fields = _fields(card)
    nullable = [c["name"] for c in card["schema"].get("columns", []) if c.get("nullable") and c.get("synthesize")]
    conditions = generator.get("conditions")
    return {
        "motivation.purpose": (
            f"A synthetic stand-in for '{source['name']}': rows with the same columns and similar statistics, made "
            "so that the data can be explored, shared and used to build software without handing out the "
            "source's records."
        ),
        "composition.instances": (
            f"Each row was sampled from a '{method}' model of the source; no row is a copy of a source record by "
            "construction. "
            + (
                "The model is differentially private, which bounds what any row can reveal about one person."
                if dp
                else "The model is not differentially private: it can reproduce rare source records closely."
            )
        ),
        "composition.count": f"{card['rows']:,} rows x {len(card['columns'])} columns.",
        "composition.fields": fields,
        "composition.missing": (
            (f"Columns left out of synthesis: {', '.join(excluded)}. " if excluded else "No column was left out. ")
            + (
                f"Columns that may be empty, as in the source: {', '.join(nullable)}."
                if nullable
                else "No synthesized column holds missing values in the schema."
            )
        ),
        "composition.confidential": (
            (
                f"Identifier and personal-data columns were left out ({', '.join(excluded)}). "
                if excluded
                else "No column was flagged as an identifier or personal data. "
            )
            + (
                f"The release is differentially private at epsilon={privacy.get('epsilon')}, "
                f"delta={privacy.get('delta')}."
                if dp
                else "Without differential privacy there is no formal bound on what the rows reveal; check the "
                "evaluation report's privacy attacks before sharing."
            )
        ),
        "collection_process.how": (
            f"Sampled from a '{method}' synthesizer (privsynth {generator.get('privsynth_version')}) fitted on "
            f"'{source['name']}'"
            + (f" (SHA-256 {str(source['fingerprint_sha256'])[:16]}...)" if source.get("fingerprint_sha256") else "")
            + ", seed "
            f"{generator.get('seed')}"
            + (f", every row conditioned on {conditions}" if conditions else "")
            + ". The source's rows are not part of this release."
        ),
        "uses.recommended": (
            "Exploring the data's structure, prototyping and testing pipelines, teaching, and analyses whose "
            "accuracy has been checked against the evaluation report"
            + (" (see the metrics on this card)." if card.get("metrics") else " (none is attached yet).")
        ),
        "uses.not_recommended": (
            "Decisions about real individuals; conclusions about small subgroups, rare categories or extreme values, "
            "which synthesizers reproduce least well; training further generative models on these rows alone "
            "(model collapse): mix them with real data under a synthetic-share cap (privsynth mix)."
        ),
        "limitations.fidelity": _fidelity_answer(card),
        "limitations.privacy": (
            (
                f"Differential privacy at epsilon={privacy.get('epsilon')}, delta={privacy.get('delta')} covers "
                "every row of the source, against any attacker; the ledger entries on this card show each spend. "
                "It does not hide population-level facts, which is what the data is for."
            )
            if dp
            else "No formal guarantee. Identifier and personal-data columns were left out, and only the schema's "
            "public domains appear on this card, but a non-private model can leak rare records."
        ),
    }


def _mix_answers(card: Mapping[str, Any], mix: Mapping[str, Any]) -> dict[str, str]:
    share, cap = mix["synthetic_share"], mix["max_synthetic_share"]
    inputs = mix.get("synthetic_inputs", [])
    described = "; ".join(f"{i['name']}: {i['rows_used']:,} of {i['rows']:,} rows ({i['label']})" for i in inputs)
    return {
        "motivation.purpose": (
            f"A training set of real rows topped up with synthetic rows, the synthetic share capped at {cap:.0%} so "
            "that models trained on it keep learning from real data."
        ),
        "composition.instances": (
            "Each row is either a real record or a synthetic one; the `_provenance` column says which (`real` or "
            "`synthetic-gen<k>`, k being the synthetic rows' generation)."
        ),
        "composition.count": (
            f"{card['rows']:,} rows: {mix['real_rows']:,} real and {mix['synthetic_rows']:,} synthetic "
            f"(share {share:.4f}, cap {cap})."
        ),
        "composition.fields": _fields(card),
        "composition.missing": (
            f"Columns of the real data that a synthetic input lacks were left out: {', '.join(mix['dropped_columns'])}."
            if mix.get("dropped_columns")
            else "Every column of the real data is present."
        ),
        "composition.confidential": (
            "Yes: the real rows are the real data, unchanged. Share this set as you would share the real data."
        ),
        "collection_process.how": (
            f"All rows of '{card['source']['name']}' were kept; synthetic rows were drawn at random without "
            f"replacement (seed {card['generator'].get('seed')}) from: {described or 'no synthetic input'}."
        ),
        "uses.recommended": "Training and validating models where real data alone is scarce.",
        "uses.not_recommended": (
            "Publishing it (it holds real rows); evaluating models on its synthetic rows; mixing it again with "
            "more synthetic data beyond the cap."
        ),
        "limitations.fidelity": (
            "Real rows are exact; synthetic rows carry the fidelity of the releases they came from (see their cards)."
        ),
        "limitations.privacy": "None: the real rows are included as they are.",
    }


def _fields(card: Mapping[str, Any]) -> str:
    kinds = {c["name"]: c["kind"] for c in card["schema"].get("columns", [])}
    return "; ".join(f"{name} ({kinds[name]})" if name in kinds else name for name in card["columns"]) + "."


def _lineage_answer(card: Mapping[str, Any]) -> str:
    generation = int(card.get("generation", 1))
    parents = card.get("parents") or []
    if card.get("mix"):
        if generation == 0:
            return "No: the set holds real rows only."
        return f"It holds synthetic rows up to generation {generation}."
    if generation <= 1:
        return "No: the model was fitted on data not known to be synthetic (generation 1)."
    found = ", ".join(f"{p.get('release_id') or 'unknown release'} (found by {p['found_by']})" for p in parents)
    return (
        f"Yes: generation {generation}. The model was fitted on an earlier synthetic release ({found}). Models "
        "trained on synthetic output lose tails and rare categories generation after generation."
    )


def _fidelity_answer(card: Mapping[str, Any]) -> str:
    summary = (card.get("metrics") or {}).get("summary") or {}
    quoted = [f"{label} {summary[key]:.3g}" for key, label in _QUOTED_METRICS if summary.get(key) is not None]
    if not quoted:
        return "No evaluation report was attached: run privsynth evaluate before relying on the rows."
    return "From the attached evaluation report: " + ", ".join(quoted) + "."


def _retention_answer(retention: Mapping[str, Any]) -> str:
    if retention.get("policy") == "delete-model":
        return (
            "No: the fitted model and its intermediate files were deleted after the release was written "
            f"({retention.get('deleted_at')}); more rows need a new fit, and a new privacy spend if it is DP."
        )
    if retention.get("model_file"):
        return f"Yes, while the saved model ('{retention['model_file']}') is kept."
    return "Only by fitting again: the fitted model was not saved."
