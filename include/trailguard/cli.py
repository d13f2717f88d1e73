"""The ``trailguard`` command line: the same library functions the DAG tasks call."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from trailguard.store.settings import ConfigError, Settings, load_settings
from trailguard.store.text import sanitise

log = logging.getLogger("trailguard")

FEEDBACK_HINT = (
    "Tell TrailGuard where it was wrong: trigger the Airflow DAG record_analyst_label with the event's ID "
    'and your risk score, or run `trailguard label EVENT_ID SCORE --verdict benign --note "why"`.'
)

EPILOG = """\
Environment: TRAILGUARD_DATA (data root: a folder or s3://bucket/prefix, default ./data),
MLFLOW_TRACKING_URI (default: a SQLite store inside a local data root; required with an S3 one).
See .env.example for the rest.

Typical first run:
  trailguard demo                       # generate demo CloudTrail logs and run the whole pipeline
  trailguard ingest --source ./logs     # then point it at your own logs (folder, s3://, cloudwatch://)
"""


def printable(value: object) -> str:
    """Text for the terminal: file names and field values come from the input (an escape sequence would
    clear the screen or retitle it): anything not printable is shown as an escape."""
    return sanitise(str(value), unsafe="escape")


FIRST_YEAR, LAST_YEAR = 1970, 2100  # the event times the store keeps (ingest.normalise)


def _date(text: str) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{printable(repr(text))} is not a date: use YYYY-MM-DD (UTC)"
        ) from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise argparse.ArgumentTypeError(
            f"{text} is outside {FIRST_YEAR}-{LAST_YEAR}: no CloudTrail event is stored there"
        )
    return day


def _ingest_workers(asked: int | None, configured: int) -> int:
    """Worker processes for a command-line ingest: --workers, else TRAILGUARD_INGEST_WORKERS when set, else
    one per CPU (a person at a terminal wants the machine's cores; an Airflow task keeps the setting's
    default of 1, its parallelism being mapped tasks). 0 or less means one per CPU."""
    if asked is None:
        asked = configured if os.environ.get("TRAILGUARD_INGEST_WORKERS", "").strip() else 0
    return asked if asked > 0 else os.cpu_count() or 1


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
    from trailguard.ingest.ingestion import ingest, keep_apart
    from trailguard.ingest.limits import IngestLimits
    from trailguard.ingest.sources import open_source
    from trailguard.store.events import EventStore

    if args.start and args.end and args.start > args.end:
        print(f"--start {args.start} is after --end {args.end}", file=sys.stderr)
        return 2
    if getattr(args, "kind", "cloudtrail") == "flows":
        return _ingest_flows(args, settings)
    try:
        source = open_source(args.source, follow_links=args.follow_links)
        keep_apart(source, EventStore(settings.data_path))
    except (ValueError, FileNotFoundError) as exc:
        print(printable(f"cannot read the source: {exc}"), file=sys.stderr)
        return 2
    update, close = _progress_bar("ingest", "objects")
    try:
        summary = ingest(
            source,
            EventStore(settings.data_path),
            start=args.start,
            end=args.end,
            batch_records=settings.ingest_batch_records,
            workers=_ingest_workers(args.workers, settings.ingest_workers),
            progress=update,
            limits=IngestLimits.from_settings(settings),
        )
    finally:
        close()
    _emit(args, summary.as_dict(), summary.lines())
    if summary.objects == 0:
        print(
            "no objects found: check --source (and --start/--end, which filter by delivery date)",
            file=sys.stderr,
        )
    elif summary.objects_quarantined or summary.quarantined:
        print(
            f"rejected files and records are kept with their reasons under {settings.data_path / 'quarantine'}",
            file=sys.stderr,
        )
    return 0


def cmd_repair(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.ingest.ingestion import repair_day
    from trailguard.ingest.limits import IngestLimits
    from trailguard.ingest.sources import open_source
    from trailguard.store.events import EventStore

    result = repair_day(
        EventStore(settings.data_path),
        args.date,
        source=open_source(args.source) if args.source else None,
        open_source=open_source,
        workers=_ingest_workers(args.workers, settings.ingest_workers),
        limits=IngestLimits.from_settings(settings),
    )
    _emit(
        args,
        {
            "day": result.day,
            "damaged_files": result.damaged_files,
            "repaired": result.repaired,
            "objects": result.objects,
            "missing": result.missing,
        },
        result.lines(),
    )
    return 0 if result.repaired else 1


def _ingest_flows(args: argparse.Namespace, settings: Settings) -> int:
    """``ingest --kind flows``: VPC Flow Log files into ``flows/date=D/``."""
    from trailguard.flows.ingestion import ingest_flows
    from trailguard.flows.logs import FlowLimits
    from trailguard.flows.sources import open_flow_source

    try:
        source = open_flow_source(args.source, log_format=settings.flow_log_format)
    except (ValueError, FileNotFoundError) as exc:
        print(f"cannot read the source: {exc}", file=sys.stderr)
        return 2
    update, close = _progress_bar("ingest flows", "objects")
    try:
        summary = ingest_flows(
            source,
            settings.data_path,
            start=args.start,
            end=args.end,
            batch_records=max(settings.ingest_batch_records, 1),
            workers=_ingest_workers(args.workers, settings.ingest_workers),
            progress=update,
            limits=FlowLimits.from_settings(settings),
        )
    finally:
        close()
    _emit(args, summary.as_dict(), summary.lines())
    pending = summary.objects_skipped - summary.objects_already_ingested
    if args.source.startswith("cloudwatch://") and pending and not summary.objects_ingested:
        print(
            f"{pending} hour(s) of the log group still receiving events: a later run reads them",
            file=sys.stderr,
        )
    elif (
        summary.objects_ingested + summary.objects_quarantined == 0 and summary.objects_already_ingested == 0
    ):
        print(
            "no flow log files found: check --source (keys .../vpcflowlogs/....log.gz or .log.parquet, or cloudwatch://log-group)",
            file=sys.stderr,
        )
    elif summary.objects_quarantined or summary.quarantined:
        print(
            f"rejected files and lines are kept with their reasons under {settings.data_path / 'quarantine' / 'flows'}",
            file=sys.stderr,
        )
    return 0


def cmd_flows(args: argparse.Namespace, settings: Settings) -> int:
    """Validate a day of flows and score it: the network detections plus the network_flow champion when
    there is one, each finding joined to its instance and role from CloudTrail (as the DAGs do)."""
    from trailguard.flows.detect import scores_dir
    from trailguard.flows.quality import validate_flows
    from trailguard.model.network import score_network_day

    document = validate_flows(settings.data_path, args.date)
    if document["critical_failed"]:
        print(
            f"flows {args.date}: data quality failed ({document['rows_in']} records); nothing scored",
            file=sys.stderr,
        )
        return 1
    findings, note = score_network_day(settings.data_path, args.date)
    path = scores_dir(settings.data_path, args.date) / "scores.parquet"
    lines = [
        f"flows {args.date}: quality {document['status']}, {document['rows_passed']} records, "
        f"{len(findings)} findings ({note}) -> {path}"
    ]
    lines += [
        f"{row.risk_score:5.0f}  {row.attack_technique or '-':<10} {row.detection:<34} "
        f"{row.instance_id or '-'} {row.role or '-'}  {row.reasons}"
        for row in findings.head(args.top_k).itertuples()
    ]
    _emit(
        args,
        {"date": str(args.date), "quality": document["status"], "findings": len(findings), "path": str(path)},
        lines,
    )
    return 0


def cmd_demo_data(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.demo import generator

    update, close = _progress_bar("generate", "records")
    try:
        summary = generator.generate(
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
    if getattr(args, "flows", False):
        from trailguard.demo.flows import demo_dates, write_flow_logs

        truth = write_flow_logs(args.out, demo_dates(summary.end, args.days), seed=args.seed)
        lines.append(
            f"VPC Flow Logs for the same days, {len(truth)} network attacks (ground truth: "
            f"{Path(args.out) / 'flows_ground_truth.csv'})"
        )
    _emit(args, {k: str(v) for k, v in vars(summary).items()}, lines)
    return 0


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.quality.gate import validate_partition
    from trailguard.store.events import EventStore

    store = EventStore(settings.data_path)
    result = validate_partition(store, args.date, allowed_lateness_hours=settings.allowed_lateness_hours)
    _emit(
        args,
        {
            "date": result.date,
            "status": result.status,
            "rows_in": result.rows_in,
            "rows_passed": result.rows_passed,
            "rows_quarantined": result.rows_quarantined,
            "result": str(result.result_path),
            "html": str(result.html_path),
        },
        result.summary_lines(),
    )
    if not args.json:
        print(f"details: {result.html_path}")
    if result.critical_failed:
        print(f"{result.date}: critical data-quality failure: this day will not be scored", file=sys.stderr)
        return 1
    from trailguard.explore.activity import write_day_activity

    write_day_activity(store, args.date)  # what `trailguard explore` and the Airflow pages read
    return 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.model.training import train
    from trailguard.report.summaries import save_training_summary
    from trailguard.store.events import EventStore

    result = train(EventStore(settings.data_path), until=args.until, history_days=args.history_days)
    save_training_summary(settings.data_path, result)
    _emit(args, result.as_dict(), result.lines())
    return 0


def cmd_score(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.model.scoring import score_day
    from trailguard.store.events import EventStore

    result = score_day(EventStore(settings.data_path), args.date, account=args.account, region=args.region)
    _emit(args, result.as_dict(), result.lines())
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.report.daily import build_report
    from trailguard.report.mail import send_report, smtp_settings_from_uri

    report = build_report(
        settings.data_path, args.date, top_k=args.top_k, min_score=args.min_score, feedback_hint=FEEDBACK_HINT
    )
    lines = list(report.lines())
    if args.send:
        recipients = [
            r.strip() for r in (args.to or ",".join(settings.report_recipients)).split(",") if r.strip()
        ]
        if not recipients:
            print("no recipients: pass --to or set TRAILGUARD_REPORT_RECIPIENTS", file=sys.stderr)
            return 2
        smtp = smtp_settings_from_uri(settings.smtp_url) if settings.smtp_url else None
        sent = send_report(
            report, smtp=smtp, recipients=recipients, sender=smtp.sender if smtp else None, force=args.force
        )
        lines.append(sent.message)
    _emit(
        args, {"date": str(args.date), "html": str(report.html_path), "events": len(report.top_events)}, lines
    )
    return 0


def cmd_notify(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.respond.destinations import parse_destinations
    from trailguard.respond.notify import notify_day

    destinations = parse_destinations(
        settings.notify_destinations, default_min_score=settings.notify_min_score
    )
    try:
        result = notify_day(
            settings.data_path,
            args.date.isoformat(),
            destinations,
            dry_run=args.dry_run,
            max_per_run=settings.notify_max_per_run,
            report_base_url=settings.report_base_url,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    _emit(args, result.as_dict(), result.lines())
    for failed in result.failed:
        print(f"{failed.destination.name}: {failed.error}", file=sys.stderr)
    return 1 if result.failed else 0


def cmd_label(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.findings.suppress import is_finding_id, label_finding
    from trailguard.model.labels import find_event, record_label
    from trailguard.store.events import EventStore

    if is_finding_id(args.event_id):
        try:
            done = label_finding(
                settings.data_path,
                args.event_id,
                args.score,
                verdict=args.verdict,
                analyst=args.analyst,
                note=args.note,
                suppress_days=args.suppress_days,
            )
        except LookupError as exc:
            print(str(exc).strip("'\""), file=sys.stderr)
            return 1
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        line = (
            f"recorded finding {args.event_id}: {done['events']} events at risk {args.score} ({args.verdict}) "
            f"by {args.analyst}"
        )
        if done["suppression"]:
            line += f"; the same principal, calls and network are suppressed until {done['until']}"
        print(line + "; the next `trailguard train` uses it")
        return 0
    if find_event(EventStore(settings.data_path), args.event_id) is None and not args.force:
        print(
            f"no event with eventID {args.event_id!r} in {settings.data_path}: check the ID "
            "(top_events.csv of the report has it), or pass --force to label it anyway",
            file=sys.stderr,
        )
        return 1
    try:
        record_label(
            settings.data_path,
            args.event_id,
            args.score,
            verdict=args.verdict,
            analyst=args.analyst,
            note=args.note,
        )
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(
        f"recorded {args.event_id}: risk {args.score} ({args.verdict}) by {args.analyst}; "
        "the next `trailguard train` uses it"
    )
    return 0


def cmd_ip_ranges(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.intel.networks import aws_ranges, refresh_aws_ranges

    if args.source:
        try:
            ranges = refresh_aws_ranges(args.source, settings.data_path)
        except (OSError, ValueError) as exc:
            print(f"{args.source}: {exc}", file=sys.stderr)
            return 1
    else:
        ranges = aws_ranges(settings.data_root)
    print(f"{ranges.label}: {ranges.count:,} ranges")
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.ingest.sources import open_source
    from trailguard.integrity.day import verify_with_settings
    from trailguard.integrity.keys import KeyFileError

    uri = args.source or settings.source
    if not uri:
        print(
            "no source to verify: give --source (the trail's bucket or a copy of it) or set TRAILGUARD_SOURCE",
            file=sys.stderr,
        )
        return 2
    if uri.startswith("cloudwatch://"):
        print(
            f"{uri}: CloudWatch Logs has no digest files; verify the trail's S3 bucket instead",
            file=sys.stderr,
        )
        return 2
    try:
        source = open_source(uri)
        result = verify_with_settings(settings, source, args.date, keys=args.keys)
    except (ValueError, FileNotFoundError, KeyFileError) as exc:
        print(f"cannot verify: {exc}", file=sys.stderr)
        return 2
    _emit(args, result.as_dict(), result.lines())
    if result.status == "tampered":
        print(
            f"{result.date}: CloudTrail evidence was removed or changed "
            f"(details: integrity/date={result.date}/result.json)",
            file=sys.stderr,
        )
        return 1
    if result.status == "unverified":
        print(
            f"{result.date}: nothing could be verified (no digest files, or no public key for them)",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.demo.runner import run_demo

    if not isinstance(settings.data_path, Path):
        raise ConfigError(
            f"trailguard demo runs on a local data root, not {settings.data_root}: use --data ./demo/data"
        )
    return run_demo(settings.data_path, Path(args.logs), events=args.events)


def cmd_investigate(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.report.investigation import InvestigationError, investigate

    if args.start and args.end and args.start > args.end:
        print(f"--from {args.start} is after --to {args.end}", file=sys.stderr)
        return 2
    if not args.verbose:  # the report has the quality summary: the terminal shows progress, not every warning
        for name in ("trailguard.quality", "great_expectations", "mlflow"):
            logging.getLogger(name).setLevel(logging.ERROR)
    data = Path(args.data) if args.data else None
    if args.data and "://" in args.data:
        print("investigate works on a local scratch data root: give --data a folder", file=sys.stderr)
        return 2
    try:
        result = investigate(
            args.source,
            settings,
            out=args.out,
            data_root=data,
            start=args.start,
            end=args.end,
            top_k=args.top_k,
            fit_models=args.train,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except InvestigationError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    _emit(
        args,
        {
            "html": str(result.html_path),
            "json": str(result.json_path),
            "events": result.events,
            "scored": result.scored,
            "days": result.days,
            "top": result.top[:10],
        },
        result.lines(),
    )
    return 0


def cmd_explore(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.explore.activity import ensure_activity
    from trailguard.explore.render import write_static
    from trailguard.explore.views import ViewError, resolve_period
    from trailguard.model.training import tracking_uri_for
    from trailguard.store.events import EventStore

    store = EventStore(settings.data_path)
    if not store.dates():
        print(
            f"no events in {settings.data_root}: run `trailguard ingest` or `trailguard demo` first",
            file=sys.stderr,
        )
        return 1
    try:
        period = resolve_period(store.root, args.start, args.end)
    except ViewError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    # days ingested before activity tables existed get theirs now (the pipeline writes them at validation)
    backfilled = ensure_activity(store, period.days)
    tracking = None
    try:
        tracking = tracking_uri_for(store.root, settings.mlflow_tracking_uri)
    except ConfigError as exc:
        log.warning("models page left empty: %s", exc)
    out = Path(args.out)
    result = write_static(store.root, out, period, tracking_uri=tracking, mlflow_ui=settings.mlflow_ui_url)
    lines = [
        f"explore {period.start} .. {period.end}: {len(result['pages'])} pages, open {out / 'index.html'}"
    ]
    if backfilled:
        lines.append(f"  activity tables written for {len(backfilled)} day(s) that had none")
    if result["missing_days"]:
        lines.append(f"  no events for {len(result['missing_days'])} day(s) of the period")
    _emit(args, {**result, "backfilled": backfilled}, lines)
    return 0


def cmd_rules(args: argparse.Namespace, settings: Settings) -> int:
    from trailguard.detect.catalogue import render_markdown, render_text

    if args.guardduty:
        from trailguard.detect import guardduty

        text = guardduty.markdown() if args.format == "markdown" else "\n".join(guardduty.text_lines()) + "\n"
    else:
        text = render_markdown() if args.format == "markdown" else render_text()
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


def _emit(args: argparse.Namespace, payload: dict, lines: Sequence[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, default=str, indent=2))
    else:
        print("\n".join(printable(line) for line in lines))


# -- parser ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trailguard",
        description="TrailGuard: AWS CloudTrail ingestion, data quality and ML risk scoring.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data", help="data root: a folder or s3://bucket/prefix (overrides TRAILGUARD_DATA; default ./data)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (debug level)")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of a failure (default: one line)"
    )
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
    p.add_argument(
        "--source", required=True, help="folder (or one file), s3://bucket/prefix or cloudwatch://log-group"
    )
    p.add_argument("--start", type=_date, help="first delivery date to read (YYYY-MM-DD, UTC)")
    p.add_argument("--end", type=_date, help="last delivery date to read (YYYY-MM-DD, UTC)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that fetch and decode (default: TRAILGUARD_INGEST_WORKERS if set, else one "
        "per CPU; 0 also means one per CPU)",
    )
    p.add_argument(
        "--follow-links",
        action="store_true",
        help="read symbolic links that stay inside the source folder (default: links are skipped)",
    )

    p.add_argument(
        "--kind",
        choices=("cloudtrail", "flows"),
        default="cloudtrail",
        help="what the source holds: CloudTrail logs (default) or VPC Flow Logs (.../vpcflowlogs/...log.gz or .log.parquet, cloudwatch://group)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "repair",
        help="read a damaged day again from its sources",
        description="A day whose stored events are damaged (an unreadable parquet file, moved to "
        "quarantine/store/date=D/) is read again from the sources the manifest recorded; events still stored "
        "are skipped as duplicates, so only the lost ones come back. Then validate, score and report the day.",
    )
    p.add_argument("--date", type=_date, required=True, help="the damaged day (YYYY-MM-DD, UTC)")
    p.add_argument("--source", default=None, help="read from here instead of the recorded source(s)")
    p.add_argument(
        "--workers", type=int, default=None, help="processes that fetch and decode (as for ingest)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser(
        "flows",
        help="validate a day of VPC flow records and run the network detections",
        description="Run the flows data-quality suite on flows/date=D/ and the network detections (SSH/RDP "
        "from the internet, scans, rejected bursts, mining pools, exfiltration, beaconing); findings are "
        "written to flows_scores/date=D/scores.parquet.",
    )
    p.add_argument("--date", required=True, type=_date, help="the day (YYYY-MM-DD, UTC)")
    p.add_argument("--top-k", type=int, default=20, help="findings to print (default 20)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_flows)

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
    p.add_argument(
        "--flows",
        action="store_true",
        help="also write VPC Flow Logs for the demo's instances, with network attacks and their ground truth",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser(
        "validate",
        help="run the data-quality suite on a day's partition",
        description="Validate one day's events with the Great Expectations suite. Rows that break a critical "
        "row-level expectation move to quarantine/date=D/ with the reason; results go to quality/date=D/ "
        "(result.json and index.html). Exits 1 on a critical failure (that day is not scored).",
    )
    p.add_argument("--date", type=_date, required=True, help="the day (YYYY-MM-DD, UTC)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "train",
        help="train the risk models, log them to MLflow, promote a better champion",
        description="Train the console-login and API-call risk models on the store's history: the paper's "
        "LinearRegression baseline and stronger candidates, each an MLflow run. The best is registered and "
        "becomes `champion` only if it beats the current champion on the held-out days.",
    )
    p.add_argument(
        "--until",
        type=_date,
        default=None,
        help="last day of training data (default: newest day in the store)",
    )
    p.add_argument("--history-days", type=int, default=30, help="days of history to train on (default 30)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "score",
        help="score a day's events with the champion models",
        description="Score one day's validated events with the `champion` models from MLflow; writes "
        "scores/date=D/part-<account>-<region>.parquet, one file per partition (rescoring replaces them).",
    )
    p.add_argument("--date", type=_date, required=True, help="the day (YYYY-MM-DD, UTC)")
    p.add_argument(
        "--account", default=None, help="score only this account's events (with --region: one partition)"
    )
    p.add_argument("--region", default=None, help="score only this region's events")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "report",
        help="build (and with --send email) the daily report",
        description="Build the daily report of the riskiest events in reports/D/ (report.html, "
        "top_events.csv, report.json, report.eml). With --send, email it through TRAILGUARD_SMTP_URL "
        "(smtp://user:password@host:port); without a mail server the .eml is kept instead.",
    )
    p.add_argument("--date", type=_date, required=True, help="the day (YYYY-MM-DD, UTC)")
    p.add_argument("--top-k", type=int, default=20, help="how many events to list (default 20)")
    p.add_argument("--min-score", type=float, default=0.0, help="leave out events below this risk score")
    p.add_argument("--send", action="store_true", help="email the report")
    p.add_argument(
        "--to", default=None, help="comma-separated recipients (default TRAILGUARD_REPORT_RECIPIENTS)"
    )
    p.add_argument("--force", action="store_true", help="send even if this report was already sent")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "notify",
        help="send the day's findings to the automation destinations (SNS, EventBridge, Lambda, Slack, webhook)",
        description="Send each of the day's findings (the report's top events) at or above a destination's "
        "min_score to every destination in TRAILGUARD_NOTIFY_DESTINATIONS, once: respond/date=D/sent.json "
        "records what went where, so a rerun sends only what is missing. Exits 1 when a destination failed.",
    )
    p.add_argument(
        "--date", type=_date, required=True, help="the day (YYYY-MM-DD, UTC); its report must exist"
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be sent; send and record nothing")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_notify)

    p = sub.add_parser(
        "label",
        help="record an analyst's risk score for an event",
        description="Append an analyst's decision to the label store (labels/). Analysts' scores win over "
        "the automatic labelling rules at the next training.",
    )
    p.add_argument(
        "event_id",
        metavar="EVENT_ID",
        help="the CloudTrail eventID, or a finding id F-... (every event of the finding; see top_events.csv)",
    )
    p.add_argument("score", metavar="SCORE", type=int, help="risk score 0 (harmless) .. 100 (an attack)")
    p.add_argument("--verdict", default="needs-review", choices=["malicious", "benign", "needs-review"])
    p.add_argument("--note", default="", help="why: what you checked, the ticket...")
    p.add_argument("--analyst", default=os.environ.get("USER", "analyst"), help="who decided (default $USER)")
    p.add_argument("--force", action="store_true", help="record it even if the event is not in the store")
    p.add_argument(
        "--suppress-days",
        type=int,
        default=None,
        metavar="DAYS",
        help="a finding marked benign with a note suppresses its pattern (principal, calls, network) "
        "this many days (default 30; 0: do not suppress)",
    )
    p.set_defaults(func=cmd_label)

    p = sub.add_parser(
        "ip-ranges",
        help="refresh AWS's IP ranges from a downloaded ip-ranges.json",
        description="TrailGuard ships a dated snapshot of AWS's published IP ranges (used to flag EC2 instance "
        "credentials used outside AWS) and works offline. Download https://ip-ranges.amazonaws.com/ip-ranges.json "
        "yourself and give it here: it is checked and kept as intel/aws-ip-ranges.json in the data root, "
        "and wins over the shipped snapshot from then on.",
    )
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="FILE",
        help="an AWS ip-ranges.json (a file or s3://...); without it, show which ranges are in use",
    )
    p.set_defaults(func=cmd_ip_ranges)

    p = sub.add_parser(
        "verify",
        help="CloudTrail log-file integrity: check a day's digest files, log file hashes and delivery gaps",
        description="Validate a day's CloudTrail digest files as AWS describes it: each digest's RSA signature "
        "(SHA256withRSA, the signature from the object's metadata, or for a folder its "
        "<digest>.metadata.json sidecar), the chain to the previous digest, and the SHA-256 of every log "
        "file it lists against what ingestion read. Also lists delivery gaps (not proof of tampering). "
        "Writes integrity/date=D/result.json. Exits 1 when evidence was removed or changed, or when "
        "nothing could be verified.",
    )
    p.add_argument("--date", type=_date, required=True, help="the delivery day (YYYY-MM-DD, UTC)")
    p.add_argument("--source", default=None, help="folder or s3://bucket/prefix (default TRAILGUARD_SOURCE)")
    p.add_argument(
        "--keys",
        default=None,
        help="folder of CloudTrail public keys (default TRAILGUARD_INTEGRITY_KEYS; "
        "without one: cloudtrail:ListPublicKeys)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "demo",
        help="the whole pipeline on generated demo data (what `make demo` runs)",
        description="Generate demo CloudTrail logs (if not there yet) and run the pipeline through the real "
        "Airflow DAGs with `airflow dags test`: ingest and validate, train, score and report the last day.",
    )
    p.add_argument("--logs", default="demo/logs", help="where the demo logs go (default demo/logs)")
    p.add_argument("--events", type=int, default=None, help="total demo events (default about 45,000)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "investigate",
        help="one-shot investigation of a folder, file or s3:// prefix of CloudTrail evidence",
        description="Ingest the evidence (CloudTrail files, NDJSON/JSONL exports, JSON arrays, lookup-events output) "
        "into a scratch data root, validate it, fit what the data allows (the cold-start scorer when there is too "
        "little for a model), score every day and write one report over the period: investigation.html (+ JSON). "
        "No Airflow, no MLflow server, no network for a local folder.",
    )
    p.add_argument(
        "source", metavar="SOURCE", help="folder, file, s3://bucket/prefix or cloudwatch://log-group"
    )
    p.add_argument(
        "--from", dest="start", type=_date, default=None, help="first event day to investigate (YYYY-MM-DD)"
    )
    p.add_argument(
        "--to", dest="end", type=_date, default=None, help="last event day to investigate (YYYY-MM-DD)"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="where the report goes (default: a new scratch folder)"
    )
    p.add_argument("--top-k", type=int, default=100, help="how many findings to list (default 100)")
    p.add_argument(
        "--train",
        action="store_true",
        help="also train models for the use cases with enough events and days (a local MLflow store in "
        "the data root; slower). Default: the cold-start scorer fitted on the evidence",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_investigate)

    p = sub.add_parser(
        "explore",
        help="the exploration dashboards (reports, activity, PCA, quality, models) as static offline HTML",
        description="Write the TrailGuard pages of the Airflow plugin as a static folder that works offline "
        "(no CDN, no script): reports, activity per category and principal, the PCA behaviour map, data "
        "quality and models. Reads the per-day activity tables (written at validation; computed here for "
        "days that have none).",
    )
    p.add_argument(
        "--from",
        dest="start",
        type=_date,
        default=None,
        help="first day (default: 6 days before --to, within the store)",
    )
    p.add_argument(
        "--to", dest="end", type=_date, default=None, help="last day (default: the store's last day)"
    )
    p.add_argument("--out", default="explore", help="the folder to write (default ./explore)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser(
        "rules",
        help="list the detection catalogue",
        description="List every detection: id, ATT&CK tactic and technique, score, test cases (firing+near "
        "misses) and title. --format markdown gives docs/detections.md (regenerate it after changing a rule: "
        "trailguard rules --format markdown --out docs/detections.md).",
    )
    p.add_argument(
        "--format", choices=["text", "markdown"], default="text", help="text table (default) or markdown"
    )
    p.add_argument("--out", type=Path, default=None, help="write to this file instead of standard output")
    p.add_argument("--guardduty", action="store_true",
                   help="the GuardDuty parity table instead: each CloudTrail-based GuardDuty finding type, what covers "
                   "it here (covered / partial / not coverable) and why")  # fmt: skip
    p.set_defaults(func=cmd_rules)
    return parser


class _Printable(logging.Filter):
    """Log lines carry file names and field values: show control characters as escapes."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = printable(record.getMessage()), None
        return True


def describe_failure(exc: BaseException) -> str:
    """An expected failure as one line: what failed, where, and what to do."""
    import errno

    where = f": {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
    if isinstance(exc, PermissionError):
        return f"permission denied{where}: TrailGuard must be able to write there (check the owner and mode)"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"disk full{where}: free space on that disk and rerun (what was written before is complete)"
    kind = type(exc).__name__
    module = type(exc).__module__.split(".")[0]
    lines = str(exc).strip().splitlines() or [kind]
    text = lines[0][:500]
    if module == "smtplib" or (isinstance(exc, ConnectionError) and "mail" in text.lower()):
        return f"mail server: {text}"
    if module == "mlflow":
        return f"MLflow: {text} (check MLFLOW_TRACKING_URI)"
    if module == "trailguard" or isinstance(exc, (ValueError, LookupError)):  # our own errors say it all
        return text
    if isinstance(exc, OSError):
        return f"{exc.strerror or text}{where}" if exc.strerror else f"{kind}: {text}"
    return f"{kind}: {text} (unexpected: `trailguard --debug ...` shows where)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Printable())
    try:
        settings = load_settings(data_root=args.data)
        return int(args.func(args, settings) or 0)
    except ConfigError as exc:
        print(printable(f"configuration: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: what was written so far is complete and consistent; rerun to continue",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # an expected failure is one line; --debug shows where it came from
        if args.debug:
            raise
        print(printable(f"trailguard {args.command}: {describe_failure(exc)}"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
