"""Malformed import documents for the property test and scripts/fuzz_import.py.

Every document drawn here is broken by construction (a proper prefix of a JSON export, a
value its field refuses, a key given twice, an unknown key, a YAML alias...), so an import
of it must fail: exit code 1 or 2, one ``Error:`` line, no traceback, store unchanged.
"""

from __future__ import annotations

import json
import math
import traceback
from dataclasses import dataclass, field

import yaml
from click.testing import CliRunner
from hypothesis import strategies as st

from cardlink_lite.cli import cli
from tests.transfer_helpers import checksums

# (table, field) -> the kind of value the importer accepts there.
FIELDS = {
    ("devices", "device_type"): "enum",
    ("devices", "is_active"): "bool",
    ("devices", "last_seen"): "datetime",
    ("devices", "connection_settings"): "json",
    ("devices", "name"): "short_text",
    ("devices", "notes"): "text",
    ("card_profiles", "card_type"): "enum",
    ("card_profiles", "trigger_config"): "json",
    ("ota_sessions", "duration_ms"): "int",
    ("ota_sessions", "started_at"): "datetime",
    ("ota_sessions", "status"): "enum",
    ("comm_logs", "id"): "id",
    ("comm_logs", "latency_ms"): "float",
    ("comm_logs", "timestamp"): "datetime",
    ("comm_logs", "raw_data"): "hex",
    ("comm_logs", "session_id"): "uuid",
    ("comm_logs", "decoded_data"): "text",
    ("test_results", "metadata"): "json",
    ("test_results", "duration_ms"): "int",
    ("settings", "category"): "short_text",
}

_ODD_CHARS = "\x00\x01\x07\x1b\x7f\u0085\u00a0\u200b\u202e\u2028\ufeff\ufffe\U0001f4a9\ufb00"
odd_text = st.text(alphabet=st.sampled_from(_ODD_CHARS) | st.characters(), min_size=1,
                   max_size=12)
# Raw JSON text for values that are wrong for every typed field, JSON's odd corners included.
_HUGE_TEXT = '"' + "x" * 300_000 + '"'
_ANY_BAD_TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400,
                   "-" + "9" * 400, "1" * 5000, "[" * 200 + "]" * 200, "[" * 5000 + "]" * 5000,
                   '{"a": {"b": {"c": ' + "[" * 34 + "1" + "]" * 34 + "}}}",
                   _HUGE_TEXT, '"\\ud800"', '"a\\u0000b"']
# Tokens above that some kinds of field accept (a JSON field holds any JSON value).
_ACCEPTED = {
    "json": {"1" + "0" * 400, "-" + "9" * 400, _HUGE_TEXT, '"\\ud800"', '"a\\u0000b"'},
    "text": {_HUGE_TEXT},  # comm_logs.decoded_data holds up to 1 Mi characters
}


def _too_deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def bad_value_text(kind: str):
    """Raw JSON text of a value the field of ``kind`` refuses."""
    wrong_type = {
        "enum": st.sampled_from(['"not-a-member"', "1", "true", "[]", '"' + "\u00e9" * 30 + '"']),
        "bool": st.sampled_from(['"yes"', "1", "0", "null", "[]", '"true"']),
        "datetime": st.sampled_from(['"0001-01-01T00:00:00+01:00"',
                                     '"9999-12-31T23:59:59.999-01:00"', '"2024-13-45T00:00:00Z"',
                                     '"yesterday"', "1732874400", "true", "[]",
                                     '"2024-11-29T25:00"', '"\\u0000"']),
        "json": st.sampled_from(["NaN", "Infinity", _too_deep(40), _too_deep(100_000),
                                 '{"a": 1, "a": 2}', '[{"k": {"k": 1, "k": 2}}]',
                                 '{"a": -Infinity}']),
        "short_text": st.sampled_from(['"' + "x" * 300 + '"', "1", "[]", "{}", '"\\u0000"',
                                       '"\\udfff"', "true"]),
        "text": st.sampled_from(["1", "[]", "{}", '"\\u0000"', '"\\udfff x"', "3.5", "false"]),
        "int": st.sampled_from(['"12"', "1.5", "true", "1" + "0" * 400, "9223372036854775808",
                                '"' + "9" * 10_000_000 + '"', "NaN", "[]"]),
        "id": st.sampled_from(["0", "-1", "1.0", '"1"', "9223372036854775808", "true",
                               "1" + "0" * 400]),
        "float": st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400,
                                  '"1.5"', "true", "[]"]),
        "hex": st.sampled_from(['"00\\ufb00"', '"0G"', '"ABC"', '""', "1",
                                '"' + "A" * 262_146 + '"', '"\\u0661\\u0662"', "null"]),
        "uuid": st.sampled_from(['"not-a-uuid"', "1", "null", '"' + "1" * 100 + '"']),
    }[kind]
    accepted = _ACCEPTED.get(kind, set())
    return wrong_type | st.sampled_from([t for t in _ANY_BAD_TOKENS if t not in accepted])


def export_lines(document: dict) -> list[str]:
    """The export's JSON layout as a list of lines (one row per line)."""
    lines = ["{"]
    header = [k for k in document if not isinstance(document[k], list)]
    tables = [k for k in document if isinstance(document[k], list)]
    parts = [f"  {json.dumps(k)}: {json.dumps(document[k])}" for k in header]
    for name in tables:
        rows = document[name]
        if not rows:
            parts.append(f"  {json.dumps(name)}: []")
            continue
        body = ",\n".join(f"    {json.dumps(r)}" for r in rows)
        parts.append(f"  {json.dumps(name)}: [\n{body}\n  ]")
    lines.append(",\n".join(parts))
    lines.append("}")
    return "\n".join(lines).split("\n") + [""]


def jsonl_lines(document: dict) -> list[str]:
    """The JSON Lines layout: a header line, then per table a table line and its rows."""
    header = {k: v for k, v in document.items() if not isinstance(v, list)}
    lines = [json.dumps({**header, "format": "jsonl"})]
    for name in (k for k in document if isinstance(document[k], list)):
        lines.append(json.dumps({"table": name}))
        lines.extend(json.dumps(r) for r in document[name])
    return lines


def _row_text(pairs: list[tuple[str, str]]) -> str:
    """A JSON object from (key text, raw value text) pairs, keys already quoted."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"


@dataclass
class Case:
    """One malformed document."""

    name: str
    text: str
    fmt: str = "json"
    notes: list = field(default_factory=list)


@st.composite
def malformed(draw, base: dict) -> Case:
    """A malformed document derived from the export ``base``."""
    kind = draw(st.sampled_from(["truncate", "bad_value", "bad_value", "bad_value",
                                 "duplicate_key", "odd_key", "duplicate_table", "yaml_alias",
                                 "yaml_duplicate", "yaml_bad_value", "whole_json_bad_value",
                                 "jsonl_truncate", "jsonl_bad_value", "jsonl_duplicate_key",
                                 "jsonl_odd_key"]))
    text = "\n".join(export_lines(base))
    if kind == "jsonl_truncate":
        # Cut inside a line: a JSON Lines file cut between lines is a shorter valid file.
        body = "\n".join(jsonl_lines(base))
        cut = draw(st.integers(min_value=0, max_value=len(body) - 1).filter(
            lambda c: body[c - 1:c] not in ("}", "\n")))
        return Case(f"JSON Lines truncated at {cut}", body[:cut], "jsonl")
    if kind == "truncate":
        body = text.rstrip()
        cut = draw(st.integers(min_value=0, max_value=len(body) - 1))
        return Case(f"truncated at {cut}", body[:cut])
    if kind == "duplicate_table":
        name = draw(st.sampled_from([k for k in base if isinstance(base[k], list)]))
        lines = text.rstrip().rstrip("}").rstrip()
        return Case(f"table {name} twice", lines + f',\n  {json.dumps(name)}: []\n}}\n')
    if kind.startswith("yaml"):
        return _yaml_case(draw, base, kind)
    (table, column), value_kind = draw(st.sampled_from(sorted(FIELDS.items())))
    rows = base[table]
    index = draw(st.integers(min_value=0, max_value=len(rows) - 1))
    pairs = [(json.dumps(k), json.dumps(v)) for k, v in rows[index].items()]
    jsonl = kind.startswith("jsonl_")
    kind = kind.removeprefix("jsonl_")
    if kind in ("bad_value", "whole_json_bad_value"):
        value = draw(bad_value_text(value_kind))
        pairs = [(k, v) for k, v in pairs if k != json.dumps(column)] + [
            (json.dumps(column), value)]
        what = f"{table}[{index}].{column} = {value[:40]}"
    elif kind == "duplicate_key":
        key, value = pairs[draw(st.integers(min_value=0, max_value=len(pairs) - 1))]
        pairs.append((key, value))
        what = f"{table}[{index}] repeats {key}"
    else:  # odd_key: a key no table has, with odd characters (raw control chars too)
        key = draw(odd_text) + draw(st.sampled_from(_ODD_CHARS))
        raw = draw(st.booleans())
        quoted = ('"' + key.replace("\\", "").replace('"', "") + '"') if raw else json.dumps(key)
        pairs.insert(draw(st.integers(min_value=0, max_value=len(pairs))), (quoted, "1"))
        what = f"{table}[{index}] has key {quoted[:20]!r}"
    line = _row_text(pairs)
    if kind == "whole_json_bad_value":
        # The same row in a document that is not laid out as the export writes it.
        document = json.loads(text)
        header = {k: v for k, v in document.items() if not isinstance(v, list)}
        parts = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in header.items()]
        for name in (k for k in document if isinstance(document[k], list)):
            shown = [json.dumps(r) for r in document[name]]
            if name == table:
                shown[index] = line
            parts.append(f"{json.dumps(name)}: [{', '.join(shown)}]")
        return Case("whole " + what, "{" + ", ".join(parts) + "}")
    if jsonl:
        lines = jsonl_lines(base)
        target = lines.index(json.dumps({"table": table})) + 1 + index
        lines[target] = line
        return Case("JSON Lines " + what, "\n".join(lines) + "\n", "jsonl")
    lines = export_lines(base)
    target = _row_line(lines, table, index)
    comma = "," if lines[target].rstrip().endswith(",") else ""
    lines[target] = "    " + line + comma
    return Case(what, "\n".join(lines))


def _row_line(lines: list[str], table: str, index: int) -> int:
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {json.dumps(table)}: ["))
    return start + 1 + index


def _yaml_case(draw, base: dict, kind: str) -> Case:
    if kind == "yaml_alias":
        levels = draw(st.integers(min_value=2, max_value=12))
        lines = ['    l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        lines += [f"    l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]"
                  for i in range(1, levels)]
        where = draw(st.sampled_from(["settings", "devices"]))
        head = ("- key: laughs\n  value:\n" if where == "settings" else
                "- id: laughs\n  device_type: phone\n  connection_settings:\n")
        return Case(f"yaml billion laughs, {levels} levels",
                    f"format_version: 1\n{where}:\n{head}" + "\n".join(lines) + "\n", "yaml")
    if kind == "yaml_duplicate":
        table = draw(st.sampled_from(["devices", "ota_sessions", "settings"]))
        row = dict(base[table][0])
        key = draw(st.sampled_from(sorted(row)))
        body = yaml.safe_dump([row], default_flow_style=False, sort_keys=False)
        first = body.splitlines()
        dup = next(i for i, line in enumerate(first) if line.lstrip("- ").startswith(f"{key}:"))
        extra = "  " + first[dup].lstrip("- ")
        first.insert(dup + 1, extra)
        return Case(f"yaml {table} repeats {key}",
                    f"format_version: 1\n{table}:\n" + "\n".join(first) + "\n", "yaml")
    (table, column), value_kind = draw(st.sampled_from(sorted(FIELDS.items())))
    value = draw(_yaml_bad_value(value_kind))
    row = dict(base[table][0])
    row[column] = value
    document = {"format_version": 1, table: [row]}
    if table == "comm_logs":
        document = {"format_version": 1, "ota_sessions": base["ota_sessions"], table: [row]}
    try:
        text = yaml.safe_dump(document, default_flow_style=False, sort_keys=False,
                              allow_unicode=draw(st.booleans()))
    except (RecursionError, yaml.YAMLError):
        text = f"format_version: 1\n{table}:\n- {column}: [[[[[[\n"
    return Case(f"yaml {table}.{column} = {str(value)[:30]!r}", text, "yaml")


def _nested(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def _yaml_bad_value(kind: str):
    common = st.sampled_from([math.nan, math.inf, 10**400, _nested(40)])
    return {
        "enum": st.sampled_from(["nope", 7, True, ["phone"]]),
        "bool": st.sampled_from(["yes!", 1, None, []]),
        "datetime": st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999-01:00",
                                     "31/12/2024", 12, True]),
        "json": st.sampled_from([math.nan, _nested(40), {"a": math.inf}]),
        "short_text": st.sampled_from(["x" * 300, 1, ["a"], "a\x00b"]),
        "text": st.sampled_from([1, ["a"], {"b": 1}, "a\x00b", 2.5]),
        "int": st.sampled_from(["12", 1.5, True, 10**400, "9" * 100_000]),
        "id": st.sampled_from([0, -1, 1.5, "1", 2**63]),
        "float": st.sampled_from([math.nan, math.inf, "1.5", True, 10**400]),
        "hex": st.sampled_from(["00\ufb00", "0G", "ABC", "", 1, None]),
        "uuid": st.sampled_from(["not-a-uuid", 1, None]),
    }[kind] | common.filter(lambda v: not (kind == "json" and isinstance(v, int)))


@dataclass
class Outcome:
    """What one import of a malformed document did."""

    problems: list = field(default_factory=list)   # empty: it failed as it must


def check_case(case: Case, url: str, tmp_path, manager, before: dict) -> Outcome:
    """Import ``case`` with --dry-run and for real; every way it can go wrong, listed."""
    path = tmp_path / f"case.{case.fmt}"
    path.write_text(case.text, encoding="utf-8", errors="surrogatepass")
    runner = CliRunner()
    outcome = Outcome()
    codes = []
    for dry in (True, False):
        args = ["--database", url, "import", str(path)] + (["--dry-run"] if dry else [])
        result = runner.invoke(cli, args)
        codes.append(result.exit_code)
        label = "dry run" if dry else "import"
        output = result.output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            tb = "".join(traceback.format_exception(result.exception))[-600:]
            outcome.problems.append(f"{label}: traceback {type(result.exception).__name__}: {tb}")
        if result.exit_code not in (1, 2):
            outcome.problems.append(f"{label}: exit code {result.exit_code}")
        errors = [line for line in output.splitlines() if line.startswith("Error:")]
        if len(errors) != 1:
            outcome.problems.append(f"{label}: {len(errors)} Error: lines")
        if "Traceback" in output:
            outcome.problems.append(f"{label}: a traceback was printed")
        if len(output) > 20_000:
            outcome.problems.append(f"{label}: {len(output):,} characters of output")
    if codes[0] != codes[1]:
        outcome.problems.append(f"dry run exit {codes[0]} but import exit {codes[1]}")
    if checksums(manager) != before:
        outcome.problems.append("the store changed")
    return outcome
