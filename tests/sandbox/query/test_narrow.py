"""What an index may narrow a query to (kmigrate.sandbox.query.narrow): ``$id`` bounds and sets,
the values a text field must equal, an order by ``$id``; never a record the query selects left out."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kmigrate.sandbox.query.narrow import ID_MAX, ID_MIN, Narrowing

from .common import q, rec


def test_id_comparisons_give_inclusive_integer_bounds():
    assert (q("$id > 5").narrowing.id_low, q("$id > 5").narrowing.id_high) == (6, ID_MAX)
    assert q("$id >= 5.5").narrowing.id_low == 6
    assert q("$id > 5.5").narrowing.id_low == 6
    assert q("$id < 5").narrowing.id_high == 4
    assert q("$id < 5.5").narrowing.id_high == 5
    assert q("$id <= 5.5").narrowing.id_high == 5
    both = q('$id > 2 and title = "a" and $id <= 9').narrowing
    assert (both.id_low, both.id_high) == (3, 9)
    assert q("$id > 9 and $id < 3").narrowing.empty


def test_id_sets_keep_only_whole_numbers_and_intersect():
    assert q('$id in (3, 1, 2.5, "")').narrowing.ids == frozenset({1, 3})
    assert q("$id = 7").narrowing.ids == frozenset({7})
    assert q("$id in (1, 2, 3) and $id in (3, 4)").narrowing.ids == frozenset({3})
    assert q("$id in (2.5)").narrowing.empty
    assert q("$id in (1, 9) and $id > 4").narrowing.allowed_ids() == [9]


def test_numbers_beyond_sqlites_integers_are_clamped():
    assert q("$id < 99999999999999999999").narrowing == Narrowing()
    assert q("$id > 99999999999999999999").narrowing.empty
    assert q("$id < -99999999999999999999").narrowing.empty
    assert q("$id in (99999999999999999999)").narrowing.empty
    assert q("$id >= -99999999999999999999").narrowing.id_low == ID_MIN


def test_text_keys_from_equality_and_in_but_not_the_empty_value():
    assert q('title = "a"').narrowing.keys == (("title", frozenset({"a"})),)
    assert q('title in ("a", "b") and url in ("u")').narrowing.keys == (
        ("title", frozenset({"a", "b"})),
        ("url", frozenset({"u"})),
    )
    assert q('title in ("a", "b") and title = "b"').narrowing.keys == (("title", frozenset({"b"})),)
    assert q('title in ("a", "")').narrowing.keys == ()  # the empty value is in no index
    assert q('title != "a"').narrowing.keys == ()
    assert q('title like "a"').narrowing.keys == ()
    assert q('name in ("a")').narrowing.keys == ()  # a table's column


def test_only_the_top_level_and_narrows():
    assert q('$id = 1 or title = "a"').narrowing == Narrowing()
    nested = q('($id > 3 and (title = "a" and $id < 9)) and (amount > 1 or $id = 2)').narrowing
    assert (nested.id_low, nested.id_high, nested.ids) == (4, 8, None)
    assert nested.keys == (("title", frozenset({"a"})),)
    assert q("$id != 3 and $id not in (4)").narrowing == Narrowing()


def test_id_order():
    assert q("").narrowing.id_order is True  # Kintone's default: $id desc
    assert q("order by $id asc").narrowing.id_order is False
    assert q("order by $id desc, title asc").narrowing.id_order is True
    assert q("order by title asc").narrowing.id_order is None
    assert q("order by title asc, $id desc").narrowing.id_order is None


# ---- the property: a narrowing never leaves out a record the query selects ------------------

_NUMBER_TEXTS = [
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "2.5",
    "11.5",
    "-1",
    "99999999999999999999",
    "-99999999999999999999",
]
_NUMBERS = st.sampled_from([*_NUMBER_TEXTS, '""'])
_TEXTS = st.sampled_from(['"a"', '"b"', '"c"', '""'])


def _comparison() -> st.SearchStrategy[str]:
    ids = st.one_of(
        st.tuples(st.sampled_from(["=", "!=", ">", ">=", "<", "<="]), _NUMBERS)
        .filter(lambda t: t[1] != '""' or t[0] in ("=", "!="))
        .map(lambda t: f"$id {t[0]} {t[1]}"),
        st.tuples(st.sampled_from(["in", "not in"]), st.lists(_NUMBERS, min_size=1, max_size=3)).map(
            lambda t: f"$id {t[0]} ({', '.join(t[1])})"
        ),
    )
    texts = st.one_of(
        st.tuples(st.sampled_from(["title", "url"]), st.sampled_from(["=", "!="]), _TEXTS).map(" ".join),
        st.tuples(
            st.sampled_from(["title", "url"]),
            st.sampled_from(["in", "not in"]),
            st.lists(_TEXTS, min_size=1, max_size=3),
        ).map(lambda t: f"{t[0]} {t[1]} ({', '.join(t[2])})"),
        st.sampled_from(['title like "a"', "amount > 2"]),
    )
    return st.one_of(ids, texts)


_CONDITIONS = st.recursive(
    _comparison(),
    lambda inner: st.tuples(st.lists(inner, min_size=2, max_size=3), st.sampled_from([" and ", " or "])).map(
        lambda t: "(" + t[1].join(t[0]) + ")"
    ),
    max_leaves=6,
)
# Every pair of title and url values, with amounts, ids 1..12 (a fixed set: the property varies
# the query, and each id, fraction and value meets a record it could wrongly leave out).
_RECORDS = [rec(i + 1, title="abc "[i % 4], url="ab "[i % 3].strip(), amount=str(i % 5)) for i in range(12)]
for _record in _RECORDS:
    _record["title"]["value"] = _record["title"]["value"].strip()


def _allowed(narrow: Narrowing, record: dict) -> bool:
    rid = int(record["$id"]["value"])
    if not narrow.id_low <= rid <= narrow.id_high or (narrow.ids is not None and rid not in narrow.ids):
        return False
    return all(record[code]["value"] in values for code, values in narrow.keys)


def _every_comparison() -> list[str]:
    out = [f"$id {op} {n}" for op in ("=", "!=", ">", ">=", "<", "<=") for n in _NUMBER_TEXTS]
    out += [f"$id in ({n}, 3)" for n in _NUMBER_TEXTS] + ['$id in ("")', '$id = ""']
    out += [
        f"{code} {op} {t}" for code in ("title", "url") for op in ("=", "!=") for t in ('"a"', '"c"', '""')
    ]
    return out + ['title in ("a", "b")', 'url in ("b", "")', 'title not in ("a")']


def test_no_single_comparison_leaves_out_a_record_it_selects():
    for condition in _every_comparison():
        query = q(condition)
        for record in _RECORDS:
            if query.matches(record):
                assert _allowed(query.narrowing, record), (condition, record)


@settings(max_examples=150, deadline=None)
@given(_CONDITIONS)
def test_every_record_a_query_selects_is_within_its_narrowing(condition: str):
    query = q(condition)
    for record in _RECORDS:
        if query.matches(record):
            assert _allowed(query.narrowing, record), (condition, record)
