"""changesets/kmigrate.sum (kmigrate/sumfile.py): written by init/new/hash, checked by validate/plan/apply."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from click.testing import CliRunner

from kmigrate import sumfile
from kmigrate.cli import main
from kmigrate.sumfile import SumEntry

from .projects import EXAMPLE, copy_example


def run(root, *args):
    return CliRunner().invoke(main, ["-C", str(root), *args])


def test_the_repository_example_carries_an_up_to_date_sum_file():
    assert sumfile.problems_of(EXAMPLE / "changesets") == []
    text = (EXAMPLE / "changesets" / "kmigrate.sum").read_text()
    assert text == sumfile.render(sumfile.current_entries(EXAMPLE / "changesets"))


def test_an_edited_changeset_is_refused_by_validate_plan_and_apply_before_anything_is_sent(tmp_path):
    root = copy_example(tmp_path, with_sum=True)
    assert run(root, "apply").exit_code == 0
    path = root / "changesets" / "V0003__spring_cleanup.yaml"
    path.write_text(path.read_text().replace("tier: Gold}", "tier: Silver}", 1))
    for command in (["validate"], ["plan"], ["apply"], ["apply", "--dry-run"]):
        result = run(root, *command)
        assert result.exit_code == 2, (command, result.output)
        assert "kmigrate.sum" in result.output and "V0003__spring_cleanup.yaml changed" in result.output
        assert "`kmigrate hash`" in result.output
    history = run(root, "history").output
    assert history.count(" applied ") == 4  # nothing more journaled than the first apply
    fixed = run(root, "hash")
    assert fixed.exit_code == 0 and "3 changesets" in fixed.output
    # the sum agrees again; the journal then says the applied changeset drifted
    drifted = run(root, "apply")
    assert drifted.exit_code == 2 and "applied changesets changed" in drifted.output


def test_windows_line_endings_do_not_count_as_an_edit(tmp_path):
    root = copy_example(tmp_path, with_sum=True)
    path = root / "changesets" / "V0001__catalogue_and_customers.yaml"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert sumfile.problems_of(root / "changesets") == []


def test_an_added_and_a_deleted_changeset_are_named(tmp_path):
    root = copy_example(tmp_path, with_sum=True)
    (root / "changesets" / "V0002__spring_orders.yaml").unlink()
    (root / "changesets" / "V0004__late.yaml").write_text(
        "operations:\n  - delete: {app: orders, ids: [1]}\n"
    )
    result = run(root, "validate")
    assert result.exit_code == 2
    assert "V0004__late.yaml is not listed" in result.output
    assert "V0002__spring_orders.yaml is listed but its file is gone" in result.output


def test_a_version_listed_twice_is_caught(tmp_path):
    root = copy_example(tmp_path, with_sum=True)
    changesets = root / "changesets"
    # what a merge that kept both sides of kmigrate.sum leaves: two V0004 lines, a wrong total
    lines = (changesets / "kmigrate.sum").read_text().splitlines()
    lines += [f"V0004__from_alice.yaml sha256:{'a' * 64}", f"V0004__from_bob.yaml sha256:{'b' * 64}"]
    (changesets / "kmigrate.sum").write_text("\n".join(lines) + "\n")
    problems = [str(p) for p in sumfile.problems_of(changesets)]
    assert any(
        "version 4 is listed twice (V0004__from_alice.yaml on line 5, V0004__from_bob.yaml)" in p
        for p in problems
    )
    assert any("the total on line 1 does not match" in p for p in problems)
    result = run(root, "plan")
    assert result.exit_code == 2 and "listed twice" in result.output


def test_a_sum_with_conflict_markers_is_refused(tmp_path):
    root = copy_example(tmp_path, with_sum=True)
    path = root / "changesets" / "kmigrate.sum"
    path.write_text("<<<<<<< HEAD\n" + path.read_text() + "=======\n>>>>>>> theirs\n")
    result = run(root, "validate")
    assert result.exit_code == 2 and "git conflict markers" in result.output


def test_hash_rewrites_it_and_init_and_new_keep_it_current(tmp_path):
    assert run(tmp_path, "init").exit_code == 0
    changesets = tmp_path / "changesets"
    assert sumfile.problems_of(changesets) == [] and (changesets / "kmigrate.sum").is_file()
    assert run(tmp_path, "new", "second").exit_code == 0
    listed = (changesets / "kmigrate.sum").read_text()
    assert "V0002__second.yaml sha256:" in listed and sumfile.problems_of(changesets) == []
    # new refuses to bless an edit it did not make
    first = changesets / "V0001__add_customers.yaml"
    first.write_text(first.read_text() + "# edited\n")
    refused = run(tmp_path, "new", "third")
    assert refused.exit_code == 2 and "V0001__add_customers.yaml changed" in refused.output
    assert not (changesets / "V0003__third.yaml").exists()
    assert run(tmp_path, "hash").exit_code == 0
    assert sumfile.problems_of(changesets) == []
    entries = sumfile.current_entries(changesets)
    assert [e.file for e in entries] == ["V0001__add_customers.yaml", "V0002__second.yaml"]
    assert (changesets / "kmigrate.sum").read_text().splitlines()[1:] == [
        f"{e.file} sha256:{e.checksum}" for e in entries
    ]


def test_a_project_without_a_sum_file_is_not_checked(tmp_path):
    root = copy_example(tmp_path)  # the copy leaves kmigrate.sum out
    assert not (root / "changesets" / "kmigrate.sum").exists()
    assert run(root, "validate").exit_code == 0


def test_the_sum_is_the_loader_source_checksum(tmp_path):
    from kmigrate import api

    root = copy_example(tmp_path, with_sum=True)
    loaded = api.load_changesets(api.Context.load(root))
    assert [SumEntry(c.path.name, c.source_checksum) for c in loaded] == sumfile.current_entries(
        root / "changesets"
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_two_branches_adding_a_changeset_conflict_in_git(tmp_path):
    root = copy_example(tmp_path, with_sum=True)

    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=root, capture_output=True, text=True, check=False,
        )  # fmt: skip

    assert git("init", "-q", "-b", "main").returncode == 0
    git("add", "-A")
    git("commit", "-qm", "base")
    for branch, name in (("alice", "alice_import"), ("bob", "bob_cleanup")):
        git("checkout", "-q", "-b", branch, "main")
        assert run(root, "new", name).exit_code == 0
        git("add", "-A")
        git("commit", "-qm", name)
    git("checkout", "-q", "alice")
    merged = git("merge", "bob")
    assert (
        merged.returncode != 0
        and "CONFLICT (content): Merge conflict in changesets/kmigrate.sum" in merged.stdout
    )
    # and if someone resolves it by hand keeping both lines, the sum still catches it
    text = (root / "changesets" / "kmigrate.sum").read_text()
    kept = [line for line in text.splitlines() if not line.startswith(("<<<<<<<", "=======", ">>>>>>>"))]
    (root / "changesets" / "kmigrate.sum").write_text("\n".join(kept) + "\n")
    assert any("listed twice" in str(p) for p in sumfile.problems_of(root / "changesets"))
