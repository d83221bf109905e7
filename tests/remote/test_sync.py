"""pull/publish: the local journal brought up to date from the markers, and back."""

from __future__ import annotations

import sqlite_utils

from kmigrate.client import Client
from kmigrate.journal import UNKNOWN_ID, Journal
from kmigrate.plan import APPLIED, Plan
from kmigrate.remote.app import JournalApp
from kmigrate.remote.records import Markers
from kmigrate.remote.sync import publish, pull

from .test_records import batch, changeset


def memory_journal() -> Journal:
    return Journal(sqlite_utils.Database(memory=True))


def apply_with_marker(client: Client, markers: Markers, cs, b) -> list[dict]:
    return client.bulk([markers.request(cs, b, run="r1"), *b.requests()[:1]], b.guest_space_id)


def test_a_fresh_journal_learns_every_applied_batch_its_checksums_and_ids(
    client: Client, markers: Markers, journal_app: JournalApp
) -> None:
    b0, b1 = batch(0), batch(1, ref=None)
    cs = changeset(b0, b1)
    results = apply_with_marker(client, markers, cs, b0)
    journal_app.write_ids(int(results[0]["id"]), None, {"new_items": [1, 2]})
    apply_with_marker(client, markers, cs, b1)
    journal = memory_journal()
    report = pull(journal, journal_app)
    assert report.imported == [("0002", 0), ("0002", 1)] and not report.lost_ids
    state = journal.state()["0002"]
    assert state.state == APPLIED and state.batch_hashes == {0: b0.hash, 1: b1.hash}
    assert (state.source_checksum, state.rendered_checksum) == ("s" * 64, "r" * 64)
    assert journal.refs() == {"new_items": [1, 2]}
    assert [e.kind for e in journal.events()] == ["synced", "synced"]
    assert not pull(journal, journal_app).changed  # nothing new the second time


def test_a_marker_without_ids_gives_placeholders_and_a_journal_that_has_them_fills_it_in(
    client: Client, markers: Markers, journal_app: JournalApp
) -> None:
    b0 = batch(0)
    cs = changeset(b0)
    apply_with_marker(client, markers, cs, b0)
    fresh = memory_journal()
    report = pull(fresh, journal_app)
    assert report.lost_ids == [("0002", 0)]
    assert fresh.refs() == {"new_items": [UNKNOWN_ID, UNKNOWN_ID]}
    assert fresh.lost_ids() == {"new_items": [("0002", 0)]}
    # The runner that applied it knows the ids (its marker PUT was lost): it writes them.
    knowing = memory_journal()
    knowing.record_changeset(cs)
    knowing.mark_sent("0002", 0, b0.hash, None)
    knowing.mark_applied("0002", 0, [], {"new_items": [1, 2]})
    assert pull(knowing, journal_app).ids_written == 1
    assert journal_app.read_markers()[0].ids == {"new_items": [1, 2]}


def test_a_batch_in_doubt_here_is_left_for_apply_to_settle(
    client: Client, markers: Markers, journal_app: JournalApp
) -> None:
    b0 = batch(0, ref=None)
    cs = changeset(b0)
    journal = memory_journal()
    journal.record_changeset(cs)
    journal.mark_sent("0002", 0, b0.hash, None, {"probe": 1})
    apply_with_marker(client, markers, cs, b0)  # the answer was lost: still `sent` here
    assert not pull(journal, journal_app).changed
    assert journal.state()["0002"].batch_states == {0: "sent"}  # the runner reads its probe


def test_publish_adds_the_markers_of_batches_applied_without_one(
    client: Client, markers: Markers, journal_app: JournalApp
) -> None:
    b0, b1 = batch(0), batch(1, ref=None)
    cs = changeset(b0, b1)
    journal = memory_journal()
    journal.record_changeset(cs)
    journal.mark_sent("0002", 0, b0.hash, None)
    journal.mark_applied("0002", 0, [], {"new_items": [8, 9]})
    plan = Plan("prod", (cs,))
    assert publish(journal, journal_app, markers, plan, "adopt") == 1
    (marker,) = journal_app.read_markers()
    assert (marker.key, marker.ids, marker.run) == ("shop:0002:0", {"new_items": [8, 9]}, "adopt")
    assert publish(journal, journal_app, markers, plan, "adopt") == 0
