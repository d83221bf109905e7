"""Attachments: FILE field values written as the paths of project files.

Uploads cannot be in a bulk request (``POST /k/v1/file.json`` is multipart and answers a
temporary fileKey), so planning and sending split the work:

- the planner turns each path into a *file marker* ``{"$file": PATH, "sha256": DIGEST}`` (the
  file read under the project's path rule, ``kmigrate.paths``): the batch hash covers the
  file's content, so a file changed after its batch was applied is drift like any other edit;
- the runner, right before it sends a batch that holds markers, uploads each file (checking
  it still has the digest planned) and puts ``{"fileKey": KEY}`` in the marker's place.

A FILE field is one the apps' definitions say is FILE (then a path string, or a list of them,
as from a CSV cell ``contract`` or ``contract[]``, is enough), or any field whose value is
written as a list of ``{"$file": PATH}`` mappings (no definitions needed). Table columns are
not handled: their values are sent as written.

A fileKey of an upload is good for one record only, and only until a record takes it, so
keys are not reused: every send of a batch uploads its files again (the journal logs each
batch's uploads, event ``uploaded``, for the record). The batch's state is what prevents a
second upload: an applied batch is never sent again, so never uploads again; a run that
stops between an upload and its bulk leaves a temporary upload nobody uses, which Kintone
drops after three days (harmless).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import ChangesetError, Location
from .paths import MB, read_project_file

FILE_MARKER = "$file"
# kmigrate's bound on one attachment (read whole into memory to upload); Kintone's is 1 GB.
MAX_ATTACHMENT_BYTES = 100 * MB
WHAT = "attachment"

FileFields = Mapping[int, frozenset[str]]  # app id -> the codes of its FILE fields


def file_fields(schemas: Mapping[int, Any]) -> dict[int, frozenset[str]]:
    """App id -> its FILE fields' codes, from the apps' definitions (``AppSchema``)."""
    return {
        app_id: frozenset(code for code, f in schema.fields.items() if f.type == "FILE")
        for app_id, schema in schemas.items()
    }


def is_file_marker(value: Any) -> bool:
    return isinstance(value, Mapping) and FILE_MARKER in value and set(value) <= {FILE_MARKER, "sha256"}


def file_markers(value: Any) -> Iterator[Mapping[str, Any]]:
    """Every file marker in ``value`` (a payload), in order."""
    if is_file_marker(value):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from file_markers(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from file_markers(v)


def written_files(value: Any, is_file: bool) -> list[Any] | None:
    """The items of a FILE value written with paths (``is_file``: the definitions say FILE, so
    a path string or a list of them will do), or None when ``value`` is not written so."""
    inner = value["value"] if isinstance(value, dict) and set(value) == {"value"} else value
    if is_file and isinstance(inner, str):
        inner = [inner]
    if not isinstance(inner, list) or not inner:
        return None
    if not is_file and not all(is_file_marker(v) for v in inner):
        return None
    return inner


def _path_of(item: Any, is_file: bool) -> str | None:
    if isinstance(item, str) and is_file:
        return item
    if is_file_marker(item) and isinstance(item[FILE_MARKER], str):
        return str(item[FILE_MARKER])
    return None


def as_uploaded(value: Any) -> Any:
    """A FILE value written with paths as it will be sent (each path a fileKey), for checking
    it against the field's rules before any file is uploaded; other values as they are."""
    items = written_files(value, True)
    if items is None:
        return value
    return {"value": [{"fileKey": p} if (p := _path_of(item, True)) is not None else item for item in items]}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class AttachmentPaths:
    """The planner's half: FILE values written as paths -> file markers, each file read once."""

    def __init__(self, root: Path, fields: FileFields):
        self.root = root
        self.fields = fields
        self._digests: dict[str, str] = {}
        self.used = False  # a marker was made: the plan has attachments to upload

    def codes(self, app_id: int) -> frozenset[str]:
        return self.fields.get(app_id, frozenset())

    def mark(
        self, record: dict[str, Any], codes: frozenset[str], where: Callable[[], Location]
    ) -> dict[str, Any]:
        """``record`` with each FILE value written as paths in marker form (the same dict when
        it has none). ``where`` locates the record for a message."""
        out: dict[str, Any] | None = None
        for code, value in record.items():
            marked = self._field(code in codes, value, where)
            if marked is not None:
                out = dict(record) if out is None else out
                out[code] = marked
        return record if out is None else out

    def _field(self, is_file: bool, value: Any, where: Callable[[], Location]) -> dict[str, Any] | None:
        items = written_files(value, is_file)
        if items is None:
            return None
        marked: list[Any] = []
        for item in items:
            path = _path_of(item, is_file)
            if path is not None:
                marked.append(self._marker(path, where))
            elif isinstance(item, dict) and set(item) == {"fileKey"}:
                marked.append(item)  # a fileKey written as Kintone takes it: sent as written
            else:
                raise ChangesetError(
                    f"a FILE value holds {item!r}: write the path of a project file, e.g. data/files/C-001.pdf",
                    location=where(),
                    hint='write a list of paths (`contract: [data/files/C-001.pdf]`) or [{"$file": PATH}]',
                )
        return {"value": marked}

    def _marker(self, path: str, where: Callable[[], Location]) -> dict[str, str]:
        written = str(PurePosixPath(path))
        digest = self._digests.get(written)
        if digest is None:
            data = read_project_file(
                self.root, written, what=WHAT, max_bytes=MAX_ATTACHMENT_BYTES, location=where()
            )
            digest = self._digests[written] = _digest(data)
        self.used = True
        return {FILE_MARKER: written, "sha256": digest}


def upload_files(
    requests: list[dict[str, Any]],
    root: Path,
    upload: Callable[[str, bytes], str],
    where: Location,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """``requests`` with every file marker replaced by ``{"fileKey": KEY}``, each file uploaded
    with ``upload(name, content) -> fileKey`` (one upload per marker: a key is good once), and
    the uploads made (path, sha256, fileKey), for the journal's event log. A file whose content
    is not the one planned is a ``ChangesetError`` before any upload."""
    contents: dict[str, bytes] = {}
    for marker in (m for r in requests for m in file_markers(r)):
        path = marker[FILE_MARKER]
        if path not in contents:
            data = read_project_file(root, path, what=WHAT, max_bytes=MAX_ATTACHMENT_BYTES, location=where)
            if _digest(data) != marker["sha256"]:
                raise ChangesetError(
                    f"attachment {path} changed since the plan was made",
                    location=where,
                    hint="run `kmigrate apply` again: it plans with the file as it is now",
                )
            contents[path] = data

    uploads: list[dict[str, str]] = []

    def substitute(value: Any) -> Any:
        if is_file_marker(value):
            path = value[FILE_MARKER]
            key = upload(PurePosixPath(path).name, contents[path])
            uploads.append({"path": path, "sha256": value["sha256"], "fileKey": key})
            return {"fileKey": key}
        if isinstance(value, Mapping):
            return {k: substitute(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [substitute(v) for v in value]
        return value

    return [substitute(r) for r in requests], uploads
