"""JournalApp against the in-process sandbox: markers in bulks, reads, ids, publish."""

from __future__ import annotations

import pytest

from kmigrate.client import Client
from kmigrate.errors import KintoneError
from kmigrate.remote.app import JournalApp
from kmigrate.remote.records import Markers
from kmigrate.sandbox import Sandbox

from .conftest import JOURNAL_APP
from .test_records import batch, changeset


def send(client: Client, markers: Markers, b, cs) -> list[dict]:
    return client.bulk([markers.request(cs, b, run="r1"), *b.requests()[:1]], b.guest_space_id)


def test_a_marker_goes_in_with_its_batch_and_a_resend_fails_on_it_and_rolls_back_whole(
    client: Client, sandbox: Sandbox, markers: Markers, journal_app: JournalApp
) -> None:
    b = batch(0)
    cs = changeset(b)
    results = send(client, markers, b, cs)
    assert len(sandbox.records(1)) == 2
    with pytest.raises(KintoneError) as refused:
        send(client, markers, b, cs)  # a blind resend of an applied batch
    assert refused.value.bulk_index == 0  # the marker, first in the bulk
    assert len(sandbox.records(1)) == 2  # nothing applied twice
    marker = journal_app.read_marker("0002", 0, None)
    assert marker is not None and marker.hash == b.hash and marker.ids is None
    assert marker.record_id == int(results[0]["id"])
    journal_app.write_ids(marker.record_id, None, {"new_items": [1, 2]})
    assert journal_app.read_markers()[0].ids == {"new_items": [1, 2]}
    assert journal_app.read_marker("0002", 1, None) is None


def test_markers_are_read_from_every_space_and_only_this_projects(
    client: Client, sandbox: Sandbox, markers: Markers, journal_app: JournalApp
) -> None:
    guest = batch(0, guest=3)
    client.bulk([markers.request(changeset(guest, guest=3), guest, run="r1")], 3)
    other = Markers("other-project", markers.apps)
    plain = batch(1)
    client.bulk([other.request(changeset(batch(0), plain), plain, run="r2")], None)
    found = journal_app.read_markers()
    assert [(m.key, m.guest_space_id) for m in found] == [("shop:0002:0", 3)]
    assert [m.key for m in JournalApp(client, other).read_markers()] == ["other-project:0002:1"]
    assert len(sandbox.records(91)) == 1 and len(sandbox.records(JOURNAL_APP)) == 1


def test_publish_adds_markers_in_calls_of_100(
    client: Client, sandbox: Sandbox, journal_app: JournalApp, markers: Markers
) -> None:
    before = sandbox.request_count
    records = [(None, markers.record(changeset(batch(i)), batch(i), "baseline")) for i in range(150)]
    assert journal_app.publish(records) == 150
    assert sandbox.request_count - before == 2
    assert len(journal_app.read_markers()) == 150
