"""Kintone's REST API facts that kmigrate's client side relies on (see docs/kintone-api.md).

The embedded sandbox (``kmigrate.sandbox``) keeps its own copy of these rules on purpose: it
plays the server, and a test where client and server share one mistaken constant proves less.
"""

from __future__ import annotations

MAX_BULK_REQUESTS = 20  # inner requests per bulkRequest.json
MAX_RECORDS_PER_CALL = 100  # records (or ids) per write call
MAX_READ_LIMIT = 500  # records per GET records.json
MAX_API_TOKENS = 9  # API tokens in one request
MAX_CONCURRENT_REQUESTS = 100  # per domain, every client of it together (429 GAIA_TO04 past it)
MAX_PARALLEL = 10  # bulks kmigrate keeps in flight at once at most (`apply --parallel`): well under

# The eight APIs Kintone runs inside a bulk request (kintone-api.md §1.2), as method -> names.
BULK_APIS: dict[str, frozenset[str]] = {
    "POST": frozenset({"record", "records"}),
    "PUT": frozenset({"record", "records", "record/status", "records/status", "record/assignees"}),
    "DELETE": frozenset({"records"}),
}


def is_bulk_api(method: str, name: str) -> bool:
    return name in BULK_APIS.get(method, ())


def describe_bulk_apis() -> str:
    return ", ".join(f"{m} {n}" for m, names in BULK_APIS.items() for n in sorted(names))


def api_path(name: str, guest_space_id: int | None = None) -> str:
    """``records`` -> ``/k/v1/records.json``, or ``/k/guest/12/v1/records.json`` in a guest space."""
    name = name.strip("/")
    if name.endswith(".json"):
        name = name[: -len(".json")]
    prefix = f"/k/guest/{guest_space_id}/v1/" if guest_space_id is not None else "/k/v1/"
    return f"{prefix}{name}.json"


def split_api(api: str) -> tuple[int | None, str]:
    """``/k/guest/12/v1/records.json`` -> (12, "records"); ``/k/v1/record/status.json`` -> (None, "record/status")."""
    parts = api.strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "k" and parts[1] == "v1":
        guest, rest = None, parts[2:]
    elif (
        len(parts) >= 5
        and parts[0] == "k"
        and parts[1] == "guest"
        and parts[2].isdigit()
        and parts[3] == "v1"
    ):
        guest, rest = int(parts[2]), parts[4:]
    else:
        raise ValueError(
            f"not a Kintone API path: {api!r} (expected /k/v1/NAME.json or /k/guest/ID/v1/NAME.json)"
        )
    name = "/".join(rest)
    if not name.endswith(".json"):
        raise ValueError(f"not a Kintone API path: {api!r} (it should end in .json)")
    return guest, name[: -len(".json")]
