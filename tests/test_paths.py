"""kmigrate.paths: the one rule for a file the project may read, and private state files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kmigrate.errors import ChangesetError, ConfigError
from kmigrate.paths import MB, create_private, inside_project, project_file, read_project_file


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "templates").mkdir(parents=True)
    (project / "templates" / "ok.j2").write_text("fine")
    (tmp_path / "secret.txt").write_text("SECRET-MARKER")
    return project


def test_a_regular_file_inside_is_read(root: Path) -> None:
    assert read_project_file(root, "templates/ok.j2", what="template", max_bytes=MB) == b"fine"
    assert (
        project_file(root, root / "templates/ok.j2", what="template", max_bytes=MB)
        == (root / "templates/ok.j2").resolve()
    )


@pytest.mark.parametrize("path", ["../secret.txt", "templates/../../secret.txt"])
def test_a_path_leading_outside_is_refused(root: Path, path: str) -> None:
    with pytest.raises(ChangesetError, match="is outside the project folder") as info:
        read_project_file(root, path, what="template", max_bytes=MB)
    assert "SECRET" not in str(info.value) and info.value.hint


def test_a_symlink_is_judged_by_where_it_points(root: Path) -> None:
    (root / "templates" / "pw.j2").symlink_to(root.parent / "secret.txt")
    with pytest.raises(ChangesetError, match="template templates/pw.j2 is outside"):
        read_project_file(root, root / "templates" / "pw.j2", what="template", max_bytes=MB)
    (root / "templates" / "alias.j2").symlink_to(root / "templates" / "ok.j2")
    assert read_project_file(root, "templates/alias.j2", what="template", max_bytes=MB) == b"fine"


def test_a_fifo_a_folder_and_a_missing_file_are_refused_without_blocking(root: Path) -> None:
    os.mkfifo(root / "templates" / "pipe.j2")
    with pytest.raises(ChangesetError, match="is a FIFO, not a regular file"):
        read_project_file(root, "templates/pipe.j2", what="template", max_bytes=MB)
    with pytest.raises(ChangesetError, match="is a folder"):
        read_project_file(root, "templates", what="template", max_bytes=MB)
    with pytest.raises(ChangesetError, match="not found"):
        read_project_file(root, "templates/gone.j2", what="template", max_bytes=MB)


def test_a_file_over_the_size_bound_is_refused(root: Path) -> None:
    (root / "big.yaml").write_bytes(b"x" * 2048)
    with pytest.raises(ChangesetError, match="larger than the limit") as info:
        read_project_file(root, "big.yaml", what="changeset", max_bytes=1024)
    assert "file_mb" in (info.value.hint or "")
    assert len(read_project_file(root, "big.yaml", what="changeset", max_bytes=2048)) == 2048


def test_the_callers_error_class_and_location_are_used(root: Path) -> None:
    with pytest.raises(ConfigError, match="the sandbox file /dev/zero is outside"):
        inside_project(root, "/dev/zero", what="the sandbox file", error=ConfigError)


def test_folders(root: Path) -> None:
    def folder(path: str) -> Path:
        return inside_project(root, path, what="the changesets folder", kind="folder")

    assert folder("changesets") == (root / "changesets").resolve()
    assert folder("not-yet") == (root / "not-yet").resolve()  # made later
    with pytest.raises(ChangesetError, match="the changesets folder ../../../../etc is outside"):
        folder("../../../../etc")
    with pytest.raises(ChangesetError, match="the changesets folder templates/ok.j2 is not a folder"):
        folder("templates/ok.j2")


def test_a_file_named_by_the_config_must_not_be_a_folder(root: Path) -> None:
    def sandbox_file(path: str) -> Path:
        return inside_project(root, path, what="the sandbox file", error=ConfigError, kind="file")

    assert sandbox_file("templates/ok.j2") == (root / "templates" / "ok.j2").resolve()
    assert sandbox_file("store.db") == (root / "store.db").resolve()  # written later
    with pytest.raises(ConfigError, match="the sandbox file templates is a folder"):
        sandbox_file("templates")


def test_state_files_are_private(tmp_path: Path) -> None:
    target = tmp_path / ".kmigrate" / "sandbox.db"
    create_private(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    target.write_bytes(b"kept")
    create_private(target)  # an existing file is left as it is
    assert target.read_bytes() == b"kept"
