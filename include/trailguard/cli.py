"""The ``trailguard`` command line: the same library functions the DAG tasks call."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from trailguard.settings import Settings, load_settings

log = logging.getLogger("trailguard")

EPILOG = """\
Environment: TRAILGUARD_DATA (data root, default ./data), MLFLOW_TRACKING_URI (default: a SQLite store
inside the data root). See .env.example for the rest.

Typical first run:
  trailguard demo                       # generate demo CloudTrail logs and run the whole pipeline
  trailguard ingest --source ./logs     # then point it at your own logs (folder, s3://, cloudwatch://)
"""


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: use YYYY-MM-DD (UTC)") from None


def _progress_bar(desc: str, unit: str) -> tuple[Callable[..., None], Callable[[], None]]:
    """A tqdm bar on stderr when it is a terminal; silent otherwise (logs, CI)."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, disable=None, file=sys.stderr, dynamic_ncols=True)
    last = [0, 0]

    def update(count: int, records: int | None = None) -> None:
        bar.update(count - last[0])
        last[0] = count
        if records is not None:
            bar.set_postfix(records=f"{records:,}", refresh=False)

    return update, bar.close


# -- commands -------------------------------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.ingest import ingest
    from trailguard.sources import open_source
    from trailguard.store import EventStore

    if args.start and args.end and args.start > args.end:
        print(f"--start {args.start} is after --end {args.end}", file=sys.stderr)
        return 2
    try:
        source = open_source(args.source)
    except (ValueError, FileNotFoundError) as exc:
        print(f"cannot read the source: {exc}", file=sys.stderr)
        return 2
    update, close = _progress_bar("ingest", "objects")
    try:
        summary = ingest(
            source,
            EventStore(settings.data_path),
            start=args.start,
            end=args.end,
            batch_records=settings.ingest_batch_records,
            progress=update,
        )
    finally:
        close()
    _emit(args, summary.as_dict(), summary.lines())
    if summary.objects == 0:
        print("no objects found: check --source (and --start/--end, which filter by delivery date)", file=sys.stderr)
    elif summary.objects_quarantined or summary.quarantined:
        print(f"rejected files and records are kept with their reasons under {settings.data_path / 'quarantine'}", file=sys.stderr)
    return 0


def cmd_demo_data(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard import demo_data

    update, close = _progress_bar("generate", "records")
    try:
        summary = demo_data.generate(
            args.out,
            end=args.end,
            days=args.days,
            events=args.events,
            seed=args.seed,
            bad_files=not args.no_bad_files,
            progress=lambda n: update(n),
        )
    finally:
        close()
    lines = [
        f"wrote {summary.files} files, {summary.records} records ({summary.start} .. {summary.end}) to {summary.out_dir}",
        f"{summary.attacks} attack events (ground truth: {summary.ground_truth}), {summary.bad_files} bad files on purpose",
    ]
    _emit(args, {k: str(v) for k, v in vars(summary).items()}, lines)
    return 0


def _emit(args: argparse.Namespace, payload: dict, lines: Sequence[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, default=str, indent=2))
    else:
        print("\n".join(lines))


# -- parser ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trailguard",
        description="TrailGuard: AWS CloudTrail ingestion, data quality and ML risk scoring.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", help="data root (overrides TRAILGUARD_DATA; default ./data)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (debug level)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "ingest",
        help="read CloudTrail logs into the event store",
        description="Read CloudTrail log files (or CloudWatch log events) into the partitioned event store. "
        "Objects already ingested are skipped; events already stored (same eventID) are counted as "
        "duplicates; unreadable files and records are quarantined with their reason.",
        epilog="Sources:\n  ./folder                 .json / .json.gz files at any depth\n"
        "  s3://bucket/prefix       a CloudTrail bucket (credentials: the standard AWS chain)\n"
        "  cloudwatch://log-group   a log group CloudTrail delivers to",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--source", required=True, help="folder, s3://bucket/prefix or cloudwatch://log-group")
    p.add_argument("--start", type=_date, help="first delivery date to read (YYYY-MM-DD, UTC)")
    p.add_argument("--end", type=_date, help="last delivery date to read (YYYY-MM-DD, UTC)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "demo-data",
        help="write realistic demo CloudTrail logs in the S3 layout",
        description="Write deterministic demo CloudTrail log files exactly as AWS delivers them to S3 "
        "(AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/...json.gz), with labelled attack scenarios "
        "and their ground truth (ground_truth.csv).",
    )
    p.add_argument("--out", type=Path, default=Path("demo/logs"), help="output folder (default demo/logs)")
    p.add_argument("--end", type=_date, default=None, help="last day (default 2026-11-20)")
    p.add_argument("--days", type=int, default=30, help="number of days (default 30)")
    p.add_argument("--events", type=int, default=None, help="total events (default about 1,500 a day)")
    p.add_argument("--seed", type=int, default=7, help="random seed (same seed, same files)")
    p.add_argument("--no-bad-files", action="store_true", help="leave out the deliberately broken files")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_demo_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    settings = load_settings(data_root=args.data)
    try:
        return int(args.func(args, settings) or 0)
    except KeyboardInterrupt:
        print("interrupted: what was written so far is complete and consistent; rerun to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
