"""Pydantic's errors of an operation as messages: no union-branch names, one problem once."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kmigrate.changeset import Operation
from kmigrate.validation_messages import BODY_FIELDS, Problem, kind_of, operation_problems


def problems_of(raw: dict) -> list[Problem]:
    with pytest.raises(ValidationError) as info:
        Operation.model_validate(raw)
    return operation_problems(info.value)


def test_an_unknown_key_names_the_known_ones_and_points_at_the_key():
    [problem] = problems_of({"delete": {"app": "orders", "ids": [1], "idz": [2]}})
    assert problem == Problem(
        "unknown key `idz` in delete; known keys: app, ids, revisions", ("delete", "idz"), None, key=True
    )
    assert "source" not in BODY_FIELDS["add"]  # set by the loader, never written


def test_a_union_that_failed_in_every_branch_says_what_was_expected():
    [problem] = problems_of({"delete": {"app": "orders", "ids": "x"}})
    assert problem.message == "`ids`: expected a list or {ref: NAME} (got 'x')"
    assert problem.path == ("delete", "ids") and not problem.key


def test_a_problem_in_a_record_names_the_record():
    [problem] = problems_of({"add": {"app": "orders", "records": [{"a": 1}, "oops"]}})
    assert problem.record == 2 and problem.path == ("add", "records", 1)
    assert problem.message.startswith("`records.1`: ")


def test_a_model_check_is_shown_at_the_operation():
    [problem] = problems_of({"add": {"app": "orders"}})
    assert problem.message == "give exactly one of `records:` (inline) or `records_from:` (a data file)"
    assert problem.path == () and problem.record is None


@pytest.mark.parametrize(
    "value, words",
    [
        (None, "nothing (null)"),
        ({}, "a mapping"),
        ([], "a list"),
        ("", "text"),
        (1, "a number"),
        (True, "true/false"),
    ],
)
def test_values_are_described_in_the_file_format_s_words(value, words):
    assert kind_of(value) == words
