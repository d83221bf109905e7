"""The query compiler (kmigrate.sandbox.query.compile) through ``parse_query``: what each condition
matches, order by, the window, and the errors found against the app's fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmigrate.sandbox.query import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_OFFSET,
    QueryError,
    parse_query,
)

from .common import FIELDS, NOW, OPTIONS, error_of, ids, q, rec, user

# --------------------------------------------------------------------------- parsing


def test_an_empty_query_matches_everything_in_id_descending_order():
    records = [rec(i) for i in (2, 10, 1)]
    for text in ("", "   "):
        query = q(text)
        assert query.has_condition is False
        assert all(query.matches(r) for r in records)
        assert [r["$id"]["value"] for r in query.sort(records)] == ["10", "2", "1"]
        assert query.limit is None and query.offset is None


def test_keywords_are_case_insensitive():
    records = [rec(1, title="a", amount="1"), rec(2, title="b", amount="2"), rec(3, title="a", amount="3")]
    query = q('title = "a" AND amount > 1 OR title In ("b") ORDER BY amount DESC LIMIT 5 OFFSET 0')
    assert ids(query, records) == [2, 3]
    assert query.order_by == (("amount", True),)
    assert (query.limit, query.offset) == (5, 0)


def test_and_binds_tighter_than_or():
    records = [rec(1, title="x", amount="1"), rec(2, title="y", amount="1"), rec(3, title="z", amount="5")]
    # x or (y and amount > 3): only 1; (x or y) and amount > 3: none
    assert ids(q('title = "x" or title = "y" and amount > 3'), records) == [1]
    assert ids(q('(title = "x" or title = "y") and amount > 3'), records) == []
    assert ids(q('amount > 3 and title = "z" or title = "x"'), records) == [1, 3]


def test_nested_parentheses():
    records = [rec(i, amount=str(i), title="even" if i % 2 == 0 else "odd") for i in range(1, 9)]
    query = q('((amount >= 2 and amount <= 5) or (amount > 7)) and (title = "even")')
    assert ids(query, records) == [2, 4, 8]


def test_string_escapes():
    records = [rec(1, title='say "hi"'), rec(2, title="back\\slash"), rec(3, title="plain")]
    assert ids(q(r'title = "say \"hi\""'), records) == [1]
    assert ids(q(r'title = "back\\slash"'), records) == [2]
    assert ids(q(r'title like "\"hi"'), records) == [1]


def test_unicode_field_codes_and_values():
    fields = {"顧客名": "SINGLE_LINE_TEXT", "文字列__1行_": "SINGLE_LINE_TEXT"}
    record = {
        "$id": {"type": "__ID__", "value": "1"},
        "顧客名": {"type": "SINGLE_LINE_TEXT", "value": "山田商事株式会社"},
    }
    assert parse_query('顧客名 like "株式会社"', fields).matches(record)
    assert parse_query('顧客名 = "山田商事株式会社" order by 文字列__1行_', fields).matches(record)


def test_limit_and_offset_in_either_order():
    assert (q("limit 10 offset 20").limit, q("limit 10 offset 20").offset) == (10, 20)
    assert (q("offset 20 limit 10").limit, q("offset 20 limit 10").offset) == (10, 20)
    assert q(f"limit {MAX_LIMIT}").limit == 500
    assert q(f"offset {MAX_OFFSET}").offset == 10_000
    assert q("offset 0").offset == 0


# --------------------------------------------------------------------------- numbers


NUMBERS = [
    rec(1, amount="10"),
    rec(2, amount="2.5"),
    rec(3, amount=""),
    rec(4, amount="-3"),
    rec(5, amount="100"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amount = 10", [1]),
        ('amount = "10"', [1]),
        ("amount = 10.0", [1]),
        ("amount != 10", [2, 3, 4, 5]),
        ("amount > 2.5", [1, 5]),
        ("amount >= 2.5", [1, 2, 5]),
        ("amount < 10", [2, 4]),
        ("amount <= 10", [1, 2, 4]),
        ("amount > -5", [1, 2, 4, 5]),
        ("amount in (10, 100)", [1, 5]),
        ('amount in ("2.50", -3)', [2, 4]),
        ("amount not in (10, 100)", [2, 3, 4]),
        ('amount = ""', [3]),
        ('amount != ""', [1, 2, 4, 5]),
        ('amount in ("")', [3]),
    ],
)
def test_number_comparisons_are_numeric(text, expected):
    assert ids(q(text), NUMBERS) == expected


def test_numbers_compare_exactly_not_as_floats():
    records = [rec(1, amount="12345678901234567890"), rec(2, amount="12345678901234567891")]
    assert ids(q("amount = 12345678901234567891"), records) == [2]
    assert ids(q("amount > 12345678901234567890"), records) == [2]


def test_record_number_id_and_revision_compare_numerically():
    records = [
        rec(9, no="APP-9"),
        rec(10, no="APP-10"),
        {**rec(11, no="11"), "$revision": {"type": "__REVISION__", "value": "3"}},
    ]
    assert ids(q("$id > 9"), records) == [10, 11]
    assert ids(q("$id in (9, 11)"), records) == [9, 11]
    assert ids(q("no >= 10"), records) == [10, 11]
    assert ids(q('no = "APP-10"'), records) == [10]
    assert ids(q("$revision = 3"), records) == [11]
    assert ids(q("$revision < 2"), records) == [9, 10]


def test_calc_fields_compare_as_numbers():
    records = [rec(1, total="1000"), rec(2, total="999.5")]
    assert ids(q("total >= 1000"), records) == [1]


# --------------------------------------------------------------------------- text


TEXTS = [
    rec(
        1,
        title="Hello World",
        memo="line one\nline two",
        body="<p>Rich <b>Text</b></p>",
        url="https://a.example",
    ),
    rec(2, title="hello", memo=" \t\n ", body="", url=""),
    rec(3, title="", memo="", body="plain", url="http://b.example"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('title = "hello"', [2]),
        ('title != "hello"', [1, 3]),
        ('title = ""', [3]),
        ('title != ""', [1, 2]),
        ('title in ("hello", "Hello World")', [1, 2]),
        ('title not in ("hello")', [1, 3]),
        ('title like "hello"', [1, 2]),
        ('title like "WORLD"', [1]),
        ('title not like "world"', [2, 3]),
        ('title like ""', [1, 2, 3]),
        ('url like "example"', [1, 3]),
        ('url = "https://a.example"', [1]),
        ('memo like "two"', [1]),
        ('memo not like "two"', [2, 3]),
        ("memo is empty", [2, 3]),
        ("memo is not empty", [1]),
        ('body like "rich"', [1]),
        ('body not like "rich"', [2, 3]),
    ],
)
def test_text_operators(text, expected):
    assert ids(q(text), TEXTS) == expected


def test_missing_field_in_a_record_reads_as_empty():
    records = [rec(1), rec(2, title="x")]
    assert ids(q('title = ""'), records) == [1]
    assert ids(q('amount in ("")'), records) == [1, 2]


# --------------------------------------------------------------------------- choices, lists, users


CHOICES = [
    rec(1, priority="High", size="S", tags=["a", "b"], colors=["red"], state="Open"),
    rec(2, priority="Low", size="M", tags=["b"], colors=[], state="Done"),
    rec(3, priority=None, size="", tags=[], colors=["red", "blue"], state="Open"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('priority in ("High")', [1]),
        ('priority in ("High", "Low")', [1, 2]),
        ('priority not in ("High")', [2, 3]),
        ('priority in ("")', [3]),
        ('priority not in ("", "High")', [2]),
        ('size in ("S", "M")', [1, 2]),
        ('tags in ("a")', [1]),
        ('tags in ("b")', [1, 2]),
        ('tags not in ("a")', [2, 3]),
        ('tags in ("")', [3]),
        ('tags not in ("")', [1, 2]),
        ('colors in ("blue", "green")', [3]),
        ('colors not in ("red")', [2]),
        ('state = "Open"', [1, 3]),
        ('state != "Open"', [2]),
        ('state in ("Done")', [2]),
        ('state not in ("Done", "Open")', []),
    ],
)
def test_choice_and_list_fields(text, expected):
    assert ids(q(text), CHOICES) == expected


def test_user_fields_match_by_login_code():
    records = [
        rec(1, owners=[user("alice"), user("bob")], creator=user("Administrator"), assignee=[user("bob")]),
        rec(2, owners=[], creator=user("carol"), assignee=[]),
    ]
    assert ids(q('owners in ("bob")'), records) == [1]
    assert ids(q('owners in ("Bob")'), records) == []  # codes, not display names
    assert ids(q('owners not in ("alice")'), records) == [2]
    assert ids(q('owners in ("")'), records) == [2]
    assert ids(q('creator in ("carol")'), records) == [2]
    assert ids(q("creator in (LOGINUSER())"), records) == [1]
    assert ids(q("creator not in (LOGINUSER())"), records) == [2]
    assert ids(q("creator in (LOGINUSER())", login_user="carol"), records) == [2]
    assert ids(q('assignee in ("bob")'), records) == [1]


def test_file_fields_match_names():
    files = [{"contentType": "text/plain", "fileKey": "k", "name": "Report.PDF", "size": "1"}]
    records = [rec(1, files=files), rec(2, files=[])]
    assert ids(q('files like "report"'), records) == [1]
    assert ids(q('files not like "report"'), records) == [2]
    assert ids(q("files is empty"), records) == [2]
    assert ids(q("files is not empty"), records) == [1]


# --------------------------------------------------------------------------- dates and times


DATES = [
    rec(1, due="2024-05-14", at="2024-05-14T23:59:00Z", start="09:00", created="2024-05-15T00:00:00Z"),
    rec(2, due="2024-05-15", at="2024-05-15T00:00:00Z", start="09:30", created="2024-05-15T10:30:00Z"),
    rec(3, due="2024-05-16", at="2024-05-15T23:59:00Z", start="18:00", created="2024-05-16T00:00:00Z"),
    rec(4, due=None, at="", start=None, created="2023-12-31T23:00:00Z"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('due = "2024-05-15"', [2]),
        ('due != "2024-05-15"', [1, 3, 4]),
        ('due > "2024-05-14"', [2, 3]),
        ('due >= "2024-05-15"', [2, 3]),
        ('due < "2024-05-15"', [1]),
        ('due <= "2024-05-15"', [1, 2]),
        ('due = ""', [4]),
        ('due != ""', [1, 2, 3]),
        # a DATETIME against a date covers the whole day
        ('at = "2024-05-15"', [2, 3]),
        ('at != "2024-05-15"', [1, 4]),
        ('at > "2024-05-14"', [2, 3]),
        ('at >= "2024-05-15"', [2, 3]),
        ('at < "2024-05-15"', [1]),
        ('at <= "2024-05-15"', [1, 2, 3]),
        ('at > "2024-05-15"', []),
        # against a datetime it compares to the minute, honouring offsets
        ('at = "2024-05-15T00:00:00Z"', [2]),
        ('at = "2024-05-15T09:00:00+09:00"', [2]),
        ('at > "2024-05-15T00:00Z"', [3]),
        ('at <= "2024-05-15T00:00:30Z"', [1, 2]),
        ('at = ""', [4]),
        ('start = "09:30"', [2]),
        ('start >= "09:30"', [2, 3]),
        ('start < "09:30"', [1]),
        ('start != "09:00"', [2, 3, 4]),
        ('created >= "2024-05-15" and created < "2024-05-16"', [1, 2]),
    ],
)
def test_date_time_and_datetime_comparisons(text, expected):
    assert ids(q(text), DATES) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("due = TODAY()", [2]),
        ("due = YESTERDAY()", [1]),
        ("due = TOMORROW()", [3]),
        ("due < TODAY()", [1]),
        ("due >= TODAY()", [2, 3]),
        ("at = TODAY()", [2, 3]),
        ("created = TODAY()", [1, 2]),
        ("created < NOW()", [1, 4]),
        ("created <= NOW()", [1, 2, 4]),
        ("created = NOW()", [2]),
        ("due = NOW()", [2]),
        ("due = FROM_TODAY(1, DAYS)", [3]),
        ("due = FROM_TODAY(-1, DAYS)", [1]),
        ("due < FROM_TODAY(-1, WEEKS)", []),
        ("due = THIS_WEEK()", [1, 2, 3]),  # Sunday 12 May .. Saturday 18 May
        ("due = THIS_WEEK(THURSDAY)", [3]),
        ("due = THIS_WEEK(TUESDAY)", [1]),
        ("due < THIS_WEEK()", []),
        ("due > LAST_WEEK()", [1, 2, 3]),
        ("due = THIS_MONTH()", [1, 2, 3]),
        ("due = THIS_MONTH(15)", [2]),
        ("due > LAST_MONTH()", [1, 2, 3]),
        ("due < NEXT_MONTH()", [1, 2, 3]),
        ("due = THIS_YEAR()", [1, 2, 3]),
        ("created = LAST_YEAR()", [4]),
        ("due = NEXT_YEAR()", []),
    ],
)
def test_date_functions_use_the_given_clock(text, expected):
    assert ids(q(text), DATES) == expected


def test_functions_are_case_insensitive_and_the_clock_zone_defines_today():
    jst = timezone(timedelta(hours=9))
    late = datetime(2024, 5, 15, 23, 30, tzinfo=jst)  # 14:30 UTC, but the 15th in Tokyo
    records = [rec(1, at="2024-05-14T15:00:00Z"), rec(2, at="2024-05-15T15:00:00Z")]
    assert ids(q("at = today()", now=late), records) == [1]
    assert ids(q("at = TODAY()", now=late.astimezone(UTC)), records) == [2]


def test_month_functions_around_month_ends():
    records = [rec(1, due="2024-02-29"), rec(2, due="2024-03-31"), rec(3, due="2024-01-31")]
    in_march = datetime(2024, 3, 31, 12, 0, tzinfo=UTC)
    assert ids(q("due = LAST_MONTH(LAST)", now=in_march), records) == [1]
    assert ids(q("due = THIS_MONTH(LAST)", now=in_march), records) == [2]
    assert ids(q("due = FROM_TODAY(-1, MONTHS)", now=in_march), records) == [1]
    assert ids(q("due = FROM_TODAY(-2, MONTHS)", now=in_march), records) == [3]
    assert ids(q("due = LAST_MONTH(31)", now=in_march), records) == [1]
    assert ids(q("due = FROM_TODAY(-1, YEARS)", now=datetime(2025, 2, 28, tzinfo=UTC)), records) == []


def test_now_defaults_to_the_current_time():
    today = datetime.now(UTC).date().isoformat()
    assert parse_query("due = TODAY()", FIELDS).matches(rec(1, due=today))


# --------------------------------------------------------------------------- tables


TABLE_RECORDS = [
    rec(1, items=[{"name": "apple", "qty": "100"}, {"name": "orange", "qty": "200"}]),
    rec(2, items=[{"name": "shared", "qty": "50"}]),
    rec(3, items=[]),
    rec(4, items=[{"name": "shared", "qty": "5"}, {"name": "apple", "qty": "1"}]),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name in ("apple")', [1, 4]),
        ("qty > 50", [1]),
        ('name like "ang"', [1]),
        # one `and` on one table: the same row must match both
        ('name in ("apple") and qty in (100)', [1]),
        ('name in ("apple") and qty in (200)', []),
        ('name in ("apple") and qty >= 1 and qty < 50', [4]),
        # in separate parentheses the rule still holds: it is one `and`
        ('(name in ("apple")) and (qty in (200))', []),
        # `or` looks at rows independently
        ('name in ("apple") or qty in (50)', [1, 2, 4]),
        # negative conditions: rows exist and none matches
        ('name not in ("shared")', [1]),
        ('name not like "app"', [2]),
    ],
)
def test_table_fields_match_when_a_row_matches(text, expected):
    assert ids(q(text), TABLE_RECORDS) == expected


def test_table_fields_without_a_table_map_are_found_in_the_record():
    query = parse_query('name in ("apple")', FIELDS, now=NOW)
    assert ids(query, TABLE_RECORDS) == [1, 4]
    # Without the map a record whose table has no rows cannot be told to hold the field, so
    # only records with rows are compared here (with the map, record 3 is left out: see above).
    with_rows = [r for r in TABLE_RECORDS if r["items"]["value"]]
    assert ids(parse_query('name not in ("shared")', FIELDS, now=NOW), with_rows) == [1]
    # without the map, a top-level field missing from a record still reads as empty
    assert parse_query('title = ""', FIELDS).matches(rec(1, items=[{"name": "x"}]))


def test_table_fields_and_top_level_fields_mix():
    records = [rec(1, title="r1", items=[{"name": "apple"}]), rec(2, title="r2", items=[{"name": "apple"}])]
    assert ids(q('title = "r1" and name in ("apple")'), records) == [1]


# --------------------------------------------------------------------------- order by, limit, offset


def values(records, code):
    return [r[code]["value"] if code in r else None for r in records]


def test_order_by_numbers_with_empty_values_first_ascending_last_descending():
    records = [rec(1, amount="10"), rec(2, amount=""), rec(3, amount="9"), rec(4, amount="100"), rec(5)]
    assert [r["$id"]["value"] for r in q("order by amount asc").sort(records)] == ["5", "2", "3", "1", "4"]
    assert [r["$id"]["value"] for r in q("order by amount desc").sort(records)] == ["4", "1", "3", "5", "2"]
    assert [r["$id"]["value"] for r in q("order by amount").sort(records)] == ["5", "2", "3", "1", "4"]


def test_order_by_several_keys():
    records = [
        rec(1, priority="High", amount="1"),
        rec(2, priority="Low", amount="3"),
        rec(3, priority="High", amount="2"),
        rec(4, priority="Low", amount="3"),
        rec(5, priority=None, amount="7"),
    ]
    ordered = q("order by priority asc, amount desc").sort(records)
    assert [r["$id"]["value"] for r in ordered] == ["5", "3", "1", "4", "2"]  # ties: $id desc
    ordered = q("order by amount desc, $id asc").sort(records)
    assert [r["$id"]["value"] for r in ordered] == ["5", "2", "4", "3", "1"]


def test_order_by_dates_times_text_and_record_number():
    records = [
        rec(1, due="2024-01-02", at="2024-01-01T10:00:00Z", start="10:00", title="b", no="APP-10"),
        rec(2, due="2023-12-31", at="2024-01-01T09:00:00+09:00", start="09:00", title="a", no="APP-9"),
        rec(3, due=None, at="", start=None, title="", no="APP-100"),
    ]
    assert [r["$id"]["value"] for r in q("order by due desc").sort(records)] == ["1", "2", "3"]
    assert [r["$id"]["value"] for r in q("order by at asc").sort(records)] == ["3", "2", "1"]
    assert [r["$id"]["value"] for r in q("order by start").sort(records)] == ["3", "2", "1"]
    assert [r["$id"]["value"] for r in q("order by title").sort(records)] == ["3", "2", "1"]
    assert [r["$id"]["value"] for r in q("order by no asc").sort(records)] == ["2", "1", "3"]
    assert [r["$id"]["value"] for r in q("order by $id asc").sort(records)] == ["1", "2", "3"]


def test_apply_filters_sorts_and_windows():
    records = [rec(i, amount=str(i)) for i in range(1, 301)]
    page = q("amount > 100 order by amount asc limit 10 offset 5").apply(records)
    assert values(page, "amount") == [str(i) for i in range(106, 116)]
    default = q("amount > 0").apply(records)
    assert len(default) == DEFAULT_LIMIT
    assert default[0]["amount"]["value"] == "300"  # $id desc without order by
    assert len(q("amount > 0").apply(records, default_limit=None)) == 300
    assert q("offset 299").apply(records) == [records[0]]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "text",
    [
        "due = UNKNOWN()",
        "due = TODAY(1)",
        "due = FROM_TODAY(1)",
        "due = FROM_TODAY(1, HOURS)",
        "due = THIS_WEEK(FUNDAY)",
        "due = THIS_MONTH(32)",
        "due = THIS_YEAR(1)",
        'amount = "ten"',
        'amount > ""',
        'due > ""',
        'due = "2024-13-01"',
        'due = "tomorrow"',
        'start = "25:00"',
        "start = TODAY()",
        "title = TODAY()",
        "title like TODAY()",
        "amount in (LOGINUSER())",
        "owners in (PRIMARY_ORGANIZATION())",
        "limit 0",
        "limit -1",
        "offset -1",
    ],
)
def test_values_functions_and_bounds_kintone_refuses_are_cb_va01(text):
    err = error_of(text)
    assert err.code == "CB_VA01"
    assert err.message == "Missing or invalid input."
    assert list(err.errors) == ["query"]
    (detail,) = err.errors["query"]["messages"]
    assert detail.startswith("The query is invalid: ")
    assert err.to_body() == {"code": "CB_VA01", "message": "Missing or invalid input.", "errors": err.errors}


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ('xyz = "a"', "xyz"),
        ('title = "a" or nope in ("b")', "nope"),
        ("order by missing desc", "missing"),
        ("$title = 1", "$title"),
    ],
)
def test_unknown_fields_are_gaia_iq11_naming_the_field(text, missing):
    err = error_of(text)
    assert err.code == "GAIA_IQ11"
    assert err.message == f"Specified field ({missing}) not found."
    assert err.errors is None
    assert err.to_body() == {"code": "GAIA_IQ11", "message": err.message}


@pytest.mark.parametrize(
    ("text", "field", "op"),
    [
        ('memo = "x"', "memo", "="),
        ('body != "x"', "body", "!="),
        ("body is empty", "body", "is"),
        ('title > "a"', "title", ">"),
        ("title is empty", "title", "is"),
        ("title is not empty", "title", "is not"),
        ('amount like "1"', "amount", "like"),
        ("amount is empty", "amount", "is"),
        ('priority = "High"', "priority", "="),
        ('priority like "H"', "priority", "like"),
        ('size != "S"', "size", "!="),
        ('tags = "a"', "tags", "="),
        ('colors != "red"', "colors", "!="),
        ('tags like "a"', "tags", "like"),
        ('owners = "alice"', "owners", "="),
        ("creator = LOGINUSER()", "creator", "="),
        ('due in ("2024-01-01")', "due", "in"),
        ('due like "2024"', "due", "like"),
        ('at not in ("2024-01-01")', "at", "not in"),
        ('start like "09"', "start", "like"),
        ('state like "Open"', "state", "like"),
        ('state > "Open"', "state", ">"),
        ('files = "a"', "files", "="),
        ('items in ("x")', "items", "in"),
    ],
)
def test_operators_a_field_type_does_not_take_are_gaia_iq03(text, field, op):
    err = error_of(text)
    assert err.code == "GAIA_IQ03"
    assert err.message == f"The operator {op} cannot be used with the field type of {field}."


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ('priority in ("High", "Urgent")', "priority", "Urgent"),
        ('priority not in ("high")', "priority", "high"),
        ('size in ("XL")', "size", "XL"),
        ('tags not in ("c")', "tags", "c"),
        ('state = "Closed"', "state", "Closed"),
        ('state in ("Open", "Gone")', "state", "Gone"),
        # the option is checked before the operator, as in Kintone
        ('size = "XL"', "size", "XL"),
    ],
)
def test_options_a_field_does_not_have_are_gaia_iq10(text, field, value):
    err = error_of(text, options=OPTIONS)
    assert err.code == "GAIA_IQ10"
    assert err.message == f'The field {field} has no option "{value}".'


def test_known_options_and_the_empty_option_pass_the_check_and_still_filter():
    records = [
        rec(1, priority="High", tags=["a"], state="Open", colors=["any"]),
        rec(2, priority=None, tags=["c"], state="Done", colors=[]),
        rec(3, priority="Low", tags=[], state="Open", colors=["red"]),
    ]
    expected = {
        'priority in ("High", "")': [1, 2],
        'tags not in ("a", "b")': [2, 3],  # an empty CHECK_BOX has neither
        'state != "Done"': [1, 3],
        'colors in ("any")': [1],  # colors has no options given: not checked
    }
    for text, matching in expected.items():
        assert ids(q(text, options=OPTIONS), records) == matching, text
    assert error_of('size = "S"', options=OPTIONS).code == "GAIA_IQ03"


@pytest.mark.parametrize("text", ['name = "apple"', "qty != 1"])
def test_equality_on_table_fields_is_gaia_iq07(text):
    err = error_of(text)
    assert err.code == "GAIA_IQ07"
    assert text.split()[0] in err.message and "in or not in" in err.message


@pytest.mark.parametrize("text", ["order by tags", "order by owners asc", "order by qty", "order by items"])
def test_unsortable_fields_in_order_by_are_refused(text):
    assert error_of(text).code == "GAIA_IQ03"


def test_limit_above_500_is_gaia_qu01():
    err = error_of("limit 501")
    assert (err.code, err.message, err.errors) == ("GAIA_QU01", "limit must be 500 or less.", None)
    assert error_of("amount > 1 order by amount limit 999 offset 0").code == "GAIA_QU01"


def test_offset_above_10000_is_gaia_qu02():
    err = error_of("offset 10001")
    assert (err.code, err.message) == ("GAIA_QU02", "offset must be 10,000 or less.")
    assert error_of("limit 10 offset 99999").code == "GAIA_QU02"


def test_the_error_reads_well_as_a_string():
    assert str(error_of('xyz = "a"')) == "GAIA_IQ11: Specified field (xyz) not found."
    text = str(error_of("limit"))
    assert text.startswith("CB_VA01: Missing or invalid input. The query is invalid: expected a number")


# --------------------------------------------------------------------------- properties

text_values = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=8)
number_values = st.one_of(
    st.just(""),
    st.integers(-1000, 1000).map(str),
    st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False, allow_infinity=False).map(str),
)
choice_values = st.sampled_from(["A", "B", "C", None])
tag_values = st.lists(st.sampled_from(["x", "y", "z"]), unique=True, max_size=3)


@st.composite
def record_lists(draw):
    count = draw(st.integers(0, 25))
    return [
        rec(
            i + 1,
            title=draw(text_values),
            amount=draw(number_values),
            priority=draw(choice_values),
            tags=draw(tag_values),
        )
        for i in range(count)
    ]


def quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(record_lists(), text_values)
def test_equal_or_not_equal_covers_every_record_with_a_value(records, v):
    query = q(f"title = {quote(v)} or title != {quote(v)}")
    assert all(query.matches(r) for r in records if r["title"]["value"] != "")
    assert ids(q(f"title = {quote(v)}"), records) == [
        int(r["$id"]["value"]) for r in records if r["title"]["value"] == v
    ]


@fast
@given(record_lists(), st.integers(-1000, 1000))
def test_number_operators_agree_with_decimal_arithmetic(records, n):
    def holds(r, op):
        raw = r["amount"]["value"]
        if raw == "":
            return op == "!="
        a = Decimal(raw)
        return {"=": a == n, "!=": a != n, "<": a < n, "<=": a <= n, ">": a > n, ">=": a >= n}[op]

    for op in ("=", "!=", "<", "<=", ">", ">="):
        query = q(f"amount {op} {n}")
        assert [query.matches(r) for r in records] == [holds(r, op) for r in records], op


@fast
@given(record_lists(), st.lists(st.sampled_from(["A", "B", "C", ""]), min_size=1, max_size=4))
def test_not_in_is_the_complement_of_in(records, options):
    listed = ", ".join(quote(o) for o in options)
    for code in ("priority", "tags"):
        inside = q(f"{code} in ({listed})")
        outside = q(f"{code} not in ({listed})")
        assert all(inside.matches(r) != outside.matches(r) for r in records)


@fast
@given(record_lists(), text_values)
def test_not_like_is_the_complement_of_like(records, needle):
    inside, outside = q(f"title like {quote(needle)}"), q(f"title not like {quote(needle)}")
    for r in records:
        assert inside.matches(r) != outside.matches(r)
        assert inside.matches(r) == (needle.lower() in r["title"]["value"].lower())


@fast
@given(record_lists(), st.integers(-50, 50), st.sampled_from(["A", "B"]), st.sampled_from(["x", "y"]))
def test_and_or_and_parentheses_follow_boolean_logic(records, n, choice, tag):
    a, b, c = f"amount > {n}", f'priority in ("{choice}")', f'tags in ("{tag}")'
    qa, qb, qc = q(a), q(b), q(c)
    for r in records:
        x, y, z = qa.matches(r), qb.matches(r), qc.matches(r)
        assert q(f"{a} or {b} and {c}").matches(r) == (x or (y and z))
        assert q(f"({a} or {b}) and {c}").matches(r) == ((x or y) and z)
        assert q(f"{a} and {b} or {c}").matches(r) == ((x and y) or z)
        assert q(f"{a} and ({b} or {c})").matches(r) == (x and (y or z))


@fast
@given(record_lists(), st.booleans(), st.booleans())
def test_order_by_is_a_sorted_permutation(records, amount_desc, title_desc):
    query = q(f"order by amount {'desc' if amount_desc else 'asc'}, title {'desc' if title_desc else 'asc'}")
    ordered = query.sort(records)
    assert sorted(map(id, ordered)) == sorted(map(id, records))

    def key(r):
        raw = r["amount"]["value"]
        return (0,) if raw == "" else (1, Decimal(raw))

    for before, after in zip(ordered, ordered[1:], strict=False):
        k1, k2 = key(before), key(after)
        assert (k1 >= k2) if amount_desc else (k1 <= k2)
        if k1 == k2:
            t1, t2 = before["title"]["value"], after["title"]["value"]
            t1k, t2k = ((0,) if not t1 else (1, t1)), ((0,) if not t2 else (1, t2))
            assert (t1k >= t2k) if title_desc else (t1k <= t2k)


@fast
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\r\n"), max_size=12))
def test_any_string_literal_round_trips_through_escaping(s):
    assert q(f"title = {quote(s)}").matches(rec(1, title=s))
    assert not q(f"title = {quote(s + 'x')}").matches(rec(1, title=s))


@fast
@given(st.text(max_size=40))
def test_arbitrary_text_either_parses_or_raises_a_query_error(text):
    try:
        q(text)
    except QueryError as err:
        assert err.code in {"CB_VA01", "GAIA_IQ11", "GAIA_IQ03", "GAIA_IQ07", "GAIA_QU01", "GAIA_QU02"}


@fast
@given(st.text(max_size=40))
def test_arbitrary_text_with_options_never_fails_otherwise(text):
    try:
        q(text, options=OPTIONS)
    except QueryError as err:
        assert err.status == 400 and err.code.startswith(("CB_", "GAIA_"))
