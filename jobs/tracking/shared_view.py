"""A view of a sweep's runs table that the MLflow UI opens with ``?viewStateShareKey=<key>``.

By default the UI hides every metric column and collapses nested runs under their parent. MLflow's
own "share view" stores the table's state (columns, grouping, expanded runs) in an experiment tag
``mlflow.sharedViewState.<key>``; qtrust writes one such view per sweep: runs grouped by the
``benchmark`` tag, the variant, bits and method tags and each benchmark's primary metric with its
interval and its delta against the reference as columns, the sweep's parent run expanded.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any


def view_key(sweep: str, store: str) -> str:
    """A stable share key for a sweep's view (letters, digits and dashes, as the UI puts in URLs).

    ``store`` is where the sweep lives (its resolved folder or URI, ``SweepStore.uri``): two sweeps of
    one name under different storage roots get two views, and one sweep keeps its key on resume."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", sweep).strip("-")[:40] or "sweep"
    digest = hashlib.sha256(f"{sweep}\0{store}".encode()).hexdigest()[:8]
    return f"qtrust-{slug}-{digest}"


def _column(kind: str, name: str) -> str:
    """How the UI names a column: ``metrics.`accuracy```, ``tags.`variant```."""
    return f"{kind}.`{name}`"


def view_state(
    primary_metrics: list[str],
    tags: tuple[str, ...] = ("variant", "bits", "method", "judge"),
    group_by_tag: str | None = "benchmark",
) -> dict[str, Any]:
    """The runs-table state: tag and metric columns, grouped by ``group_by_tag``, every run shown in charts."""
    metrics: list[str] = []
    for metric in dict.fromkeys(primary_metrics):
        metrics += [metric, f"{metric}_ci_low", f"{metric}_ci_high", f"delta_{metric}", f"delta_{metric}_p"]
    columns = [_column("tags", t) for t in tags] + [_column("metrics", m) for m in metrics]
    state: dict[str, Any] = {
        # search facets (the URL's own parameters), left at the UI's defaults
        "searchFilter": "",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        # the table
        "selectedColumns": columns,
        "columnOrder": [],
        "columnWidths": {},
        "runsExpanded": {},
        "runsPinned": [],
        "runsHidden": [],
        "runsVisibilityMap": {},
        "runsHiddenMode": "SHOW_ALL",
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": False,
        "groupBy": None,
        "groupsExpanded": {},
        "autoRefreshEnabled": True,
        "useGroupedValuesInCharts": False,
        "hideEmptyCharts": True,
    }
    if group_by_tag:
        state["groupBy"] = {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": group_by_tag}],
        }
    return state
