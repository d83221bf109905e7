"""The call model (kmigrate.sandbox.calls): Kintone's error body and the parameter readers."""

from __future__ import annotations

import pytest

from kmigrate.sandbox.calls import (
    ApiError,
    bool_param,
    int_param,
    list_param,
    optional_int_param,
    optional_str_param,
    revision_param,
    str_param,
)


def refusal(call, *args, **kwargs) -> tuple[str, list[str]]:
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    err = caught.value
    assert (err.status, err.code) == (400, "CB_VA01")
    assert err.errors is not None
    ((key, entry),) = err.errors.items()
    return key, entry["messages"]


def test_the_error_body_has_kintones_keys_and_a_fresh_id():
    err = ApiError(404, "GAIA_RE01", "not found")
    first, second = err.body(), err.body()
    assert set(first) == {"code", "id", "message"} and first["id"] != second["id"]
    assert ApiError(400, "CB_VA01", "bad", {"app": {"messages": ["x"]}}).body()["errors"] == {
        "app": {"messages": ["x"]}
    }


def test_integers_from_json_or_the_query_string():
    assert int_param(3, "app") == 3 and int_param(" 12 ", "app") == 12
    assert refusal(int_param, None, "app") == ("app", ["Required field."])
    assert refusal(int_param, True, "id") == ("id", ["Enter an integer value."])
    assert refusal(int_param, "1.5", "id") == ("id", ["Enter an integer value."])
    assert refusal(int_param, 0, "app") == ("app", ["Enter 1 or more."])
    assert optional_int_param("", "size") is None and optional_int_param("7", "size") == 7


def test_revisions_minus_one_and_absent_mean_do_not_check():
    assert revision_param(None, "revision") is None and revision_param(-1, "revision") is None
    assert revision_param("4", "revision") == 4
    assert refusal(revision_param, -2, "revision") == ("revision", ["Enter -1 or more."])


def test_booleans_strings_and_lists():
    assert bool_param("TRUE", "upsert") is True and bool_param(None, "upsert") is False
    assert refusal(bool_param, "yes", "upsert") == ("upsert", ["Enter true or false."])
    assert str_param("a", "name") == "a" and optional_str_param("", "assignee") is None
    assert refusal(str_param, 5, "name") == ("name", ["Enter a string."])
    assert list_param(None, "fields", required=False) == [] and list_param([1], "ids") == [1]
    assert refusal(list_param, "1", "ids") == ("ids", ["Enter an array."])
