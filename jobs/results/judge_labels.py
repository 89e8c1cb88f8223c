"""Labels of judged benchmarks: the selected judge's, every judge's metrics, their agreement and majority.

For a benchmark with judges, each answer's label is its selected judge's label mapped onto the
benchmark's labels (``judge_labels`` of the definition). An answer without a judgment (its judge
failed, or it was not judged yet) counts as the judge's ``error`` label, never as a silent skip; an
answer whose generation failed stays ``ERROR``. Metric names of the other quantities:

- ``judge/<judge>/<metric>``: the benchmark's metrics under each judge's labels,
  ``judge/<judge>/unreadable_rate``: the share of answers whose judgment could not be read,
- ``judge/majority/<metric>``: under the majority of the judges' (mapped) labels, when there are two
  or more (judgments that could not be read are left out of the vote; a tie goes to the selected
  judge, else to the judge listed first),
- ``judge_kappa/<a>-vs-<b>`` and ``judge_agreement/<a>-vs-<b>``: Cohen's kappa (scikit-learn) and the
  share of equal labels of two judges over the answers both judged readably.

The item table gains one ``judge:<name>`` column per judge (its own label) and ``parsed_label``
(what the benchmark's rule-based parser says).
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from jobs.plan.build import Plan
from jobs.plan.judges import selected_judge
from trust.benchmarks.label_metrics import score_labels
from trust.judges.labels import benchmark_label, judge_labels_of
from trust.judges.verdicts import JUDGE_ERROR
from trust.types import ERROR


class JudgedLabels:
    """Judgments of a sweep, looked up by (judge identity, item key)."""

    def __init__(self, plan: Plan, judgments: pd.DataFrame | None):
        self.plan = plan
        self._by_identity: dict[str, pd.Series] = {}
        self._details: dict[str, pd.DataFrame] = {}
        if judgments is not None and not judgments.empty:
            frame = judgments.sort_values("committed_at", kind="stable")
            labels = frame["label"].where(frame["error"].isna(), JUDGE_ERROR)
            frame = frame.assign(_label=labels)
            for identity, part in frame.groupby("judge_identity", sort=False):
                # several judgments of one answer by one judge (a changed lookup file): the latest counts
                latest = part.drop_duplicates("item_key", keep="last")
                self._by_identity[str(identity)] = pd.Series(
                    latest["_label"].to_numpy(dtype=object), index=latest["item_key"].to_numpy(dtype=object)
                )
                self._details[str(identity)] = latest.set_index("item_key", drop=False)

    def table(self, bench: str, frame: pd.DataFrame) -> pd.DataFrame | None:
        """The judgments of the answers in ``frame``: one row per (answer, judge) with the raw text and reason."""
        run = self.plan.benchmarks[bench]
        parts = []
        for name in run.spec.judges:
            details = self._details.get(self.plan.judges[name].identity(bench))
            if details is None:
                continue
            found = details.reindex(frame["item_key"].tolist()).dropna(subset=["judgment_key"])
            if found.empty:
                continue
            parts.append(
                pd.DataFrame(
                    {
                        "item_id": found["item_id"].to_numpy(dtype=object),
                        "judge": name,
                        "label": found["_label"].to_numpy(dtype=object),
                        "reason": found["reason"].to_numpy(dtype=object),
                        "problem": found["problem"].to_numpy(dtype=object),
                        "raw": [
                            None if not isinstance(r, str) else r[:2000] for r in found["raw"].to_numpy(dtype=object)
                        ],
                        "judge_identity": found["judge_identity"].to_numpy(dtype=object),
                    }
                )
            )
        return pd.concat(parts, ignore_index=True) if parts else None

    def judge_labels(self, identity: str, keys: list[str]) -> list[str | None]:
        """Each key's judgment label by this judge (None where there is none)."""
        series = self._by_identity.get(identity)
        if series is None:
            return [None] * len(keys)
        return [None if isinstance(v, float) else v for v in series.reindex(keys).to_numpy(dtype=object)]

    def apply(self, bench: str, frame: pd.DataFrame) -> dict[str, float]:
        """Put the judges' labels into ``frame`` (in place) and return the judge metrics (empty: no judges)."""
        run = self.plan.benchmarks[bench]
        selected = selected_judge(run)
        if selected is None or frame.empty:
            return {}
        mapping = judge_labels_of(run.benchmark)
        keys = frame["item_key"].tolist()
        generation_failed = frame["error"].notna().to_numpy()
        frame["parsed_label"] = frame["label"]
        mapped: dict[str, list[str]] = {}
        metrics: dict[str, float] = {}
        items_by_id = {it.id: it for it in run.items}
        items = [items_by_id[i] for i in frame["item_id"]]
        for name in run.spec.judges:
            judge = self.plan.judges[name]
            raw = self.judge_labels(judge.identity(bench), keys)
            frame[f"judge:{name}"] = pd.Series(raw, dtype=object, index=frame.index)
            labels = [
                ERROR if failed else benchmark_label(mapping, label) for label, failed in zip(raw, generation_failed)
            ]
            mapped[name] = labels
            judged_ok = [label for label, failed in zip(raw, generation_failed) if not failed]
            metrics[f"judge/{name}/unreadable_rate"] = (
                sum(1 for label in judged_ok if label in (None, JUDGE_ERROR)) / len(judged_ok)
                if judged_ok
                else math.nan
            )
            for metric, value in _score(run, items, frame["item_id"].tolist(), labels).items():
                metrics[f"judge/{name}/{metric}"] = value
        frame["label"] = pd.Series(mapped[selected], dtype=object, index=frame.index)
        if len(mapped) >= 2:
            unreadable = {benchmark_label(mapping, JUDGE_ERROR), ERROR}
            order = [selected] + [n for n in run.spec.judges if n != selected]
            majority = [_vote([mapped[n][i] for n in order], unreadable) for i in range(len(frame))]
            frame["judge:majority"] = pd.Series(majority, dtype=object, index=frame.index)
            for metric, value in _score(run, items, frame["item_id"].tolist(), majority).items():
                metrics[f"judge/majority/{metric}"] = value
            for a, b in combinations(run.spec.judges, 2):
                metrics.update(pair_agreement(a, b, mapped[a], mapped[b], unreadable))
        return metrics


def _score(run: Any, _items: list[Any], ids: list[str], labels: list[str]) -> dict[str, float]:
    by_id = dict(zip(ids, labels))
    return score_labels(run.benchmark, run.items, by_id) if by_id else {}


def _vote(labels: list[str], unreadable: set[str]) -> str:
    """The most frequent readable label; ties to the earliest judge in ``labels``; all unreadable: the first."""
    readable = [label for label in labels if label not in unreadable]
    if not readable:
        return labels[0]
    counts = Counter(readable)
    best = max(counts.values())
    return next(label for label in readable if counts[label] == best)


def pair_agreement(a: str, b: str, left: list[str], right: list[str], unreadable: set[str]) -> dict[str, float]:
    """Cohen's kappa and raw agreement of two judges over the answers both judged readably."""
    from sklearn.metrics import cohen_kappa_score

    pairs = [(x, y) for x, y in zip(left, right) if x not in unreadable and y not in unreadable]
    name = f"{a}-vs-{b}"
    if not pairs:
        return {f"judge_kappa/{name}": math.nan, f"judge_agreement/{name}": math.nan}
    xs, ys = zip(*pairs)
    agreement = float(np.mean([x == y for x, y in pairs]))
    if len(set(xs) | set(ys)) < 2:
        kappa = math.nan  # one label only: kappa is undefined
    else:
        kappa = float(cohen_kappa_score(list(xs), list(ys)))
    return {
        f"judge_kappa/{name}": kappa,
        f"judge_agreement/{name}": agreement,
        f"judge_pairs/{name}": float(len(pairs)),
    }
