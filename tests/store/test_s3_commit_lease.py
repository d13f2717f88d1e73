"""Committers into one ``s3://`` data root on several machines, kept apart by the lease in the bucket
(issue 19, item 2), against a real moto server over HTTP.

Machines are processes here (``multiprocessing``, spawn: nothing shared but the bucket and the
environment). Two (and a third on the command line's path) commit overlapping and distinct batches at
once: every eventID is stored exactly once and the counts add up. A stale lease is taken over and logged,
a live one makes a committer wait (bounded, then one line naming the holder), a commit that raises
releases it, a lease lost while held stops the commit, and an endpoint that ignores conditional writes is
refused.
"""

from __future__ import annotations

import gzip
import json
import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest
from trailguard.store import lease as leases
from trailguard.store.events import EventStore
from trailguard.store.fs import as_path

from tests.ingest.test_ingest import record
from tests.store.s3 import keys_below, moto_bucket

BUCKET = "trailguard-lease"
LEASE_KEY = "_locks/commit.json"


@pytest.fixture(scope="module")
def s3(moto_server):
    with moto_bucket(moto_server, BUCKET) as client:
        yield client


def keys_under(client, prefix: str) -> list[str]:
    return keys_below(client, BUCKET, prefix)


def write_file(folder: Path, day: int, name: str, ids: list[str]) -> None:
    """One CloudTrail file delivered on 2024-07-<day> (its own account x region x day partition); an event's
    content follows from its id alone, so the same id in two files is the same event."""
    key_dir = f"AWSLogs/111122223333/CloudTrail/us-east-1/2024/07/{day:02d}"
    records = [record(i, time=f"2024-07-{day:02d}T{int(i.rsplit('-', 1)[1]) % 24:02d}:00:00Z") for i in ids]
    path = folder / key_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps({"Records": records}).encode(), compresslevel=1))


def stored(store: EventStore) -> list[str]:
    """Every stored eventID, once per row (a duplicate shows twice)."""
    return [i for day in store.dates() for i in store.partition_ids(day).to_pylist()]


def planted_lease(client, prefix: str, **owner) -> None:
    """A lease as another machine left it."""
    document = {"owner": "someone-else", "host": "other-host", "pid": 4242, "purpose": "a commit", **owner}
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/{LEASE_KEY}", Body=json.dumps(document).encode())


# -- the children: one "machine" each ---------------------------------------------------------------------------
def _child(kind: str, root: str, arg: str, ready, go, out: str) -> None:
    """Commit the given stages (``commit``) or ingest a folder (``ingest``) into ``root`` once ``go`` is
    set (``ready`` says it is at the start line); the summary goes to ``out``, the log to ``out``.log."""
    import tempfile

    tempfile.tempdir = out + ".tmp"  # a machine of its own: nothing local is shared (no lock file in /tmp)
    os.makedirs(tempfile.tempdir)
    logging.basicConfig(filename=out + ".log", level=logging.WARNING, format="%(process)d %(message)s")
    from trailguard.ingest.ingestion import commit, ingest
    from trailguard.ingest.sources import LocalFolderSource

    store = EventStore(as_path(root), lease_seconds=5, lease_wait_seconds=300)
    ready.set()
    go.wait(120)
    if kind == "commit":
        summary = commit(store, json.loads(arg), source="stages")
    else:
        summary = ingest(LocalFolderSource(Path(arg)), store)
    Path(out).write_text(json.dumps(summary.as_dict()))


@pytest.mark.slow
def test_concurrent_commits_into_one_s3_store_store_every_event_id_once(s3, tmp_path):
    """Two workers commit the stages of two overlapping sources at once (the DAG's commit_events on two
    machines), and a third ingests a third overlapping source on the command line's path (the lease held
    for its whole run): every eventID exactly once, the counts add up, the lease is gone afterwards."""
    from trailguard.ingest.ingestion import plan_partitions, stage
    from trailguard.ingest.sources import LocalFolderSource

    root = f"s3://{BUCKET}/race"
    folders = {name: tmp_path / name for name in ("a", "b", "c")}
    expected: set[str] = set()
    records = 0
    for n, (name, folder) in enumerate(folders.items()):
        for day in (29, 30, 31):
            for f in range(6):
                own = [f"{name}-{day}-{f}-{i}" for i in range(150)]  # only this source has them
                shared = [f"shared-{day}-{f}-{i}" for i in range(100)]  # every source has them
                pair = [f"pair-{n % 2}-{day}-{f}-{i}" for i in range(50)]  # a and c share these
                ids = own + shared + pair
                write_file(folder, day, f"{name}-{f}.json.gz", ids)
                write_file(folder, day, f"same-key-{f}.json.gz", shared)  # one key in every source
                expected.update(ids)
                records += len(ids) + len(shared)
    store = EventStore(as_path(root))
    stages: dict[str, list[str]] = {}
    for name in ("a", "b"):
        source = LocalFolderSource(folders[name])
        stages[name] = []
        for i, partition in enumerate(plan_partitions(source, store)):
            stage(source, store, partition, f"{name}-{i}")
            stages[name].append(f"{name}-{i}")
    assert len(stages["a"]) == len(stages["b"]) == 3 and store.dates() == []

    context = multiprocessing.get_context("spawn")
    go = context.Event()
    jobs = {
        "a": ("commit", json.dumps(stages["a"])),
        "b": ("commit", json.dumps(stages["b"])),
        "c": ("ingest", str(folders["c"])),
    }
    outs = {name: str(tmp_path / f"{name}.json") for name in jobs}
    ready = {name: context.Event() for name in jobs}
    children = {
        name: context.Process(target=_child, args=(kind, root, arg, ready[name], go, outs[name]))
        for name, (kind, arg) in jobs.items()
    }
    for child in children.values():
        child.start()
    assert all(event.wait(120) for event in ready.values()), "a child did not start"
    go.set()  # all three at once
    for name, child in children.items():
        child.join(300)
        assert child.exitcode == 0, f"{name}: {Path(outs[name] + '.log').read_text()}"

    summaries = {name: json.loads(Path(out).read_text()) for name, out in outs.items()}
    logs = "".join(Path(out + ".log").read_text() for out in outs.values())
    ids = stored(store)
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} eventIDs stored twice"
    assert set(ids) == expected
    assert sum(s["new"] for s in summaries.values()) == len(expected)
    assert sum(s["new"] + s["duplicates"] for s in summaries.values()) == records
    assert all(s["quarantined"] == 0 for s in summaries.values())
    assert store.read_conflicts().num_rows == 0
    manifest = store.read_manifest()
    assert sum(manifest.column("records_new").to_pylist()) == len(expected)
    assert set(manifest.column("status").to_pylist()) == {"ingested"}
    assert "waiting for the commit lease" in logs, "the three did not contend: the test proves nothing"
    assert "took over" not in logs
    assert not [k for k in keys_under(s3, "race") if k.startswith(("_locks/", "staging/"))]


def _hold_and_hang(root: str, ready) -> None:
    """Take the commit lease, say so, and hang (until killed)."""
    store = EventStore(as_path(root), lease_seconds=2)
    with store.commit_lock("a commit killed with -9"):
        ready.set()
        time.sleep(600)


@pytest.mark.slow
def test_a_committer_killed_with_9_frees_the_store_within_its_lease(s3, caplog):
    """A machine lost mid-commit (``kill -9``: no release, no more renewals): the next committer waits
    while the lease is live, then takes it over (saying from whom) and commits."""
    import signal

    root = f"s3://{BUCKET}/killed"
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold_and_hang, args=(root, ready))
    holder.start()
    assert ready.wait(60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="trailguard.store.lease"):
        appended, _ = store_one(EventStore(as_path(root), lease_seconds=2, lease_wait_seconds=60), "k-1")
    waited = time.monotonic() - started
    messages = [r.getMessage() for r in caplog.records]
    assert appended == 1 and 1.0 < waited < 30
    assert any(f"waiting for the commit lease of {root}" in m and f"pid {holder.pid}" in m for m in messages)
    took = [m for m in messages if "took over" in m]
    assert len(took) == 1 and f"pid {holder.pid}" in took[0] and "a commit killed with -9" in took[0]
    assert not [k for k in keys_under(s3, "killed") if k.startswith("_locks/")]


# -- a lease held, stale, released, lost -----------------------------------------------------------------------
def test_a_lease_is_renewed_while_held_and_gone_after(s3):
    root = as_path(f"s3://{BUCKET}/renewed")
    with leases.held(root, "commit", "renewal test", lease_seconds=1.5) as held:
        first = s3.head_object(Bucket=BUCKET, Key=f"renewed/{LEASE_KEY}")["ETag"]
        document = json.loads(s3.get_object(Bucket=BUCKET, Key=f"renewed/{LEASE_KEY}")["Body"].read())
        assert (document["pid"], document["purpose"], document["owner"]) == (
            os.getpid(),
            "renewal test",
            held.token,
        )
        time.sleep(2.2)  # past the lease: the heartbeat has renewed it (every 0.5s)
        assert s3.head_object(Bucket=BUCKET, Key=f"renewed/{LEASE_KEY}")["ETag"] != first
        held.check()
    assert keys_under(s3, "renewed") == []


def test_a_stale_lease_is_taken_over_and_logged(s3, tmp_path, caplog):
    planted_lease(s3, "stale", purpose="a crashed commit", lease_seconds=1, acquired="2026-01-01T00:00:00")
    time.sleep(2.2)  # not renewed for longer than its lease (judged by the server's clock, to the second)
    store = EventStore(as_path(f"s3://{BUCKET}/stale"), lease_wait_seconds=30)
    with caplog.at_level(logging.WARNING, logger="trailguard.store.lease"):
        appended, _ = store_one(store, "stale-1")
    assert appended == 1 and stored(store) == ["stale-1"]
    took = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
    assert len(took) == 1 and "the commit lease of s3://trailguard-lease/stale" in took[0]
    assert "pid 4242 on other-host (a crashed commit, since 2026-01-01T00:00:00)" in took[0]
    assert not [k for k in keys_under(s3, "stale") if k.startswith("_locks/")]


def one_event(event_id: str):
    from trailguard.ingest import normalise

    return normalise.rows_to_table([normalise.normalise(record(event_id), "test-key")])


def store_one(store: EventStore, event_id: str):
    """Commit one event under the store's commit lock: (rows written, duplicates)."""
    with store.commit_lock("a test"):
        new, duplicates = store.append_events(one_event(event_id), run_id="t")
    return new.num_rows, duplicates


def test_a_live_lease_makes_a_committer_wait_until_it_is_released(s3, caplog):
    root = as_path(f"s3://{BUCKET}/live")
    holding = threading.Event()

    def hold() -> None:
        with leases.held(root, "commit", "another machine's commit", lease_seconds=3):
            holding.set()
            time.sleep(2.5)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(30)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="trailguard.store.lease"):
        appended, _ = store_one(EventStore(root, lease_seconds=3, lease_wait_seconds=60), "live-1")
    waited = time.monotonic() - started
    holder.join()
    assert appended == 1 and waited > 1.0
    waiting = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert len(waiting) == 1
    assert f"held by pid {os.getpid()}" in waiting[0] and "another machine's commit" in waiting[0]
    assert not any("took over" in r.getMessage() for r in caplog.records), "a live lease is not taken over"


def test_a_committer_waits_no_longer_than_the_setting_then_names_the_holder(
    s3, tmp_path, capsys, monkeypatch
):
    from trailguard.cli import main

    from tests.ingest.test_ingest import write_log

    write_log(tmp_path / "src", "a.json", [record("wait-1")])
    planted_lease(
        s3, "busy", purpose="commit manual__2026-12-02", lease_seconds=600, acquired="2026-12-02T13:00:00"
    )
    monkeypatch.setenv("TRAILGUARD_COMMIT_WAIT_SECONDS", "1.5")
    started = time.monotonic()
    code = main(["--data", f"s3://{BUCKET}/busy", "ingest", "--source", str(tmp_path / "src")])
    waited = time.monotonic() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and 1.5 <= waited < 30
    assert len(err) == 1, err
    assert err[0].startswith("trailguard ingest: the commit lease of s3://trailguard-lease/busy")
    assert "held by pid 4242 on other-host (commit manual__2026-12-02, since 2026-12-02T13:00:00)" in err[0]
    assert "waited 1.5s (TRAILGUARD_COMMIT_WAIT_SECONDS)" in err[0]
    assert EventStore(as_path(f"s3://{BUCKET}/busy")).dates() == []  # nothing written without the lease
    s3.head_object(Bucket=BUCKET, Key=f"busy/{LEASE_KEY}")  # the holder's lease is left alone


def test_the_lease_is_released_when_the_commit_raises(s3):
    from trailguard.ingest.ingestion import commit

    root = as_path(f"s3://{BUCKET}/raises")
    s3.put_object(Bucket=BUCKET, Key="raises/staging/broken/stage.json", Body=b"{not json")
    store = EventStore(root, lease_wait_seconds=0)
    with pytest.raises(ValueError):
        commit(store, ["broken"])
    assert keys_under(s3, "raises") == ["staging/broken/stage.json"]  # no lease left, the stage kept
    appended, _ = store_one(store, "after-1")  # the next commit goes in at once (it would not wait)
    assert appended == 1


def test_a_lease_lost_while_held_stops_the_commit(s3, caplog):
    store = EventStore(as_path(f"s3://{BUCKET}/lost"), lease_seconds=1.5)
    with pytest.raises(
        leases.LeaseLost, match=r"lost the commit lease .*taken over by pid 4242 on other-host"
    ):
        with store.commit_lock("a commit that stalls"):
            planted_lease(s3, "lost", purpose="the one that took it over")  # as after a takeover
            time.sleep(1.2)  # the heartbeat's next renewal finds the ETag changed
            with pytest.raises(leases.LeaseLost):
                store.append_events(one_event("lost-1"), run_id="t")
    assert stored(store) == []  # nothing written once the lease was lost
    owner = json.loads(s3.get_object(Bucket=BUCKET, Key=f"lost/{LEASE_KEY}")["Body"].read())
    assert owner["purpose"] == "the one that took it over"  # the new owner's lease is left alone


class _IgnoresConditions:
    """The real client, less the conditions: what an S3-compatible endpoint that ignores them does."""

    def __init__(self, client) -> None:
        self._client = client
        self.meta = client.meta

    def put_object(self, **kwargs):
        kwargs.pop("IfNoneMatch", None)
        kwargs.pop("IfMatch", None)
        return self._client.put_object(**kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_an_endpoint_that_ignores_conditional_writes_is_refused(s3):
    s3.create_bucket(Bucket="trailguard-no-conditions")
    root = as_path("s3://trailguard-no-conditions/x")
    with pytest.raises(leases.ConditionalWritesUnsupported, match="ignores them"):
        with leases.held(root, "commit", "probe", client=_IgnoresConditions(s3)):
            pass
    assert s3.list_objects_v2(Bucket="trailguard-no-conditions").get("KeyCount") == 0


class _LosesAnswers(_IgnoresConditions):
    """The real client, whose PUT goes through but whose answer is lost: botocore's retry of it is refused
    (412, the object now exists or its ETag changed), which is all the caller sees."""

    def put_object(self, **kwargs):
        from botocore.exceptions import ClientError

        self._client.put_object(**kwargs)
        error = {
            "Error": {"Code": "PreconditionFailed", "Message": "At least one of the preconditions failed"}
        }
        raise ClientError(error, "PutObject")


def test_a_write_whose_answer_was_lost_is_recognised_as_ours(s3, caplog):
    """A create (or renewal) that went through though its answer was lost: the lease read back holds our
    token, so it is ours: no waiting for ourselves, no lease lost."""
    root = as_path(f"s3://{BUCKET}/answers")
    with caplog.at_level(logging.WARNING, logger="trailguard.store.lease"):
        with leases.held(
            root, "commit", "lost answers", lease_seconds=1.5, wait_seconds=0, client=_LosesAnswers(s3)
        ) as held:
            time.sleep(1.2)  # two renewals, each "refused"
            held.check()
    assert keys_under(s3, "answers") == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
