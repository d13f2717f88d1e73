"""Great Expectations, the GX 1.x way: each suite built once from its definitions, run by a Checkpoint.

One ephemeral (in-memory) context per process holds a pandas data source whose batch is the dataframe
given at each run, one ``ExpectationSuite`` per entry of :data:`~trailguard.quality.expectations.SUITES`
(the per-day bounds left as ``$PARAMETER`` references), a ``ValidationDefinition`` pairing the batch with
the suite, and a ``Checkpoint`` over it. A run passes the dataframe as batch parameter and the day's
bounds as expectation parameters. Importing GX and building the context is the slow part: done once.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trailguard.quality.expectations import BY_NAME, SUITES
from trailguard.quality.results import ExpectationOutcome, _distinct_sample

if TYPE_CHECKING:
    import pandas as pd

RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 20}

_GX_LOCK = threading.Lock()  # the context and its stores are shared by the threads of a process


@functools.cache
def _context() -> Any:
    """The process's ephemeral GX context and the batch definition every suite validates."""
    gx_log = logging.getLogger("great_expectations")
    if gx_log.level == logging.NOTSET:  # its INFO chatter (registries, temp dirs) drowns a task log
        gx_log.setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.enable_analytics(False)
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas("trailguard").add_dataframe_asset("events_partition")
    return context, asset.add_batch_definition_whole_dataframe("whole_partition")


@functools.cache
def checkpoint(suite_name: str) -> Any:
    """The suite built from its definitions, its validation definition and checkpoint (once per process)."""
    import great_expectations as gx

    context, batch_definition = _context()
    suite = context.suites.add(
        gx.ExpectationSuite(name=suite_name, expectations=[e.gx_expectation() for e in SUITES[suite_name]])
    )
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch_definition, suite=suite)
    )
    return context.checkpoints.add(
        gx.Checkpoint(name=suite_name, validation_definitions=[validation], result_format=RESULT_FORMAT)
    )


def run_suite(
    suite_name: str, frame: pd.DataFrame, parameters: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Validate ``frame`` against a suite with the run's expectation parameters; results by expectation name."""
    with _GX_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = checkpoint(suite_name).run(
            batch_parameters={"dataframe": frame}, expectation_parameters=dict(parameters or {})
        )
    (validation,) = result.run_results.values()
    return {r.expectation_config.meta["name"]: r for r in validation.results}


def outcome(res: Any, *, sample: list[str] | None = None, detail: str = "") -> ExpectationOutcome:
    """Turn one GX result into our record; samples are distinct values, clipped (they are attacker data)."""
    config = res.expectation_config
    definition = BY_NAME[config.meta["name"]]
    result = res.result or {}
    info = res.exception_info or {}
    success = bool(res.success)
    if info.get("raised_exception"):
        success = False
        detail = f"{detail}; GX error: {info.get('exception_message')}".lstrip("; ")
    if definition.table_level:
        count, percent = 0, 0.0
    else:
        count = int(result.get("unexpected_count") or 0)
        percent = float(result.get("unexpected_percent") or 0.0)
    if sample is None:
        sample = (
            [] if definition.table_level else _distinct_sample(result.get("partial_unexpected_list") or [])
        )
    return ExpectationOutcome(
        name=definition.name,
        column=definition.column,
        severity=str(getattr(config.severity, "value", config.severity)),
        success=success,
        unexpected_count=count,
        unexpected_percent=round(percent, 4),
        sample=sample if not success else [],
        detail=detail,
    )
