"""Plans, pure: loaded changesets (+ the journal's state) -> a ``Plan`` of bulk requests.

``build_plan`` compiles each changeset (``compile``, which feeds the ``packing`` rules), keeps
its batches, or, for a changeset too big to hold (``Limits.eager_records``), a ``BatchSequence``
that reads them back, as compiled and hashed, from a compressed spool.
"""

from __future__ import annotations

import marshal
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..attachments import AttachmentPaths, FileFields
from ..changeset import AddOp, LoadedChangeset, UpsertOp
from ..changeset_files import version_key
from ..config import Environment
from ..errors import ChangesetError, Location
from ..plan import (
    APPLIED,
    PARTIAL,
    PENDING,
    SENT,
    Batch,
    Call,
    ChangesetPlan,
    EncodedPayload,
    JournaledChangeset,
    OperationSummary,
    Plan,
    Segment,
)
from .compile import compile_changeset, uses_attachments
from .packing import Bulk, Limits
from .refs import RefRegistry


def build_plan(
    changesets: Sequence[LoadedChangeset],
    env: Environment,
    journal: Mapping[str, JournaledChangeset] | None = None,
    *,
    limits: Limits = Limits(),
    files: FileFields | None = None,
) -> Plan:
    """Compile ``changesets`` for ``env``; ``journal`` (version -> what it knows) sets states.

    Pass every changeset, applied ones included: a later changeset may use their refs, whose
    sizes come from their operations. Raises ``ChangesetError`` for what only planning can
    see (unknown aliases, refs to nothing or used before they exist, repeated ref names,
    malformed record ids or keys). ``files`` (app id -> FILE field codes, from the apps'
    definitions) says which values are attachments written as paths (``kmigrate.attachments``).
    """
    ordered = sorted(changesets, key=lambda c: version_key(c.version))
    seen: dict[str, LoadedChangeset] = {}
    for cs in ordered:
        if cs.version in seen:
            raise ChangesetError(
                f"version {cs.version} is used twice: {seen[cs.version].path} and {cs.path}",
                location=Location(file=cs.path),
                hint="give one of them a new version number",
            )
        seen[cs.version] = cs
    refs = RefRegistry()
    paths = AttachmentPaths(env.root, files or {})
    plans = tuple(
        _plan_changeset(cs, env, refs, (journal or {}).get(cs.version), limits, paths) for cs in ordered
    )
    return Plan(environment=env.name, changesets=plans, root=env.root, attachments=paths.used)


def _plan_changeset(
    cs: LoadedChangeset,
    env: Environment,
    refs: RefRegistry,
    journaled: JournaledChangeset | None,
    limits: Limits,
    paths: AttachmentPaths,
) -> ChangesetPlan:
    states = dict(journaled.batch_states) if journaled is not None else {}
    if (
        journaled is not None
        and journaled.fully_applied
        and (journaled.source_checksum, journaled.rendered_checksum)
        == (cs.source_checksum, cs.rendered_checksum)
        and not uses_attachments(cs, env, paths)  # their files are not in the checksums: compile
    ):
        return _applied_changeset(cs, env, refs, states, limits, paths)
    summaries: list[OperationSummary] = []
    kept: list[Batch] = []
    spool: _Spool | None = None  # past ``Limits.eager_records``: batches kept compressed
    hashes: list[str] = []  # per batch, computed once here, on the content that is sent
    records = 0
    for index, bulk in enumerate(compile_changeset(cs, env, refs, limits, summaries, paths)):
        batch = _batch(index, bulk, states)
        hashes.append(batch.hash)
        if spool is not None:
            spool.add(batch)
            continue
        records += batch.record_count
        kept.append(batch)
        if records > limits.eager_records:
            spool = _Spool.of(kept)
            kept = []
    count = len(hashes)
    if spool is None:
        batches: Sequence[Batch] = tuple(kept)
    else:
        batches = BatchSequence(spool.replay(hashes, states), count, states, hashes=hashes)
    state = _changeset_state([states.get(i, PENDING) for i in range(count)])
    return _changeset_plan(cs, state, tuple(summaries), batches)


class _Spool:
    """A big changeset's batches as compiled once, each kept as zlib-compressed ``marshal``
    bytes of its calls' JSON (``Batch.parts``: what its hash is computed on and what is sent)
    and what the runner reads of a call without looking inside (method, api, app, segments,
    refs); a 2,000-record bulk of CSV rows: about 20 KB. Reading them back (to send, to print)
    neither reads the data files nor compiles nor hashes nor encodes again, and makes no record
    dict: each payload is an ``EncodedPayload``, decoded only if something looks inside it."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []

    @classmethod
    def of(cls, batches: Sequence[Batch]) -> _Spool:
        spool = cls()
        for batch in batches:
            spool.add(batch)
        return spool

    def add(self, batch: Batch) -> None:
        calls = [
            (c.method, c.api, _app(c), [(g.operation, g.start, g.count, g.ref) for g in c.segments], c.refs)
            for c in batch.calls
        ]
        self.blobs.append(zlib.compress(marshal.dumps((batch.guest_space_id, calls, batch.parts)), 1))

    def replay(self, hashes: Sequence[str], states: Mapping[int, str]) -> Callable[[], Iterator[Batch]]:
        def batches() -> Iterator[Batch]:
            for index, blob in enumerate(self.blobs):
                guest, calls, parts = marshal.loads(zlib.decompress(blob))
                batch = Batch(
                    index=index,
                    calls=tuple(
                        Call(
                            method, api, EncodedPayload(part, app), tuple(Segment(*g) for g in segments), refs
                        )
                        for (method, api, app, segments, refs), part in zip(calls, parts, strict=True)
                    ),
                    guest_space_id=guest,
                    state=states.get(index, PENDING),
                )
                # Batch.hash and the JSON it was computed on, as made from this content
                batch.__dict__["hash"], batch.__dict__["parts"] = hashes[index], parts
                yield batch

        return batches


def _app(call: Call) -> int | None:
    """The app a call's payload names, if it is an app id (a planned call's always is)."""
    app = call.payload.get("app")
    return app if type(app) is int else None


def _applied_changeset(
    cs: LoadedChangeset,
    env: Environment,
    refs: RefRegistry,
    states: Mapping[int, str],
    limits: Limits,
    paths: AttachmentPaths,
) -> ChangesetPlan:
    """A changeset the journal holds as applied, unchanged: nothing to compile, nothing to send.

    Only its refs matter to later changesets, and their sizes are its record counts. Its
    batches are compiled again only if someone reads them (``plan --format json``), so a
    no-op re-run over a long history costs no planning.
    """
    for index, operation in enumerate(cs.operations):
        body = operation.body
        if isinstance(body, (AddOp, UpsertOp)) and body.ref:
            refs.define(body.ref, f"{cs.id} operation {index + 1}", cs.location(index))
            refs.count[body.ref] = body.record_count or 0  # a loaded data file is counted
            refs.open = None  # defined and complete: later operations may use it
    final_refs = refs.snapshot()

    def recompile() -> Iterator[Batch]:
        for index, bulk in enumerate(compile_changeset(cs, env, final_refs.replay(), limits, [], paths)):
            yield _batch(index, bulk, states)

    return _changeset_plan(cs, APPLIED, (), BatchSequence(recompile, len(states), states))


def _changeset_plan(
    cs: LoadedChangeset, state: str, operations: tuple[OperationSummary, ...], batches: Sequence[Batch]
) -> ChangesetPlan:
    return ChangesetPlan(
        version=cs.version,
        name=cs.name,
        path=cs.path,
        source_checksum=cs.source_checksum,
        rendered_checksum=cs.rendered_checksum,
        description=cs.description,
        state=state,
        operations=operations,
        batches=batches,
    )


def _batch(index: int, bulk: Bulk, states: Mapping[int, str]) -> Batch:
    calls, guest = bulk
    return Batch(index=index, calls=calls, guest_space_id=guest, state=states.get(index, PENDING))


class BatchSequence(Sequence[Batch]):
    """A changeset's batches, made again each time they are read: read back from the spool
    (``_Spool``), or, for an applied changeset, compiled again if someone asks for them.

    For changesets too big to hold every payload at once (``Limits.eager_records``). The
    length and each batch's state are known without reading; iterating holds one bulk at a
    time; ``seq[i]`` reads up to batch i (linear time: iterate rather than index in a loop).
    """

    def __init__(
        self,
        compile_batches: Callable[[], Iterator[Batch]],
        count: int,
        states: Mapping[int, str],
        indexes: Sequence[int] | None = None,
        hashes: Sequence[str] | None = None,
    ):
        self._compile = compile_batches
        self._count = count
        self._states = states
        self._indexes = range(count) if indexes is None else indexes
        self._hashes = hashes

    @property
    def hashes(self) -> list[str] | None:
        """Each batch's hash as planned, without compiling again (None: not known)."""
        return None if self._hashes is None else [self._hashes[i] for i in self._indexes]

    def __len__(self) -> int:
        return len(self._indexes)

    def __iter__(self) -> Iterator[Batch]:
        wanted = set(self._indexes)
        last = max(self._indexes, default=-1)
        for i, batch in enumerate(self._compile()):
            if i in wanted:
                yield batch
            if i >= last:
                return

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return BatchSequence(self._compile, self._count, self._states, self._indexes[index], self._hashes)
        target = self._indexes[index]
        for batch in self.where(lambda i: i == target):
            return batch
        raise IndexError(index)

    @property
    def states(self) -> list[str]:
        return [self._states.get(i, PENDING) for i in self._indexes]

    def where(self, keep: Callable[[int], bool]) -> BatchSequence:
        """The batches whose index passes ``keep``, still lazy."""
        return BatchSequence(
            self._compile, self._count, self._states, [i for i in self._indexes if keep(i)], self._hashes
        )

    def pending(self) -> BatchSequence:
        return self.where(lambda i: self._states.get(i, PENDING) != APPLIED)


def _changeset_state(states: Sequence[str]) -> str:
    if states and all(s == APPLIED for s in states):
        return APPLIED
    # A batch still `sent` may have been applied: the changeset is not simply pending.
    if any(s in (APPLIED, SENT) for s in states):
        return PARTIAL
    return PENDING
