"""Schema compatibility: every change kind under every mode, transitive checks, renames."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import pytest
from pyspark.sql import types as T

from pipelines.schema.compat import KINDS, Change, Finding, Verdict, Version, check, diff
from pipelines.schema.modes import MODES
from pipelines.schema.types import parse_type


def schema(text: str) -> T.StructType:
    """``struct<fields>`` from ``"fields | required paths"``: parse_type makes every field
    nullable; the paths after ``|`` (``id``, ``s.f``, ``a.element``, ``m.value``) are not."""
    fields, _, required = text.partition("|")
    wanted = {path.strip() for path in required.split(",") if path.strip()}
    parsed = parse_type(f"struct<{fields}>")
    result = _require(parsed, "", wanted)
    assert isinstance(result, T.StructType)
    assert not wanted, f"no such paths: {wanted}"
    return result


def _require(dtype: T.DataType, path: str, wanted: set[str]) -> T.DataType:
    def nullable(at: str) -> bool:
        if at in wanted:
            wanted.discard(at)
            return False
        return True

    if isinstance(dtype, T.StructType):
        return T.StructType(
            [
                T.StructField(
                    f.name,
                    _require(f.dataType, f"{path}{f.name}.", wanted),
                    nullable(f"{path}{f.name}"),
                )
                for f in dtype.fields
            ]
        )
    if isinstance(dtype, T.ArrayType):
        element = _require(dtype.elementType, f"{path}element.", wanted)
        return T.ArrayType(element, nullable(f"{path}element"))
    if isinstance(dtype, T.MapType):
        key = _require(dtype.keyType, f"{path}key.", wanted)
        value = _require(dtype.valueType, f"{path}value.", wanted)
        return T.MapType(key, value, nullable(f"{path}value"))
    return dtype


class Scenario(NamedTuple):
    name: str
    old: str  # fields | required paths
    new: str
    path: str  # the one change it makes
    kind: str
    verdicts: str  # per mode, in MODES order
    renames: tuple[tuple[str, str], ...] = ()  # (new name, old name)


# The verdict under each mode, in MODES order: "ok" is compatible, "B" breaks backward,
# "F" breaks forward, "BF" both.
#           bw   bw_t  fw   fw_t  full full_t none
ALL_OK = "  ok   ok    ok   ok    ok   ok     ok"
BREAKS_B = "B    B     ok   ok    B    B      ok"
BREAKS_F = "ok   ok    F    F     F    F      ok"
BREAKS_BF = "B   B     F    F     BF   BF     ok"

# fmt: off
SCENARIOS = [
    Scenario("add nullable column", "id:bigint | id", "id:bigint, email:string | id",
             "email", "add_nullable", ALL_OK),
    Scenario("add required column", "id:bigint", "id:bigint, email:string | email",
             "email", "add_required", BREAKS_B),
    Scenario("drop nullable column", "id:bigint, email:string", "id:bigint",
             "email", "drop_nullable", ALL_OK),
    Scenario("drop required column", "id:bigint, email:string | email", "id:bigint",
             "email", "drop_required", BREAKS_F),
    Scenario("rename", "id:bigint, postcode:string", "id:bigint, zip:string",
             "zip", "rename", BREAKS_F, renames=(("zip", "postcode"),)),
    Scenario("widen int -> bigint", "price:int", "price:bigint", "price", "widen", BREAKS_F),
    Scenario("widen tinyint -> smallint", "n:tinyint", "n:smallint", "n", "widen", BREAKS_F),
    Scenario("widen int -> double", "n:int", "n:double", "n", "widen", BREAKS_F),
    Scenario("widen float -> double", "x:float", "x:double", "x", "widen", BREAKS_F),
    Scenario("widen decimal precision up", "amount:decimal(10,2)", "amount:decimal(12,2)",
             "amount", "widen", BREAKS_F),
    Scenario("widen decimal scale and precision", "amount:decimal(10,2)", "amount:decimal(11,3)",
             "amount", "widen", BREAKS_F),
    Scenario("widen int -> decimal(10,0)", "n:int", "n:decimal(10,0)", "n", "widen", BREAKS_F),
    Scenario("widen bigint -> decimal(22,2)", "n:bigint", "n:decimal(22,2)",
             "n", "widen", BREAKS_F),
    Scenario("widen date -> timestamp", "d:date", "d:timestamp", "d", "widen", BREAKS_F),
    Scenario("widen date -> timestamp_ntz", "d:date", "d:timestamp_ntz", "d", "widen", BREAKS_F),
    Scenario("narrow bigint -> int", "price:bigint", "price:int", "price", "narrow", BREAKS_B),
    Scenario("narrow double -> float", "x:double", "x:float", "x", "narrow", BREAKS_B),
    Scenario("narrow decimal precision", "amount:decimal(12,2)", "amount:decimal(10,2)",
             "amount", "narrow", BREAKS_B),
    Scenario("narrow timestamp -> date", "d:timestamp", "d:date", "d", "narrow", BREAKS_B),
    Scenario("decimal scale down", "amount:decimal(10,2)", "amount:decimal(10,1)",
             "amount", "change_type", BREAKS_BF),
    Scenario("int -> decimal(9,0) loses digits", "n:int", "n:decimal(9,0)",
             "n", "change_type", BREAKS_BF),
    Scenario("bigint -> double loses precision", "n:bigint", "n:double",
             "n", "change_type", BREAKS_BF),
    Scenario("string -> int", "code:string", "code:int", "code", "change_type", BREAKS_BF),
    Scenario("struct -> string", "address:struct<zip:string>", "address:string",
             "address", "change_type", BREAKS_BF),
    Scenario("nullable -> required", "email:string", "email:string | email",
             "email", "make_required", BREAKS_B),
    Scenario("required -> nullable", "email:string | email", "email:string",
             "email", "make_nullable", BREAKS_F),
    Scenario("nested field added (nullable)", "a:struct<zip:string>",
             "a:struct<zip:string, city:string>", "a.city", "add_nullable", ALL_OK),
    Scenario("nested field added (required)", "a:struct<zip:string>",
             "a:struct<zip:string, city:string> | a.city", "a.city", "add_required", BREAKS_B),
    Scenario("nested field dropped (nullable)", "a:struct<zip:string, city:string>",
             "a:struct<zip:string>", "a.city", "drop_nullable", ALL_OK),
    Scenario("nested field dropped (required)", "a:struct<zip:string, city:string> | a.city",
             "a:struct<zip:string>", "a.city", "drop_required", BREAKS_F),
    Scenario("nested field widened", "a:struct<n:int>", "a:struct<n:bigint>",
             "a.n", "widen", BREAKS_F),
    Scenario("nested field made required", "a:struct<zip:string>", "a:struct<zip:string> | a.zip",
             "a.zip", "make_required", BREAKS_B),
    Scenario("array element widened", "tags:array<int>", "tags:array<bigint>",
             "tags.element", "widen", BREAKS_F),
    Scenario("array element narrowed", "tags:array<bigint>", "tags:array<int>",
             "tags.element", "narrow", BREAKS_B),
    Scenario("array element made required", "tags:array<string>",
             "tags:array<string> | tags.element", "tags.element", "make_required", BREAKS_B),
    Scenario("array of structs: field added", "items:array<struct<sku:string>>",
             "items:array<struct<sku:string, qty:int>>", "items.element.qty", "add_nullable",
             ALL_OK),
    Scenario("map value widened", "m:map<string,int>", "m:map<string,bigint>",
             "m.value", "widen", BREAKS_F),
    Scenario("map value narrowed", "m:map<string,double>", "m:map<string,float>",
             "m.value", "narrow", BREAKS_B),
    Scenario("map value made nullable", "m:map<string,int> | m.value", "m:map<string,int>",
             "m.value", "make_nullable", BREAKS_F),
    Scenario("map key widened", "m:map<int,string>", "m:map<bigint,string>",
             "m.key", "widen", BREAKS_F),
    Scenario("map value type changed", "m:map<string,int>", "m:map<string,string>",
             "m.value", "change_type", BREAKS_BF),
    Scenario("dotted name is quoted", "`a.b`:int", "`a.b`:bigint", "`a.b`", "widen", BREAKS_F),
    Scenario("name with a space is not quoted", "`unit price`:int", "`unit price`:bigint",
             "unit price", "widen", BREAKS_F),
]
# fmt: on


def _cases() -> list[Any]:
    return [
        pytest.param(s, mode, verdict, id=f"{s.name} / {mode}")
        for s in SCENARIOS
        for mode, verdict in zip(MODES, s.verdicts.split(), strict=True)
    ]


@pytest.mark.parametrize(("scenario", "mode", "verdict"), _cases())
def test_each_change_under_each_mode(scenario: Scenario, mode: str, verdict: str) -> None:
    versions = [
        Version("v1", schema(scenario.old)),
        Version("v2", schema(scenario.new), dict(scenario.renames)),
    ]
    result = check(mode, versions)
    change = (scenario.path, scenario.kind)
    assert [(c.path, c.kind) for c in result.changes] == [change]
    assert result.compatible is (verdict == "ok")
    broken = set() if verdict == "ok" else {"backward" if d == "B" else "forward" for d in verdict}
    assert {(f.change.path, f.change.kind, f.direction) for f in result.findings} == {
        (*change, direction) for direction in broken
    }
    assert all(f.against == "v1" for f in result.findings)


def test_the_table_covers_every_kind_and_mode() -> None:
    assert {s.kind for s in SCENARIOS} == set(KINDS)
    assert len(_cases()) == len(SCENARIOS) * len(MODES) >= 48


def test_an_unchanged_schema_has_no_changes() -> None:
    old = schema("id:bigint, tags:array<string>, attrs:map<string,int> | id")
    assert diff(old, schema("id:bigint, tags:array<string>, attrs:map<string,int> | id")) == []


def test_changes_follow_the_new_field_order_then_drops_in_old_order() -> None:
    old = schema("a:int, gone1:string, b:string, gone2:int | gone2")
    new = schema("c:string, b:int, a:bigint")
    assert [(c.path, c.kind, c.old, c.new) for c in diff(old, new)] == [
        ("c", "add_nullable", None, "string"),
        ("b", "change_type", "string", "int"),
        ("a", "widen", "int", "bigint"),
        ("gone1", "drop_nullable", "string", None),
        ("gone2", "drop_required", "int", None),
    ]


def test_field_names_match_exactly() -> None:
    changes = diff(schema("Email:string"), schema("email:string"))
    assert [(c.path, c.kind) for c in changes] == [
        ("email", "add_nullable"),
        ("Email", "drop_nullable"),
    ]


def test_rename_with_a_type_change_reports_both() -> None:
    changes = diff(schema("postcode:int"), schema("zip:bigint"), {"zip": "postcode"})
    assert [(c.path, c.kind, c.old, c.new) for c in changes] == [
        ("zip", "rename", "postcode", "zip"),
        ("zip", "widen", "int", "bigint"),
    ]


def test_a_column_added_under_a_name_renamed_away_is_new() -> None:
    changes = diff(schema("a:int"), schema("b:int, a:string"), {"b": "a"})
    assert [(c.path, c.kind) for c in changes] == [("b", "rename"), ("a", "add_nullable")]


@pytest.mark.parametrize(
    ("new", "renames", "problem"),
    [
        ("zip:string", {"zip": "postcode"}, "has no column 'postcode': not a rename"),
        ("zip:string", {"city": "town"}, "has no column 'city'"),
        ("x:string, y:string", {"x": "a", "y": "a"}, "more than one column renamed_from 'a'"),
    ],
)
def test_bad_renames_are_refused(new: str, renames: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        diff(schema("a:string, town:string"), schema(new), renames)


def test_a_bad_rename_in_a_chain_names_the_version() -> None:
    versions = [
        Version("v1", schema("a:int")),
        Version("v2", schema("b:int"), {"b": "missing"}),
        Version("v3", schema("b:int")),
    ]
    with pytest.raises(ValueError, match="v2 declares 'b' renamed_from 'missing'"):
        check("backward_transitive", versions)


# --- transitive checks -----------------------------------------------------------------------


def test_transitive_modes_catch_what_each_step_allows() -> None:
    versions = [
        Version("v1", schema("id:bigint, code:int")),
        Version("v2", schema("id:bigint")),  # drop a nullable column: fine both ways
        Version("v3", schema("id:bigint, code:string")),  # add a nullable one: fine both ways
    ]
    for mode in ("backward", "forward", "full", "none"):
        assert check(mode, versions).compatible, mode
    backward = check("backward_transitive", versions)
    assert not backward.compatible
    assert backward.compared_with == ("v1", "v2")
    assert [f.describe() for f in backward.findings] == [
        "against v1: code: type changed int -> string (breaks backward)"
    ]
    assert [(c.path, c.kind) for c in backward.changes] == [("code", "add_nullable")]
    full = check("full_transitive", versions)
    assert [(f.against, f.direction) for f in full.findings] == [
        ("v1", "backward"),
        ("v1", "forward"),
    ]


def test_non_transitive_modes_compare_with_the_previous_version_only() -> None:
    versions = [
        Version("v1", schema("price:int")),
        Version("v2", schema("price:bigint")),
        Version("v3", schema("price:bigint, note:string")),
    ]
    verdict = check("forward", versions)
    assert verdict.compatible
    assert verdict.compared_with == ("v2",)
    transitive = check("forward_transitive", versions)
    assert [f.describe() for f in transitive.findings] == [
        "against v1: price: widened int -> bigint (breaks forward)"
    ]


def test_renames_compose_along_the_chain() -> None:
    versions = [
        Version("v1", schema("id:bigint, postcode:int")),
        Version("v2", schema("id:bigint, post_code:int"), {"post_code": "postcode"}),
        Version("v3", schema("id:bigint, zip:bigint"), {"zip": "post_code"}),
    ]
    verdict = check("backward_transitive", versions)
    assert verdict.compatible  # renames and widenings are backward compatible
    assert [(c.path, c.kind, c.old) for c in verdict.changes] == [
        ("zip", "rename", "post_code"),
        ("zip", "widen", "int"),
    ]
    forward = check("forward_transitive", versions)
    assert [f.describe() for f in forward.findings] == [
        "against v1: zip: renamed from postcode (breaks forward)",
        "against v1: zip: widened int -> bigint (breaks forward)",
        "against v2: zip: renamed from post_code (breaks forward)",
        "against v2: zip: widened int -> bigint (breaks forward)",
    ]


def test_renamed_there_and_back_is_no_rename() -> None:
    versions = [
        Version("v1", schema("a:int")),
        Version("v2", schema("b:int"), {"b": "a"}),
        Version("v3", schema("a:int"), {"a": "b"}),
    ]
    verdict = check("full_transitive", versions)
    assert [f.describe() for f in verdict.findings] == [
        "against v2: a: renamed from b (breaks forward)"
    ]


def test_a_single_version_is_compatible() -> None:
    verdict = check("full_transitive", [Version("v1", schema("id:bigint"))])
    assert verdict.compatible
    assert verdict == Verdict("full_transitive", "v1", (), (), ())


def test_none_accepts_everything_but_lists_the_changes() -> None:
    verdict = check("none", [Version("v1", schema("a:string")), Version("table", schema("a:int"))])
    assert verdict.compatible
    assert verdict.compared_with == ("v1",)
    assert [c.describe() for c in verdict.changes] == ["a: type changed string -> int"]


@pytest.mark.parametrize("mode", ["BACKWARD", "transitive", ""])
def test_unknown_mode_is_refused(mode: str) -> None:
    with pytest.raises(ValueError, match="unknown compatibility mode"):
        check(mode, [Version("v1", schema("a:int"))])


# --- descriptions and JSON ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "text"),
    [
        (Change("add_nullable", "email", None, "string"), "email: added (nullable)"),
        (Change("add_required", "email", None, "string"), "email: added (required)"),
        (Change("drop_nullable", "email", "string", None), "email: dropped (was nullable)"),
        (Change("drop_required", "email", "string", None), "email: dropped (was required)"),
        (Change("rename", "zip", "postcode", "zip"), "zip: renamed from postcode"),
        (Change("widen", "price", "int", "bigint"), "price: widened int -> bigint"),
        (Change("narrow", "price", "bigint", "int"), "price: narrowed bigint -> int"),
        (Change("change_type", "a.b", "string", "int"), "a.b: type changed string -> int"),
        (Change("make_required", "t", None, None), "t: made required (was nullable)"),
        (Change("make_nullable", "m.value", None, None), "m.value: made nullable (was required)"),
    ],
)  # fmt: skip
def test_describe(change: Change, text: str) -> None:
    assert change.describe() == text


def test_finding_describe() -> None:
    finding = Finding("v2", Change("narrow", "price", "bigint", "int"), "backward")
    assert finding.describe() == "against v2: price: narrowed bigint -> int (breaks backward)"


def test_as_json_round_trips() -> None:
    versions = [
        Version("v1", schema("id:bigint, price:bigint")),
        Version("table", schema("id:bigint, price:int, note:string | note")),
    ]
    verdict = check("full", versions)
    assert json.loads(json.dumps(verdict.as_json())) == {
        "mode": "full",
        "candidate": "table",
        "compared_with": ["v1"],
        "compatible": False,
        "changes": [
            {
                "kind": "narrow",
                "path": "price",
                "old": "bigint",
                "new": "int",
                "description": "price: narrowed bigint -> int",
            },
            {
                "kind": "add_required",
                "path": "note",
                "old": None,
                "new": "string",
                "description": "note: added (required)",
            },
        ],
        "findings": [
            {
                "against": "v1",
                "direction": "backward",
                "change": {
                    "kind": "narrow",
                    "path": "price",
                    "old": "bigint",
                    "new": "int",
                    "description": "price: narrowed bigint -> int",
                },
                "description": "against v1: price: narrowed bigint -> int (breaks backward)",
            },
            {
                "against": "v1",
                "direction": "backward",
                "change": {
                    "kind": "add_required",
                    "path": "note",
                    "old": None,
                    "new": "string",
                    "description": "note: added (required)",
                },
                "description": "against v1: note: added (required) (breaks backward)",
            },
        ],
    }
