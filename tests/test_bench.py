"""The benchmark's own smoke test: `bench/run.py` on 2,000 events gives every ingestion figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT


def run_bench(tmp_path: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    """``bench/run.py`` with ``args``, its work folder and results file in ``tmp_path``: its output and the
    figures it wrote."""
    results = tmp_path / "results.json"
    command = [sys.executable, str(PROJECT / "bench" / "run.py"), *args]
    command += ["--work", str(tmp_path / "work"), "--results", str(results)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out, json.loads(results.read_text())


def test_bench_runs_on_small_data_and_writes_the_figures(tmp_path):
    out, figures = run_bench(
        tmp_path, "--events", "2000", "--naive-events", "300", "--only", "ingest,rerun,naive", timeout=300
    )
    stages = figures["stages"]
    for name in ("ingest_1_workers", "ingest_2_workers"):
        run = stages[name]
        assert run["new"] == run["records"] - run["quarantined"] > 1500, run  # the demo's two bad records
        assert (
            run["seconds"] > 0 and run["records_per_s"] > 0 and run["mb_per_s"] > 0 and run["peak_rss_mb"] > 0
        )
    assert stages["ingest_2_workers"]["peak_rss_worker_mb"] > 0  # the worker processes were measured too
    first = stages["ingest_1_workers"]
    assert (
        stages["rerun"]["objects_already_ingested"]
        == first["objects_ingested"] + first["objects_quarantined"]
    )
    assert stages["rerun"]["records"] == 0
    assert stages["naive"]["records"] >= 300 and stages["naive"]["records_per_s"] > 0
    assert figures["speedup"]["2_vs_1_workers"] > 0 and figures["speedup"]["vs_naive"] > 0
    assert "records/s" in out.stdout and "speed-up" in out.stdout


@pytest.mark.slow
def test_bench_scoring_stages_on_a_small_organisation(tmp_path):
    """Features, training, scoring (whole day and partition by partition) and the report on a small
    organisation: every stage gives its figures, CPU seconds included."""
    out, figures = run_bench(
        tmp_path,
        "--events",
        "5000",
        "--org-events-per-day",
        "1200",
        "--org-days",
        "12",
        "--only",
        "features,train,score,score_partitions,report",
        timeout=900,
    )
    stages = figures["stages"]
    for name in (
        "org_prepare",
        "features_last_day",
        "train",
        "score_last_day",
        "score_partitions",
        "report_last_day",
    ):
        assert not stages[name].get("skipped"), (name, stages[name].get("trace", stages[name]))
        assert stages[name]["seconds"] > 0 and stages[name]["cpu_seconds"] > 0
    assert stages["score_partitions"]["rows"] == stages["score_last_day"]["rows"] > 4000
    assert stages["score_partitions"]["partitions"] >= 3
    assert set(stages["train"]["use_cases"]) == {"console_login", "api_call"}
    assert figures["org"]["scored_day_events"] == 5000
    assert "train api_call:" in out.stdout and "score_last_day:" in out.stdout


@pytest.mark.slow
def test_bench_explore_stage_on_a_small_organisation(tmp_path):
    """The activity tables of the ordinary days, then the 30-day activity and PCA pages from them alone."""
    out, figures = run_bench(
        tmp_path,
        "--events",
        "2000",
        "--org-events-per-day",
        "800",
        "--org-days",
        "5",
        "--only",
        "explore",
        timeout=900,
    )
    stages = figures["stages"]
    for name in ("activity_tables", "explore_30_days"):
        assert not stages[name].get("skipped"), (name, stages[name].get("trace", stages[name]))
    assert stages["activity_tables"]["days"] == 5
    explore = stages["explore_30_days"]
    assert explore["rows"] == stages["activity_tables"]["rows"] > 3000  # every ordinary day's events, no more
    assert explore["principals"] > 10 and {"activity_page_cpu", "pca_page_cpu"} <= set(explore["timings"])


@pytest.mark.slow
def test_bench_training_cases_on_small_stores(tmp_path):
    """The training cases, alone and small: training day by day in a fresh interpreter gives its own peak
    RSS and seconds; the comparison trains both ways and scores every held-out event with each champion."""
    out, figures = run_bench(
        tmp_path,
        "--train-days",
        "9",
        "--train-events-per-day",
        "1500",
        "--train-ap-events-per-day",
        "1000",
        "--only",
        "train-30x1m,train-ap",
        timeout=1800,
    )
    stages = figures["stages"]
    for name in ("train_9x1500", "train_9x1000_stream", "train_9x1000_full", "train_9x1000_held_out"):
        assert not stages[name].get("skipped"), (name, stages[name].get("trace", stages[name]))
    case = stages["train_9x1500"]
    assert case["sampling"] == "stream" and case["seconds"] > 0 and case["rows"] > 1000
    # the training process's own high-water mark, read by itself: more than an interpreter, less than the tree
    assert 100 < case["vm_hwm_mb"] <= case["peak_rss_tree_mb"] + 1
    assert figures["train_case"]["events_per_day"] == 1500
    compared = figures["train_ap"]["use_cases"]["api_call"]
    assert compared["held_out_events"] > 500
    for way in ("stream", "full"):
        assert 0 <= compared[f"{way}_champion_ap_all_events"] <= 1
    assert "difference_champion_ap_all_events" in compared
    assert "held-out AP api_call" in out.stdout and "VmHWM" in out.stdout
