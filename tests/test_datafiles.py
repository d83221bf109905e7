"""Data files (CSV, JSON, JSON lines) streamed as records with their lines."""

from __future__ import annotations

from kmigrate.datafiles import DataFile


def test_json_and_json_lines_records_stream_with_lines(tmp_path):
    (tmp_path / "a.json").write_text('[\n  {"id": 1, "t": "a"},\n\n  {"id": 2,\n   "t": "b"}\n]\n')
    (tmp_path / "a.jsonl").write_text('{"t": "a"}\n\n{"t": "b"}\n')
    assert list(DataFile(tmp_path / "a.json", "a.json")) == [
        (2, {"id": 1, "t": "a"}),
        (4, {"id": 2, "t": "b"}),
    ]
    assert list(DataFile(tmp_path / "a.jsonl", "a.jsonl")) == [(1, {"t": "a"}), (3, {"t": "b"})]
    (tmp_path / "e.json").write_text("[]")
    assert list(DataFile(tmp_path / "e.json", "e.json")) == []
