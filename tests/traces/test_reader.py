"""Trace reader: SR.jl-written fixture, damaged files, schema validation."""

from __future__ import annotations

import gzip
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ttsr_bridge.traces.reader import iter_trace, loads_trace_line, read_trace
from ttsr_bridge.traces.records import IterationRecord, SearchRecord, TraceFormatError
from ttsr_bridge.traces.validate import load_schema, validate_file

FIXTURE = Path(__file__).resolve().parents[2] / "traces" / "fixtures" / "pysr_style_small.jsonl"


def test_fixture_reads_and_validates() -> None:
    tf = read_trace(FIXTURE, strict=True)
    assert tf.search is not None and tf.search.options.startswith("Options(")
    assert [(i.output, i.population, i.iteration) for i in tf.iterations] == [(1, 1, 0), (1, 2, 0)]
    it = tf.iterations[0]
    assert it.members[0].ref == 7301850139523081236  # 63-bit SR.jl refs survive
    assert math.isinf(it.members[3].cost)
    kinds = {e.mutation.type for i in tf.iterations for m in i.mutations.values()
             for e in m.events if hasattr(e, "mutation")}
    assert {"rotate_tree", "add_node:append", "optimize", "identity"} <= kinds
    report = validate_file(FIXTURE)
    assert report.ok, report.errors
    assert (report.n_search, report.n_iterations) == (1, 2)


def test_julia_inf_spelling() -> None:
    obj = loads_trace_line('{"loss":Inf,"cost":-Inf,"tree":"x1 + Inf","x":NaN,"y":"Inf"}')
    assert obj["loss"] == math.inf and obj["cost"] == -math.inf and obj["tree"] == "x1 + Inf"
    assert math.isnan(obj["x"])


def test_truncated_last_line(tmp_path: Path) -> None:
    data = FIXTURE.read_text()
    p = tmp_path / "t.jsonl"
    p.write_text(data[: len(data) - 200])  # killed mid-way through the last record
    tf = read_trace(p)
    assert len(tf.iterations) == 1 and tf.skipped == 1
    assert tf.errors[0].kind == "truncated" and tf.errors[0].line == 3
    with pytest.raises(TraceFormatError, match=r"t\.jsonl:3: truncated"):
        read_trace(p, strict=True)


def test_bad_line_and_other_schema_version(tmp_path: Path) -> None:
    lines = FIXTURE.read_text().splitlines()
    rec = json.loads(lines[1])
    rec["schema_version"] = 2
    bad = dict(json.loads(lines[2]))
    del bad["members"]
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join([lines[0], json.dumps(rec), "{not json", json.dumps(bad), lines[2]])
                 + "\n")
    reader = iter_trace(p)
    recs = list(reader)
    assert [type(r) for r in recs] == [SearchRecord, IterationRecord]
    assert (reader.skipped_version, reader.skipped_bad, reader.skipped_truncated) == (1, 2, 0)
    assert "members" in reader.issues[-1].message
    with pytest.raises(TraceFormatError, match=r"t\.jsonl:2: schema_version 2"):
        read_trace(p, strict=True)
    assert not validate_file(p).ok


def test_gzip_and_missing_search(tmp_path: Path) -> None:
    gz = tmp_path / "t.jsonl.gz"
    with open(FIXTURE, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert len(read_trace(gz, strict=True).iterations) == 2
    p = tmp_path / "nosearch.jsonl"
    p.write_text("\n".join(FIXTURE.read_text().splitlines()[1:]) + "\n")
    tf = read_trace(p)
    assert tf.search is None and tf.errors[0].kind == "missing_search"
    with pytest.raises(TraceFormatError):
        read_trace(p, strict=True)


def test_damaged_gzip_is_a_counted_skip_never_a_crash(tmp_path: Path) -> None:
    whole = gzip.compress(FIXTURE.read_bytes(), compresslevel=1, mtime=0)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) - 40])  # a writer killed before the stream's end
    tf = read_trace(cut)
    assert tf.search is not None and tf.skipped == 1
    assert tf.errors[-1].kind == "truncated" and "cut off" in tf.errors[-1].message
    with pytest.raises(TraceFormatError, match=r"cut\.jsonl\.gz:\d+: the compressed stream is cut off"):
        read_trace(cut, strict=True)
    report = validate_file(cut)
    assert not report.ok and "cut off" in report.errors[-1]
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(whole[:10] + bytes(200))  # a gzip header, then no deflate stream
    tf = read_trace(corrupt)
    assert tf.skipped == 1 and tf.errors[-1].kind == "truncated"
    assert not validate_file(corrupt).ok


def test_content_not_name_tells_gzip_and_bad_utf8_is_a_bad_line(tmp_path: Path) -> None:
    unnamed = tmp_path / "t.jsonl"  # gzip data under a plain name
    unnamed.write_bytes(gzip.compress(FIXTURE.read_bytes()))
    assert len(read_trace(unnamed, strict=True).iterations) == 2
    plain = tmp_path / "t.jsonl.gz"  # plain text under a .gz name
    plain.write_bytes(FIXTURE.read_bytes())
    assert len(read_trace(plain, strict=True).iterations) == 2
    lines = FIXTURE.read_bytes().splitlines(keepends=True)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(lines[0] + b'{"tree":"caf\xe9"}\n' + b"".join(lines[1:]))
    reader = iter_trace(latin)
    assert len([r for r in reader if isinstance(r, IterationRecord)]) == 2
    assert reader.skipped_bad == 1 and "not UTF-8" in reader.issues[0].message
    assert reader.issues[0].line == 2
    with pytest.raises(TraceFormatError, match=r"latin\.jsonl:2: not UTF-8"):
        read_trace(latin, strict=True)
    assert any("not UTF-8" in e for e in validate_file(latin).errors)


def test_schema_is_draft_2020_12() -> None:
    import jsonschema

    schema = load_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    jsonschema.Draft202012Validator.check_schema(schema)


def test_validate_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"schema_version":1,"record_type":"iteration"}\n')
    ok = subprocess.run([sys.executable, "-m", "ttsr_bridge.cli", "traces", "validate",
                         str(FIXTURE)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    fail = subprocess.run([sys.executable, "-m", "ttsr_bridge.cli", "traces", "validate",
                           str(FIXTURE), str(bad)], capture_output=True, text=True)
    assert fail.returncode == 1 and "bad.jsonl" in fail.stdout + fail.stderr
