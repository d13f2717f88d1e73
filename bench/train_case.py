"""One training of the bench's training cases, in a fresh interpreter so that its peak memory is its own
(a forked child starts at its parent's size): ``bench/run.py`` runs it and reads the JSON it prints.

    python bench/train_case.py train DATA --tracking-uri sqlite:///x.db [--sampling stream|full]
    python bench/train_case.py evaluate DATA --tracking-uri A --tracking-uri B --days D1,D2,...

``train`` prints the training's figures with ``vm_hwm_mb`` (the kernel's high-water mark of this
process's resident memory, /proc/self/status VmHWM) and ``seconds``. ``evaluate`` scores every event of
the given (held-out) days with the champion of each tracking store, unsampled, and prints each one's
average precision and precision@20 for the high-risk targets (target >= 70) per use case.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any


def vm_hwm_mb() -> float:
    """This process's peak resident memory in MB, as the kernel counts it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def train_case(data: str, tracking_uri: str, sampling: str, until: str | None) -> dict[str, Any]:
    from datetime import date

    from trailguard.model.training import train
    from trailguard.store.events import EventStore

    started = time.perf_counter()
    result = train(
        EventStore(Path(data)),
        tracking_uri=tracking_uri,
        sampling=sampling,
        until=date.fromisoformat(until) if until else None,
    )
    seconds = time.perf_counter() - started
    use_cases = {}
    for uc, res in result.use_cases.items():
        use_cases[uc] = {
            "rows": res.rows,
            "train_rows": res.train_rows,
            "test_rows": res.test_rows,
            "test_sample_rows": res.test_sample_rows,
            "test_days": res.test_days,
            "best": res.best,
            "skipped": res.skipped,
            "seconds": round(res.seconds, 1),
            "average_precision": {n: c.average_precision for n, c in res.candidates.items()},
            "precision_at_20": {n: c.precision_at_20 for n, c in res.candidates.items()},
        }
    return {
        "sampling": sampling,
        "seconds": round(seconds, 1),
        "vm_hwm_mb": vm_hwm_mb(),
        "process_cpu_seconds": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
        "timings": {k: round(v, 1) for k, v in result.timings.items()},
        "use_cases": use_cases,
    }


def evaluate(data: str, tracking_uris: list[str], days: list[str]) -> dict[str, Any]:
    """Every event of ``days`` scored by each store's champion: the held-out figures without sampling."""
    import mlflow
    from trailguard.model.features import FEATURE_SETS
    from trailguard.model.training import HIGH_RISK, MODEL_NAMES, ranking_metrics, training_data
    from trailguard.store.events import EventStore

    frames = training_data(EventStore(Path(data)), days)
    out: dict[str, Any] = {"days": days, "stores": {}}
    for uri in tracking_uris:
        mlflow.set_tracking_uri(uri)
        figures = {}
        for uc, frame in frames.items():
            if not len(frame):
                continue
            model = mlflow.sklearn.load_model(f"models:/{MODEL_NAMES[uc]}@champion")
            pred = model.predict(frame[list(FEATURE_SETS[uc].columns)])
            metrics = ranking_metrics(
                frame["target"].to_numpy(float) >= HIGH_RISK, pred, frame["day"].to_numpy()
            )
            figures[uc] = {"events": len(frame)} | {k: round(v, 4) for k, v in metrics.items()}
        out["stores"][uri] = figures
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("train", "evaluate"))
    parser.add_argument("data", help="the data root (an ingested event store)")
    parser.add_argument("--tracking-uri", action="append", required=True)
    parser.add_argument("--sampling", default="stream", choices=("stream", "full"))
    parser.add_argument("--until", default=None, help="the last training day (default: the newest)")
    parser.add_argument("--days", default="", help="evaluate: comma-separated held-out days")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("trailguard.model.training").setLevel(logging.INFO)
    if args.command == "train":
        figures = train_case(args.data, args.tracking_uri[0], args.sampling, args.until)
    else:
        figures = evaluate(args.data, args.tracking_uri, [d for d in args.days.split(",") if d])
    print(json.dumps(figures, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
