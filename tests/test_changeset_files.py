"""Changeset files: the V<version>__<name> naming, discovery, versions, paths as shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kmigrate.changeset_files import discover, display_path, next_changeset_path, version_key, version_of
from kmigrate.errors import InputError

from .changeset_projects import errors, load

ROOT = Path("/work/project")


def test_files_are_ordered_by_version_number_and_other_files_are_left_alone(tmp_path):
    add = "operations:\n  - add: {app: orders, records: [{t: x}]}\n"
    loaded = load(
        tmp_path,
        {
            "changesets/V10__ten.yaml": add,
            "changesets/V0002__two.yml": add,
            "changesets/V1__one.yaml": add,
            "changesets/.gitkeep": "",
            "changesets/data/readme.txt": "data lives here",
        },
    )
    assert [(c.version, c.name) for c in loaded] == [("1", "one"), ("0002", "two"), ("10", "ten")]
    assert loaded[0].id == "V1__one"


def test_a_stray_file_and_a_duplicate_version_are_both_errors(tmp_path):
    add = "operations:\n  - add: {app: orders, records: [{t: x}]}\n"
    found = errors(
        tmp_path,
        {"changesets/V0001__a.yaml": add, "changesets/V01__b.yaml": add, "changesets/V0002-c.yaml": add},
    )
    assert any("V0002-c.yaml:1" in e and "not a changeset file name" in e for e in found)
    assert any("V01__b.yaml:1" in e and "duplicate version 1" in e and "V0001__a.yaml" in e for e in found)


def test_paths_are_shown_relative_to_the_root_and_outside_it_stay_absolute(tmp_path, monkeypatch):
    assert display_path(Path("/elsewhere/V1__x.yaml"), ROOT) == "/elsewhere/V1__x.yaml"
    assert display_path(ROOT / "changesets" / "V1__x.yaml", ROOT) == "changesets/V1__x.yaml"
    assert display_path("changesets/V1__x.yaml", None) == "changesets/V1__x.yaml"
    # Without a root, relative to the working directory (what the loader's messages show).
    monkeypatch.chdir(tmp_path)
    assert display_path(tmp_path / "changesets" / "V1__x.yaml") == "changesets/V1__x.yaml"
    assert display_path(tmp_path.parent / "other.yaml") == (tmp_path.parent / "other.yaml").as_posix()


def test_versions_sort_as_numbers_whatever_their_width():
    versions = ["10", "0002", "1", "20240501", "0010", "9"]
    assert sorted(versions, key=version_key) == ["1", "0002", "9", "0010", "10", "20240501"]
    assert version_key("0010") > version_key("0009") and version_key("2") < version_key("10")


@pytest.mark.parametrize("written", ["V0003__import_orders", "V0003", "0003"])
def test_a_command_names_a_changeset_by_id_or_version(written):
    assert version_of(written) == "0003"


def test_discover_names_the_missing_folder_and_how_to_make_one(tmp_path):
    found, problems = discover(tmp_path / "nope")
    assert found == []
    [problem] = problems
    assert "the changesets folder does not exist" in str(problem) and "kmigrate init" in str(problem.hint)


def test_the_next_changeset_takes_the_highest_version_plus_one_and_its_width(tmp_path):
    folder = tmp_path / "changesets"
    assert next_changeset_path(folder, "first one") == folder / "V0001__first_one.yaml"  # no folder yet
    folder.mkdir()
    (folder / "V0007__a.yaml").write_text("")
    (folder / "notes.txt").write_text("")  # a bad name: not counted, and no reason to stop
    assert next_changeset_path(folder, "b.yaml") == folder / "V0008__b.yaml"
    (folder / "V20240501__dated.yaml").write_text("")
    assert next_changeset_path(folder, " c ") == folder / "V20240502__c.yaml"


@pytest.mark.parametrize("name", ["../escape", "", "-dash", "a/b", "ok?"])
def test_the_next_changeset_refuses_a_name_that_is_not_a_plain_word(tmp_path, name):
    with pytest.raises(InputError, match="use letters, digits, _ and -"):
        next_changeset_path(tmp_path, name)
    assert os.listdir(tmp_path) == []
