"""Every command that reads state reads the target's journal: on a fresh runner (no local
journal) with a journal app, lint, validate, plan, plan --diff, status and history all see
what another runner applied, synced from the journal app first (reads only)."""

from __future__ import annotations

from pathlib import Path

from kmigrate import api
from kmigrate.sandbox import Sandbox

from .projects import write_project
from .test_apply import Recorder, apply, client_over, runner


def test_a_fresh_runners_reading_commands_see_what_another_applied(tmp_path: Path) -> None:
    store = tmp_path / "kintone.sqlite3"
    root = write_project(tmp_path / "definition", store=store)
    with Sandbox.open(root / "sandbox.yaml", store) as box:
        a_project, a_env = runner(tmp_path, "a", store)
        apply(a_project, a_env, Recorder(box))
        b_project, b_env = runner(tmp_path, "b", store)  # a fresh machine
        late = b_project.changesets_dir / "V0002__late.yaml"
        late.rename(late.with_name("V0002__later.yaml"))  # renamed after it was applied
        ctx = api.Context(b_project, b_env)

        recorder = Recorder(box)
        report = api.lint(ctx, client_over(recorder))
        (renamed,) = [f for f in report.findings if f.rule != "K900"]  # K900: not a git work tree
        assert renamed.rule == "K006" and "V0002__late" in str(renamed)  # the journal app knows the old name
        assert recorder.writes() == []

        late.with_name("V0002__later.yaml").rename(late)
        assert api.validate(ctx, client=client_over(Recorder(box))).ok
        late.write_text(late.read_text().replace("qty: 1", "qty: 2"))  # an applied changeset edited
        (drift,) = api.validate(ctx, client=client_over(Recorder(box))).errors
        assert "V0002__late" in str(drift) and "changed" in str(drift)
        late.write_text(late.read_text().replace("qty: 2", "qty: 1"))
        assert not api.plan(ctx, api.journal_state(ctx, client_over(Recorder(box)))).pending
        assert [s.state for s in api.status(ctx, client_over(Recorder(box)))] == ["applied"] * 2
        assert {e.kind for e in api.history(ctx, client=client_over(Recorder(box)))} >= {"synced"}
