"""TrailGuard's benchmark: ingestion end to end, against the naive way, and the other stages when present.

    make bench                                   # 1,000,000 events (generated once, cached in bench/work/)
    python bench/run.py --events 200000          # a smaller run
    python bench/run.py --only ingest,naive      # some stages only
    python bench/run.py --only ingest --repeat 3 # the median of 3 ingest runs per worker count
    python bench/run.py --only features,score,report,train   # the daily scoring path and training

Ingestion and validation read ``--events`` demo events (30 days, and one day). Features, training,
scoring and the report run on an organisation's store: ``--org-days`` ordinary days of
``--org-events-per-day`` events (100,000) followed by one busy day of ``--events`` events, the day that is
scored and reported. Training learns from the ordinary days (until the day before the busy one). That
store is ingested once and kept in bench/work/, with its history profiles (what the daily runs of the
days before left behind); each run starts training on a fresh MLflow store.

Every measured stage runs in a child process, so that its peak memory is its own: the table gives wall
seconds, CPU seconds (the child and its workers), records/s, MB/s of compressed input and peak RSS (the
largest process, and the whole process tree as sampled). Results go to bench/results.json. Ingestion and
the naive way are timed without their imports (a fixed cost per process, given apart as import_seconds);
their CPU seconds include them.

The machine may be shared: CPU seconds and the load average at the start are recorded beside wall time.
Stages whose modules are not there yet print "not available yet"; each is a small function below.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

PROJECT = Path(__file__).resolve().parents[1]
NOT_AVAILABLE = "not available yet"
STAGES = (
    "ingest",
    "rerun",
    "naive",
    "integrity",
    "dags",
    "label",
    "validate",
    "features",
    "train",
    "score",
    "score_partitions",
    "report",
    "explore",
    "demo",
    "flows",
    "s3_commit",
)
FIXTURES = PROJECT.parent / "shared" / "fixtures" / "cloudtrail"
ORG_STAGES = ("features", "train", "score", "score_partitions", "report", "explore")


# -- measuring a child process --------------------------------------------------------------------------
def measure(work: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``work(*args)`` in a forked child; its result plus wall and CPU seconds and peak memory.

    The child times the work itself (not its own start); CPU seconds include its worker processes.
    """
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = context.Process(target=_child, args=(send, work, args))
    child.start()
    send.close()
    sampler = _TreeSampler(child.pid)
    sampler.start()
    result = receive.recv()
    child.join()
    sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["cpu_seconds"] = round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2)
    result["peak_rss_tree_mb"] = round(sampler.peak / 2**20)
    return result


def _child(send: Any, work: Callable[..., dict[str, Any]], args: tuple) -> None:
    try:
        started = time.perf_counter()
        result = work(*args)
        result["stage_seconds"] = round(time.perf_counter() - started, 2)
        result.setdefault("seconds", result["stage_seconds"])  # a stage may time its work without its imports
    except ImportError as exc:
        result = {"skipped": NOT_AVAILABLE, "detail": str(exc)}
    except Exception as exc:  # a stage that fails is reported, the others still run
        result = {
            "skipped": "failed",
            "detail": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc()[-2000:],
        }
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest of its workers
    result.update(
        peak_rss_mb=round(own / 1024), peak_rss_worker_mb=round(children / 1024) if children else None
    )
    send.send(result)
    send.close()


class _TreeSampler(threading.Thread):
    """The largest total RSS of a process and its descendants, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.05):
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                continue

    def stop(self) -> None:
        self._done.set()
        self.join()


# -- data ------------------------------------------------------------------------------------------------
def demo_logs(work: Path, events: int, days: int = 30, end: date | None = None) -> Path:
    """Demo CloudTrail logs for ``events`` events over ``days`` days up to ``end`` (the demo's last day
    unless told), generated once and kept."""
    from trailguard.demo import generator

    out = work / (f"logs-{events}" if days == 30 else f"logs-{events}-{days}d")
    if end is not None and end != generator.DEFAULT_END:
        out = out.with_name(f"{out.name}-until-{end.isoformat()}")
    if not (out / "demo_summary.json").exists():
        print(f"generating {events:,} events over {days} days in {out} (once) ...", flush=True)
        generator.generate(out, events=events, days=days, end=end)
    return out


def org_logs(work: Path, day_events: int, per_day: int, days: int) -> tuple[list[Path], str]:
    """The organisation's logs: ``days`` ordinary days of ``per_day`` events, then the busy day of
    ``day_events`` events; and that busy day."""
    from trailguard.demo.organisation import DEFAULT_END

    history = demo_logs(work, per_day * days, days=days, end=DEFAULT_END - timedelta(days=1))
    return [history, demo_logs(work, day_events, days=1)], DEFAULT_END.isoformat()


def org_prepare_stage(folder: str, logs: list[str]) -> dict[str, Any]:
    """Ingest the organisation's logs; build the ordinary days' profiles, as their own daily runs would have."""
    from trailguard.ingest.ingestion import ingest
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.model.enrich import default_enricher
    from trailguard.model.features import day_profile
    from trailguard.store.events import EventStore

    shutil.rmtree(folder, ignore_errors=True)
    store = EventStore(Path(folder) / "data")
    records = sum(ingest(LocalFolderSource(Path(path) / "AWSLogs"), store).new for path in logs)
    for day in store.dates()[:-1]:
        day_profile(store, day, default_enricher())
    (Path(folder) / "ready.json").write_text(json.dumps({"records": records, "days": store.dates()}) + "\n")
    return {"records": records}


def log_files(logs: Path) -> list[Path]:
    from trailguard.ingest.sources import skip_reason

    return sorted(
        p for p in logs.rglob("*") if p.is_file() and skip_reason(p.relative_to(logs).as_posix()) is None
    )


# -- stages: each returns a dict of figures ---------------------------------------------------------------
def ingest_stage(logs: str, data: str, workers: int) -> dict[str, Any]:
    """Ingestion's own time: the imports (about 0.3 s, once per process) are timed apart."""
    started = time.perf_counter()
    from trailguard.ingest.ingestion import ingest
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.store.events import EventStore

    imported = time.perf_counter()
    summary = ingest(LocalFolderSource(logs), EventStore(Path(data)), workers=workers)
    figures = {
        "seconds": round(time.perf_counter() - imported, 2),
        "import_seconds": round(imported - started, 2),
    }
    return figures | {
        key: getattr(summary, key)
        for key in (
            "objects",
            "objects_ingested",
            "objects_quarantined",
            "objects_already_ingested",
            "records",
            "new",
            "duplicates",
            "quarantined",
        )
    }


def integrity_stage(logs: str, data: str, days: list[str]) -> dict[str, Any]:
    """CloudTrail digest validation of the demo's digest days: signatures, chains, the listed log files'
    hashes (from the manifest when ``data`` holds an ingested store, else each file read and hashed)."""
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.integrity.day import key_provider, verify_day
    from trailguard.store.events import EventStore

    keys = Path(logs) / "cloudtrail-public-keys"
    if not keys.is_dir():
        return {
            "skipped": NOT_AVAILABLE,
            "detail": f"{logs} predates signed digests: delete it to regenerate",
        }
    store = EventStore(Path(data))
    ingested = store.manifest_hashes()
    source, ring = LocalFolderSource(logs), key_provider(keys)
    started = time.perf_counter()
    hours = files = 0
    statuses = {}
    for day in days:
        result = verify_day(store.root, source, date.fromisoformat(day), ring, ingested=ingested)
        hours += result.summary["hours"]
        files += result.summary["log_files_listed"]
        statuses[day] = result.status
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 3),
        "rows": files,
        "hours": hours,
        "log_files": files,
        "hours_per_s": round(hours / seconds, 1),
        "log_files_per_s": round(files / seconds, 1),
        "hashes_from_manifest": len(ingested) > 0,
        "statuses": statuses,
    }


def naive_stage(files: list[str], out: str, limit: int) -> dict[str, Any]:
    """The way the issue started from: json.load and pandas.json_normalize per file, concat, parquet (timed,
    like ingest_stage, without the imports)."""
    started = time.perf_counter()
    import pandas as pd

    imported = time.perf_counter()
    frames, records = [], 0
    for name in files:
        try:
            with gzip.open(name) as handle:
                batch = json.load(handle)["Records"]
        except (OSError, EOFError, ValueError, KeyError):
            continue
        frames.append(pd.json_normalize(batch))
        records += len(batch)
        if records >= limit:
            break
    frame = pd.concat(frames, ignore_index=True)
    mixed = [c for c in frame.columns if frame[c].dtype == object]
    frame = frame.astype({c: "string" for c in mixed})  # nested lists and dicts as their text
    frame.to_parquet(out)
    return {
        "records": records,
        "seconds": round(time.perf_counter() - imported, 2),
        "import_seconds": round(imported - started, 2),
    }


def flow_logs(work: Path, records: int, per_file: int = 100_000) -> Path:
    """``records`` VPC flow records (default v2 format) in gzipped files of ``per_file`` in AWS's layout,
    generated once with numpy and pyarrow's CSV writer and cached."""
    folder = work / f"flows-{records}"
    if (folder / "ready").exists():
        return folder
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from trailguard.flows.logs import DEFAULT_FORMAT, flow_log_key

    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(7)
    fields = DEFAULT_FORMAT.split()
    day = date(2026, 1, 31)
    base = 1769817600  # 2026-01-31T00:00:00Z
    for index, start in enumerate(range(0, records, per_file)):
        n = min(per_file, records - start)

        def ip(prefix: str, n: int = n) -> Any:
            return pa.array([f"{prefix}{a}.{b}" for a, b in rng.integers(1, 255, (n, 2))])

        t = base + np.sort(rng.integers(0, 86_000, n))
        columns = [
            pa.array(np.full(n, 2)), pa.array(np.full(n, "418272790141")),
            pa.array([f"eni-0{x:016x}" for x in rng.integers(0, 400, n)]), ip("10.20."), ip("52.94."),
            pa.array(rng.integers(1024, 65535, n)), pa.array(rng.choice([443, 80, 53, 22, 5432], n)),
            pa.array(rng.choice([6, 17], n)), pa.array(rng.integers(1, 500, n)), pa.array(rng.integers(40, 2_000_000, n)),
            pa.array(t), pa.array(t + 60), pa.array(rng.choice(["ACCEPT", "REJECT"], n, p=[0.9, 0.1])),
            pa.array(np.full(n, "OK")),
        ]  # fmt: skip
        table = pa.Table.from_arrays(columns, names=fields)
        sink = pa.BufferOutputStream()
        sink.write((DEFAULT_FORMAT + "\n").encode())  # the writer quotes header names: AWS does not
        pacsv.write_csv(
            table, sink, pacsv.WriteOptions(delimiter=" ", quoting_style="none", include_header=False)
        )
        key = flow_log_key(
            "418272790141",
            "us-east-1",
            day,
            "fl-0bench",
            datetime(2026, 1, 31, index % 24, 5),
            f"{index:08x}",
        )
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(sink.getvalue().to_pybytes(), compresslevel=6))
    (folder / "ready").write_text("")
    return folder


def flows_floor_stage(logs: str) -> dict[str, Any]:
    """The floor: pyarrow's CSV reader on the same files (gunzip and parse, typed by inference), nothing else."""
    started = time.perf_counter()
    import pyarrow as pa
    import pyarrow.csv as pacsv

    imported = time.perf_counter()
    records = 0
    for path in sorted(Path(logs).rglob("*.log.gz")):
        with pa.input_stream(str(path), compression="gzip") as stream:
            records += pacsv.read_csv(stream, parse_options=pacsv.ParseOptions(delimiter=" ")).num_rows
    return {
        "records": records,
        "seconds": round(time.perf_counter() - imported, 2),
        "import_seconds": round(imported - started, 2),
    }


def flows_ingest_stage(logs: str, data: str, workers: int) -> dict[str, Any]:
    """Flow ingestion end to end: list, gunzip, parse and check, partitions, manifest (imports timed apart),
    with the limits and batch a run gets from the settings (TRAILGUARD_FLOW_BLOCK_BYTES...)."""
    started = time.perf_counter()
    from trailguard.flows.ingestion import ingest_flows
    from trailguard.flows.logs import FlowLimits
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.store.settings import load_settings

    settings = load_settings()
    limits = FlowLimits.from_settings(settings)
    imported = time.perf_counter()
    summary = ingest_flows(
        LocalFolderSource(logs),
        data,
        workers=workers,
        batch_records=settings.ingest_batch_records,
        limits=limits,
    )
    figures = {
        "seconds": round(time.perf_counter() - imported, 2),
        "import_seconds": round(imported - started, 2),
        "block_bytes": limits.block_bytes,
        "batch_records": settings.ingest_batch_records,
    }
    return figures | {
        key: getattr(summary, key)
        for key in ("objects", "objects_ingested", "records", "stored", "quarantined")
    }


def dag_parse_stage() -> dict[str, Any]:
    """Each DAG file run in a fresh interpreter with Airflow and its providers' Asset handlers already
    loaded, as the DAG processor has them."""
    env = dict(os.environ)
    code = (
        "import sys, time, runpy, airflow.sdk\n"
        "from airflow.providers_manager import ProvidersManager\n"
        "ProvidersManager().initialize_providers_asset_uri_resources()\n"
        "t = time.perf_counter(); runpy.run_path(sys.argv[1]); print(time.perf_counter() - t)"
    )
    seconds = {}
    for path in sorted((PROJECT / "dags").glob("*.py")):
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, timeout=300
        )
        if out.returncode != 0:
            raise RuntimeError(f"{path.name}: {out.stderr.strip()[-500:]}")
        seconds[path.name] = round(float(out.stdout.strip().splitlines()[-1]), 3)
    return {"files": seconds}


def label_stage(rows: int = 1_000_000) -> dict[str, Any]:
    """The labelling functions over a day of ``rows`` events: mostly benign reads, with the public fixtures'
    real records (attacks among them) mixed in, as an Arrow partition turned into a frame."""
    import numpy as np
    import pandas as pd
    from trailguard.detect.engine import label_events
    from trailguard.ingest.normalise import RecordError, normalise, rows_to_table

    records = []
    for name in ("stratus_red_team_detonations.ndjson", "panther_rule_tests.ndjson"):
        path = FIXTURES / name
        if not path.exists():
            raise RuntimeError(f"{NOT_AVAILABLE}: the public fixtures are not at {FIXTURES}")
        for line in path.read_text().splitlines():
            try:
                records.append(normalise({k: v for k, v in json.loads(line).items() if k[0] != "_"}, name))
            except RecordError:
                continue
    table = rows_to_table(records)
    names = pd.Series(table.column("eventName").to_pylist())
    reads = np.flatnonzero(names.str.match(r"^(Describe|List)").fillna(False).to_numpy())
    rng = np.random.default_rng(0)
    picks = np.r_[rng.choice(reads, rows - rows // 33), rng.choice(len(records), rows // 33)]
    day = table.take(picks).to_pandas()
    day["eventTime"] = pd.Timestamp("2024-08-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 86_400, len(day)), unit="s"
    )
    day["userIdentity.arn"] = day["userIdentity.arn"].fillna("?") + "/" + (picks % 2000).astype(str)
    started = time.perf_counter()
    out = label_events(day)
    seconds = time.perf_counter() - started
    return {
        "rows": len(out),
        "labelled": int((out["lf_score"] > 0).sum()),
        "stage_seconds": round(seconds, 2),
        "records_per_s": round(len(out) / seconds),
    }


def validate_stage(data: str, day: str) -> dict[str, Any]:
    from trailguard.quality.gate import validate_partition
    from trailguard.store.events import EventStore

    result = validate_partition(EventStore(Path(data)), day)
    return {"date": day, "rows": result.rows_in, "quality": result.status}


def features_stage(data: str, day: str) -> dict[str, Any]:
    from trailguard.model.features import load_day_features
    from trailguard.store.events import EventStore

    return {"date": day, "rows": len(load_day_features(EventStore(Path(data)), day))}


def train_stage(data: str, day: str) -> dict[str, Any]:
    """Training on the days before ``day``, on a fresh MLflow store."""
    from trailguard.model.training import train
    from trailguard.store.events import EventStore

    shutil.rmtree(Path(data) / "mlflow", ignore_errors=True)
    until = date.fromisoformat(day) - timedelta(days=1)
    result = train(EventStore(Path(data)), until=until)
    use_cases = {
        uc: {"seconds": round(r.seconds, 1), "rows": r.rows, "train_rows": r.train_rows, "best": r.best}
        for uc, r in result.use_cases.items()
    }
    return {
        "until": until.isoformat(),
        "use_cases": use_cases,
        "timings": getattr(result, "timings", {}),
        "result": "; ".join(result.lines())[:600],
    }


def score_stage(data: str, day: str) -> dict[str, Any]:
    from trailguard.model.scoring import score_day
    from trailguard.store.events import EventStore

    result = score_day(EventStore(Path(data)), day)
    return {
        "date": day,
        "rows": result.events,
        "timings": {k: round(v, 2) for k, v in result.timings.items()},
        "result": "; ".join(result.lines())[:300],
    }


def score_partitions_stage(data: str, day: str) -> dict[str, Any]:
    """Every partition (account x region) of the day scored one after the other, as the DAG's mapped
    tasks would: the total cost of splitting the day."""
    from trailguard.model.scoring import day_partitions, score_day
    from trailguard.store.events import EventStore

    store = EventStore(Path(data))
    parts = day_partitions(store, day)
    seconds = []
    for part in parts:
        started = time.perf_counter()
        score_day(store, day, account=part["account"], region=part["region"])
        seconds.append(round(time.perf_counter() - started, 2))
    return {
        "date": day,
        "rows": sum(p["events"] for p in parts),
        "partitions": len(parts),
        "slowest_partition_seconds": max(seconds, default=0.0),
    }


def report_stage(data: str, day: str) -> dict[str, Any]:
    from trailguard.report.daily import build_report

    report = build_report(Path(data), day)
    return {"date": day, "events": len(report.top_events)}


def activity_stage(data: str, day: str) -> dict[str, Any]:
    """The activity table of every ordinary day (what each day's validation writes), slowest day given."""
    from trailguard.explore.activity import write_day_activity
    from trailguard.store.events import EventStore

    store = EventStore(Path(data))
    seconds = []
    for each in [d for d in store.dates() if d < day]:
        started = time.perf_counter()
        write_day_activity(store, each)
        seconds.append(round(time.perf_counter() - started, 2))
    return {
        "days": len(seconds),
        "slowest_day_seconds": max(seconds, default=0.0),
        "rows": sum(store.count_rows(d) for d in store.dates() if d < day),
    }


def explore_stage(data: str, day: str) -> dict[str, Any]:
    """What opening the 30-day pages costs: the activity dashboards and the PCA map of the ordinary days,
    rendered, from their activity tables only (as the Airflow plugin serves them; its process has its
    libraries imported already, so imports are not timed). Wall and CPU seconds per page: on a shared
    machine the CPU seconds are what the page costs."""
    import sklearn.decomposition  # noqa: F401
    from trailguard.explore import render, views

    end = date.fromisoformat(day) - timedelta(days=1)
    period = views.resolve_period(Path(data), end - timedelta(days=29), end)
    timings: dict[str, float] = {}
    started, cpu = time.perf_counter(), time.process_time()
    activity = views.activity_view(Path(data), period)
    html = render.render("activity", activity, render.Links())
    timings["activity_page"], timings["activity_page_cpu"] = (
        time.perf_counter() - started,
        time.process_time() - cpu,
    )
    started, cpu = time.perf_counter(), time.process_time()
    pca = views.pca_view(Path(data), period)
    html += render.render("pca", pca, render.Links())
    timings["pca_page"], timings["pca_page_cpu"] = time.perf_counter() - started, time.process_time() - cpu
    return {
        "rows": activity["totals"]["events"],
        "principals": pca["principals"],
        "html_kb": len(html) // 1024,
        "days": len(period.days),
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }


def s3_commit_stage(logs: str, cycles: int = 30) -> dict[str, Any]:
    """Committing into an s3:// root on a moto server over HTTP (moto: a test dependency): the commit
    lease alone (take and release, the cost every commit pays) and one staged commit of a day, lease
    included. moto's server is slower than S3, so the figures bound S3's from above, roughly."""
    import socket
    import statistics

    import boto3
    from moto.server import ThreadedMotoServer
    from trailguard.ingest.ingestion import commit, plan_partitions, stage
    from trailguard.ingest.sources import LocalFolderSource
    from trailguard.store.events import EventStore
    from trailguard.store.fs import as_path
    from trailguard.store.lease import held

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_DEFAULT_REGION="us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    try:
        boto3.client("s3").create_bucket(Bucket="bench-commit")
        root = as_path("s3://bench-commit/data")
        with held(root, "commit", "first: the endpoint probe"):
            pass
        lease_ms = []
        for _ in range(cycles):
            started = time.perf_counter()
            with held(root, "commit", "bench"):
                pass
            lease_ms.append((time.perf_counter() - started) * 1000)
        source, store = LocalFolderSource(logs), EventStore(root)
        stage_ids = []
        for i, partition in enumerate(plan_partitions(source, store)):
            stage(source, store, partition, f"bench-{i}")
            stage_ids.append(f"bench-{i}")
        started = time.perf_counter()
        summary = commit(store, stage_ids)
        seconds = time.perf_counter() - started
    finally:
        server.stop()
    return {
        "seconds": round(seconds, 2),
        "records": summary.new,
        "records_per_s": round(summary.new / seconds) if seconds else 0,
        "stages": len(stage_ids),
        "lease_take_release_ms_median": round(statistics.median(lease_ms), 1),
        "lease_take_release_ms_max": round(max(lease_ms), 1),
    }


def demo_stage(work: str) -> dict[str, Any]:
    """What `make demo` runs (`trailguard demo`), with its data and logs under bench/work/demo."""
    import trailguard.demo  # noqa: F401  (not available yet: nothing to time)

    folder = Path(work) / "demo"
    shutil.rmtree(folder / "data", ignore_errors=True)
    command = [
        str(Path(sys.executable).with_name("trailguard")),
        "--data",
        str(folder / "data"),
        "demo",
        "--logs",
        str(folder / "logs"),
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip()[-800:] or out.stdout.strip()[-800:])
    return {}


# -- the run ---------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work).resolve()
    stages = set(args.only.split(",")) if args.only else set(STAGES)
    unknown = stages - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(STAGES)}")
    results: dict[str, Any] = {
        "events": args.events,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
    }

    def step(name: str, work_fn: Callable[..., dict[str, Any]], *work_args: Any) -> dict[str, Any]:
        print(f"  {name} ...", flush=True)
        figures = measure(work_fn, *work_args)
        results.setdefault("stages", {})[name] = figures
        return figures

    if stages & {"ingest", "rerun", "naive"}:
        logs = demo_logs(work, args.events)
        files = log_files(logs)
        input_bytes = sum(f.stat().st_size for f in files)
        results["input"] = {
            "folder": str(logs),
            "files": len(files),
            "compressed_mb": round(input_bytes / 2**20, 1),
        }
        stores = work / f"stores-{args.events}"
        shutil.rmtree(stores, ignore_errors=True)
        store = stores / f"workers-{args.workers[0]}"
    if "ingest" in stages:
        for workers in args.workers:
            runs = []
            for _ in range(args.repeat):  # each run into a fresh store; the median run is the stage's figures
                shutil.rmtree(stores / f"workers-{workers}", ignore_errors=True)
                runs.append(
                    step(
                        f"ingest_{workers}_workers",
                        ingest_stage,
                        str(logs),
                        str(stores / f"workers-{workers}"),
                        workers,
                    )
                )
            figures = sorted(runs, key=lambda r: r.get("seconds", float("inf")))[len(runs) // 2]
            if len(runs) > 1:
                figures["runs_seconds"] = [r.get("seconds") for r in runs]
            results["stages"][f"ingest_{workers}_workers"] = figures
            _rates(figures, input_bytes)
        runs = [results["stages"][f"ingest_{w}_workers"] for w in args.workers]
        if len(runs) > 1 and all("seconds" in r for r in runs):
            results["speedup"] = {
                f"{w}_vs_{args.workers[0]}_workers": round(runs[0]["seconds"] / r["seconds"], 2)
                for w, r in zip(args.workers[1:], runs[1:], strict=True)
            }
    if "rerun" in stages and store.exists():
        step("rerun", ingest_stage, str(logs), str(store), args.workers[-1])
    if "naive" in stages:
        figures = step(
            "naive", naive_stage, [str(f) for f in files], str(work / "naive.parquet"), args.naive_events
        )
        _rates(figures, None)
        best = max(
            (r.get("records_per_s", 0) for n, r in results["stages"].items() if n.startswith("ingest_")),
            default=0,
        )
        if best and figures.get("records_per_s"):
            results["speedup"] = {
                **results.get("speedup", {}),
                "vs_naive": round(best / figures["records_per_s"], 1),
            }
    if "integrity" in stages:
        logs = demo_logs(work, args.events)
        meta = json.loads((logs / "demo_summary.json").read_text())
        days = [(date.fromisoformat(meta["end"]) - timedelta(days=1)).isoformat(), meta["end"]]
        step("integrity_cold", integrity_stage, str(logs), str(work / f"integrity-{args.events}"), days)
        ingested = work / f"stores-{args.events}" / f"workers-{args.workers[-1]}"
        if (ingested / "manifest").exists():
            step("integrity_after_ingest", integrity_stage, str(logs), str(ingested), days)
    if "dags" in stages:
        step("dag_parse", dag_parse_stage)
    if "label" in stages:
        step("label_one_million", label_stage)
    if "validate" in stages:
        busy = demo_logs(work, args.events, days=1)
        busy_store = work / f"stores-{args.events}-one-day"
        shutil.rmtree(busy_store, ignore_errors=True)
        ingest_figures = step("ingest_one_day", ingest_stage, str(busy), str(busy_store), args.workers[-1])
        _rates(ingest_figures, sum(f.stat().st_size for f in log_files(busy)))
        step("validate_one_day", validate_stage, str(busy_store), _last_day(busy_store))
    if stages & set(ORG_STAGES):
        folder = work / f"org-{args.org_events_per_day}x{args.org_days}d-then-{args.events}"
        data = folder / "data"
        logs_used, day = org_logs(work, args.events, args.org_events_per_day, args.org_days)
        results["org"] = {
            "folder": str(folder),
            "days": args.org_days,
            "events_per_day": args.org_events_per_day,
            "scored_day": day,
            "scored_day_events": args.events,
        }
        if not (folder / "ready.json").exists():
            figures = step("org_prepare", org_prepare_stage, str(folder), [str(p) for p in logs_used])
            if figures.get("skipped"):
                raise SystemExit(f"preparing the organisation's store failed: {figures.get('detail')}")
        for name, stage_fn in (
            ("features", features_stage),
            ("train", train_stage),
            ("score", score_stage),
            ("score_partitions", score_partitions_stage),
            ("report", report_stage),
        ):
            if name in stages:
                step(
                    f"{name}_last_day" if name not in ("train", "score_partitions") else name,
                    stage_fn,
                    str(data),
                    day,
                )
        if "explore" in stages:
            step("activity_tables", activity_stage, str(data), day)
            step("explore_30_days", explore_stage, str(data), day)
    if "demo" in stages:
        step("demo", demo_stage, str(work))
    if "s3_commit" in stages:
        figures = step("s3_commit_one_day", s3_commit_stage, str(demo_logs(work, 20_000, days=1)))
        if not figures.get("skipped"):
            print(
                f"    lease take+release {figures['lease_take_release_ms_median']} ms (median), "
                f"commit of {figures['records']:,} events in {figures['stages']} stages {figures['seconds']} s",
                flush=True,
            )
    if "flows" in stages:
        flows = flow_logs(work, args.flow_records)
        flow_bytes = sum(p.stat().st_size for p in flows.rglob("*.log.gz"))
        results["flows_input"] = {
            "folder": str(flows),
            "records": args.flow_records,
            "compressed_mb": round(flow_bytes / 2**20, 1),
        }
        floor = _median_step(step, args.repeat, "flows_pyarrow_csv_floor", flows_floor_stage, str(flows))
        results["stages"]["flows_pyarrow_csv_floor"] = floor
        _rates(floor, flow_bytes)
        for workers in args.workers:
            target = work / f"flows-store-{workers}"

            def fresh_ingest(logs: str, target: Path = target, workers: int = workers) -> dict[str, Any]:
                shutil.rmtree(target, ignore_errors=True)  # each run into a fresh store
                return flows_ingest_stage(logs, str(target), workers)

            figures = _median_step(
                step, args.repeat, f"flows_ingest_{workers}_workers", fresh_ingest, str(flows)
            )
            results["stages"][f"flows_ingest_{workers}_workers"] = figures
            _rates(figures, flow_bytes)
            if floor.get("records_per_s") and figures.get("records_per_s"):
                results.setdefault("speedup", {})[f"flows_{workers}_workers_vs_floor"] = round(
                    figures["records_per_s"] / floor["records_per_s"], 2
                )
            shutil.rmtree(target, ignore_errors=True)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    return results


def _median_step(
    step: Callable[..., dict[str, Any]],
    repeat: int,
    name: str,
    work_fn: Callable[..., dict[str, Any]],
    *args: Any,
) -> dict[str, Any]:
    """``repeat`` runs of a stage, the median one (by wall seconds) kept as its figures, every run's seconds
    beside it: on a shared machine one run says little."""
    runs = [step(name, work_fn, *args) for _ in range(max(repeat, 1))]
    figures = sorted(runs, key=lambda r: r.get("seconds", float("inf")))[len(runs) // 2]
    if len(runs) > 1:
        figures["runs_seconds"] = [r.get("seconds") for r in runs]
    return figures


def _rates(figures: dict[str, Any], input_bytes: int | None) -> None:
    if figures.get("seconds") and figures.get("records"):
        figures["records_per_s"] = round(figures["records"] / figures["seconds"])
        if figures.get("cpu_seconds"):  # what the machine's load does not change much: CPU per record
            figures["cpu_s_per_million"] = round(figures["cpu_seconds"] / figures["records"] * 1e6, 2)
        if input_bytes:
            figures["mb_per_s"] = round(input_bytes / 2**20 / figures["seconds"], 1)


def _last_day(data: Path) -> str | None:
    from trailguard.store.events import EventStore

    dates = EventStore(data).dates() if data.exists() else []
    return dates[-1] if dates else None


def table(results: dict[str, Any]) -> str:
    rows = [("stage", "seconds", "cpu s", "records", "records/s", "MB/s", "peak RSS MB (largest / tree)")]
    for name, r in results.get("stages", {}).items():
        if r.get("skipped"):
            rows.append(
                (name, r["skipped"], "", "", "", "", r.get("detail", "").strip().splitlines()[-1][:80])
            )
            continue
        peak = f"{r.get('peak_rss_mb')}" + (
            f" (children {r['peak_rss_worker_mb']})" if r.get("peak_rss_worker_mb") else ""
        )
        count = r.get("records") or r.get("rows")
        rows.append(
            (
                name,
                f"{r['seconds']:.2f}",
                f"{r['cpu_seconds']:.1f}",
                f"{count:,}" if count else "",
                f"{r['records_per_s']:,}" if r.get("records_per_s") else "",
                str(r.get("mb_per_s", "")),
                f"{peak} / {r['peak_rss_tree_mb']}",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    parse = results.get("stages", {}).get("dag_parse", {}).get("files", {})
    lines += [f"DAG parse {name}: {seconds:.3f} s" for name, seconds in parse.items()]
    lines += [
        f"{name}: {r['hours']} account/region/hours and {r['log_files']} log files in {r['seconds']:.2f} s: "
        f"{r['hours_per_s']} hours/s, {r['log_files_per_s']} log files/s "
        f"({'hashes from the manifest' if r['hashes_from_manifest'] else 'every log file read and hashed'}); "
        f"{r['statuses']}"
        for name, r in results.get("stages", {}).items()
        if name.startswith("integrity") and "hours" in r
    ]
    lines += [
        f"speed-up {name.replace('_', ' ')}: {value}x" for name, value in results.get("speedup", {}).items()
    ]
    lines += [
        f"{name}: {r['cpu_s_per_million']} CPU s per million records (imports included)"
        for name, r in results.get("stages", {}).items()
        if name.startswith("flows_") and r.get("cpu_s_per_million")
    ]
    machine = results["machine"]
    line = f"{machine['cpus']} CPUs, load average at start {', '.join(f'{x:.1f}' for x in machine['load_average_at_start'])}"
    if machine.get("load_average_at_end"):
        line += f", at the end {', '.join(f'{x:.1f}' for x in machine['load_average_at_end'])}"
    if "input" in results:
        line += (
            f"; input {results['input']['files']} files, {results['input']['compressed_mb']} MB compressed"
        )
    lines.append(line)
    if "org" in results:
        org = results["org"]
        lines.append(
            f"organisation: {org['days']} days of {org['events_per_day']:,} events, then {org['scored_day']} "
            f"with {org['scored_day_events']:,} events (scored and reported; training until the day before)"
        )
    lines += [
        f"{name}: {len(r['runs_seconds'])} runs, "
        + ", ".join(f"{x:.2f}" for x in r["runs_seconds"])
        + " s (the median run above)"
        for name, r in results.get("stages", {}).items()
        if r.get("runs_seconds")
    ]
    imports = [
        f"{name} {r['import_seconds']:.2f}s"
        for name, r in results.get("stages", {}).items()
        if "import_seconds" in r
    ]
    if imports:
        lines.append("imports, not in the seconds above: " + ", ".join(imports))
    for name, r in results.get("stages", {}).items():
        if r.get("timings"):
            lines.append(f"{name}: " + ", ".join(f"{k} {v:.1f}s" for k, v in r["timings"].items()))
        for uc, figures in (r.get("use_cases") or {}).items():
            lines.append(
                f"train {uc}: {figures['seconds']:.1f}s, {figures['rows']:,} events, "
                f"{figures['train_rows']:,} training rows, best {figures['best']}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events to generate and ingest (default 1,000,000)"
    )
    parser.add_argument(
        "--naive-events", type=int, default=100_000, help="records for the naive baseline (default 100,000)"
    )
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="ingest runs per worker count, the median one reported (default 1; a shared machine's "
        "speed varies from minute to minute)",
    )
    parser.add_argument(
        "--only", default=None, help=f"comma-separated stages (default all: {','.join(STAGES)})"
    )
    parser.add_argument(
        "--org-events-per-day",
        type=int,
        default=100_000,
        help="the organisation's ordinary day for features/train/score/report (default 100,000)",
    )
    parser.add_argument(
        "--org-days", type=int, default=30, help="its ordinary days before the scored day (default 30)"
    )
    parser.add_argument(
        "--flow-records",
        type=int,
        default=2_000_000,
        help="VPC flow records for the flows stages (default 2,000,000)",
    )
    parser.add_argument(
        "--work", default=str(PROJECT / "bench" / "work"), help="cached logs and stores (default bench/work)"
    )
    parser.add_argument(
        "--results", default=str(PROJECT / "bench" / "results.json"), help="where the figures go"
    )
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",")]
    os.environ.setdefault("AIRFLOW_HOME", str(Path(args.work).resolve() / "airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    import trailguard.ingest  # noqa: F401  (imported once here: the children time ingesting, not importing)

    results = run(args)
    Path(args.results).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results))
    print(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
