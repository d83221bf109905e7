"""Attachments: ``POST /k/v1/file.json`` (multipart upload) and ``GET /k/v1/file.json`` (download),
and the fileKeys a FILE field takes.

As in Kintone, an upload answers a temporary fileKey that lives three days unless a record
takes it; a record that takes it holds a new, permanent key (what reads show and what a
download asks for), and keeps it on later updates that send it back. A fileKey that is neither
a live upload nor already in that field of that record is refused. Files are kept in the store.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from .calls import ApiError, invalid_param
from .store import Store, StoredFile

UPLOAD_LIFETIME = 3 * 24 * 3600.0  # seconds: Kintone keeps an unattached upload three days


@dataclass(frozen=True)
class Download:
    """A file's bytes, answered as they are instead of JSON."""

    data: bytes
    content_type: str
    name: str


def _file_not_found(key: str) -> ApiError:
    # GAIA_BL01 "The specified file (id: ...) not found." is Kintone's code for an unknown
    # fileKey (OBSERVED-3P); the HTTP status was not captured, the sandbox answers 400.
    return ApiError(400, "GAIA_BL01", f"The specified file (id: {key}) not found.")


class Files:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock

    # -- file.json -----------------------------------------------------------------------------

    def upload(self, content_type: str, body: bytes) -> dict[str, Any]:
        """A multipart/form-data body with one part named ``file`` -> ``{"fileKey": ...}``."""
        if not content_type.lower().startswith("multipart/form-data"):
            raise invalid_param("file", "Send the file as multipart/form-data with a part named file.")
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
        for part in message.iter_parts() if message.is_multipart() else ():
            if part.get_param("name", header="content-disposition") != "file":
                continue
            data = part.get_payload(decode=True)
            name = part.get_filename() or "file"
            stored = StoredFile(
                key=str(uuid.uuid4()),
                name=name,
                content_type=part.get_content_type(),
                size=len(data) if isinstance(data, bytes) else 0,
                uploaded=self.clock(),
                attached=False,
            )
            with self.store.transaction():
                self.store.drop_expired_uploads(self.clock() - UPLOAD_LIFETIME)
                self.store.put_file(stored, data if isinstance(data, bytes) else b"")
            return {"fileKey": stored.key}
        raise invalid_param("file", "Required field.")

    def download(self, params: dict[str, Any]) -> Download:
        key = params.get("fileKey")
        if not isinstance(key, str) or not key:
            raise invalid_param("fileKey", "Required field.")
        stored = self.store.get_file(key)
        data = self.store.file_data(key) if stored is not None and stored.attached else None
        if stored is None or data is None:
            # Only the keys records hold can be downloaded; an upload's key cannot (as in Kintone).
            raise _file_not_found(key)
        return Download(data, stored.content_type, stored.name)

    # -- FILE fields ---------------------------------------------------------------------------

    def attach(self, sent: list[dict[str, Any]], old: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        """A FILE value as written (``[{"fileKey": ...}]``) -> the stored value: each key the
        field already holds is kept, each live upload becomes a permanent key of its own."""
        held = {entry["fileKey"]: entry for entry in old or []}
        stored: list[dict[str, Any]] = []
        for entry in sent:
            key = entry["fileKey"]
            if key in held:
                stored.append(held[key])
                continue
            upload = self.store.get_file(key)
            if upload is None or upload.attached or upload.uploaded < self.clock() - UPLOAD_LIFETIME:
                raise _file_not_found(key)
            permanent = secrets.token_hex(24).upper()
            self.store.copy_file(key, permanent)
            stored.append(
                {
                    "contentType": upload.content_type,
                    "fileKey": permanent,
                    "name": upload.name,
                    "size": str(upload.size),
                }
            )
        return stored
