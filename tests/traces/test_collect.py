"""Trace collection: units and shards, resume after a failure / a kill, engine traces valid."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ttsr_bridge.traces.collect import (
    Budget,
    CollectConfig,
    CollectError,
    collect,
    derive_seed,
    parse_shard,
    plan_units,
    shard_units,
)
from ttsr_bridge.traces.reader import read_trace
from ttsr_bridge.traces.validate import validate_file

HAVE_ENGINE = importlib.util.find_spec("ttsr_bridge.search.search") is not None
needs_engine = pytest.mark.skipif(not HAVE_ENGINE, reason="ttsr_bridge.search.search not built yet")

# A tiny search: a trace of a couple of iterations in well under a second.
TINY = {"populations": 2, "population_size": 12, "ncycles_per_iteration": 4,
        "tournament_selection_n": 4, "maxsize": 12}

PROBLEMS_YAML = """
problems:
  - {name: lin, formula: "2*x + 1", variables: {x: [-2, 2]}, n_points: 30}
  - {name: quad, formula: "x**2 - y", variables: {x: [-2, 2], y: [-1, 1]}, n_points: 30}
  - {name: bad, formula: "log(x)", variables: {x: [-3, -1]}, n_points: 30}
"""


def _problems(tmp_path: Path, with_bad: bool = False) -> Path:
    text = PROBLEMS_YAML if with_bad else PROBLEMS_YAML.rsplit("  - {name: bad", 1)[0]
    p = tmp_path / "problems.yaml"
    p.write_text(text)
    return p


def _config(problems: Path, runs: int = 2) -> CollectConfig:
    return CollectConfig(engine="python", problems=str(problems), runs=runs, preset="pysr",
                         budget=Budget(iterations=2), seed=7, search_overrides=TINY)


def test_units_seeds_and_shards_partition() -> None:
    names = [f"prob{i}" for i in range(40)] + ["I.6.2a"]
    units = plan_units(names, 3, base_seed=1)
    assert len({u.unit_id for u in units}) == len(units) == 123
    assert len({u.seed for u in units}) == len(units)
    assert units[4].seed == derive_seed(1, units[4].problem, units[4].run)  # order-independent
    for n in (1, 2, 5):
        parts = [shard_units(units, (i, n)) for i in range(n)]
        ids = [u.unit_id for part in parts for u in part]
        assert sorted(ids) == sorted(u.unit_id for u in units)  # each unit exactly once
        assert parts == [shard_units(list(reversed(units))[::-1], (i, n)) for i in range(n)]
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "1", "a/b", "-1/3"):
        with pytest.raises(CollectError):
            parse_shard(bad)
    with pytest.raises(CollectError):
        Budget()


@needs_engine
def test_collect_writes_valid_traces_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "coll"
    cfg = _config(_problems(tmp_path, with_bad=True))
    data = collect(cfg, out, progress=False)
    status = {uid: u["status"] for uid, u in data["units"].items()}
    assert status == {"lin__run000": "done", "lin__run001": "done", "quad__run000": "done",
                      "quad__run001": "done", "bad__run000": "failed", "bad__run001": "failed"}
    assert "ProblemError" in data["units"]["bad__run000"]["error"]
    traces = sorted((out / "shards").glob("*.jsonl"))
    assert [t.name for t in traces] == ["lin__run000.jsonl", "lin__run001.jsonl",
                                        "quad__run000.jsonl", "quad__run001.jsonl"]
    for t in traces:
        report = validate_file(t)
        assert report.ok, report.errors[:5]
        tf = read_trace(t, strict=True)
        assert tf.iterations and tf.iterations[0].members
        meta = json.loads(t.with_suffix(".json").read_text())
        assert meta["y_var"] > 0 and meta["engine"] == "python" and "x_std" in meta["data_stats"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["identity"]["seed"] == 7 and manifest["package_versions"]["numpy"]
    assert {p["name"] for p in manifest["problems"]} == {"lin", "quad", "bad"}

    # Simulate a kill: one finished trace lost, a stale temp file left behind.
    mtimes = {t.name: t.stat().st_mtime_ns for t in traces}
    (out / "shards" / "quad__run001.jsonl").unlink()
    (out / "shards" / ".quad__run001.123.jsonl.tmp").write_text('{"trunc')
    data = collect(cfg, out, progress=False)
    assert data["units"]["quad__run001"]["status"] == "done"
    assert not list((out / "shards").glob(".*.tmp"))
    after = sorted((out / "shards").glob("*.jsonl"))
    assert [t.name for t in after] == [t.name for t in traces]
    for t in after:
        if t.name != "quad__run001.jsonl":
            assert t.stat().st_mtime_ns == mtimes[t.name]  # finished units are not redone

    # Same seed, same search: the redone unit equals a fresh run of it (ignoring timestamps).
    with pytest.raises(CollectError, match="different configuration"):
        collect(CollectConfig(**{**cfg.__dict__, "seed": 8}), out, progress=False)


@needs_engine
def test_gzip_collection_resumes_either_way_and_converts(tmp_path: Path) -> None:
    import gzip

    from ttsr_bridge.traces.convert import ConvertConfig, convert

    out = tmp_path / "coll"
    cfg = _config(_problems(tmp_path))
    data = collect(cfg, out, progress=False, compress=True)
    shards = out / "shards"
    packed = sorted(shards.glob("*.jsonl.gz"))
    assert [t.name for t in packed] == ["lin__run000.jsonl.gz", "lin__run001.jsonl.gz",
                                        "quad__run000.jsonl.gz", "quad__run001.jsonl.gz"]
    assert not list(shards.glob("*.jsonl"))
    for t in packed:
        assert t.read_bytes()[:2] == b"\x1f\x8b" and validate_file(t).ok
        assert read_trace(t, strict=True).iterations
        uid = t.name.removesuffix(".jsonl.gz")
        assert json.loads((shards / f"{uid}.json").read_text())["trace"] == t.name
        assert data["units"][uid]["trace"] == f"shards/{t.name}"
    # A kill, then a resume without gzip: only the lost unit is redone, as plain text; the
    # gzip units count as done.
    mtimes = {t.name: t.stat().st_mtime_ns for t in packed}
    lost = gzip.decompress((shards / "quad__run001.jsonl.gz").read_bytes())
    (shards / "quad__run001.jsonl.gz").unlink()
    (shards / ".quad__run001.123.tmp.jsonl.gz").write_bytes(b"\x1f\x8b\x08")
    data = collect(cfg, out, progress=False, compress=False)
    assert all(u["status"] == "done" for u in data["units"].values())
    assert data["units"]["quad__run001"]["trace"] == "shards/quad__run001.jsonl"
    assert not list(shards.glob(".*"))  # the stale temporary file is gone
    redone = (shards / "quad__run001.jsonl").read_bytes()
    assert redone.count(b"\n") == lost.count(b"\n")  # the same search again
    for t in packed[:3]:
        assert t.stat().st_mtime_ns == mtimes[t.name]
    now = {t.name: t.stat().st_mtime_ns for t in (*packed[:3], shards / "quad__run001.jsonl")}
    again = collect(cfg, out, progress=False, compress=True)  # nothing left to do
    assert all(u["status"] == "done" for u in again["units"].values())
    assert {n: (shards / n).stat().st_mtime_ns for n in now} == now
    assert not (shards / "quad__run001.jsonl.gz").exists()
    # PySR writes plain text; a gzip collection compresses it afterwards, the same way
    from ttsr_bridge.traces.collect import _gzip_file

    _gzip_file(shards / "quad__run001.jsonl", tmp_path / "pysr.jsonl.gz")
    assert gzip.decompress((tmp_path / "pysr.jsonl.gz").read_bytes()) == redone
    # convert reads both kinds, and a shard gives the same rows either way (sampled too); the
    # temporary file of a unit being written is not a trace
    (shards / ".lin__run000.999.tmp.jsonl.gz").write_bytes(b"\x1f\x8b\x08")
    report = convert(ConvertConfig(inputs=(str(out),), out=str(tmp_path / "ds"), heldout_files=(),
                                   sample=0.5), progress=False)
    assert report.counts["files"] == 4 and report.rows > 0
    assert report.counts["traces_without_metadata"] == 0
    (shards / ".lin__run000.999.tmp.jsonl.gz").unlink()
    import shutil

    from ttsr_bridge.traces.convert import iter_dataset_rows

    plain = tmp_path / "plain"
    shutil.copytree(out, plain)
    for t in (plain / "shards").glob("*.jsonl.gz"):
        (plain / "shards" / t.name.removesuffix(".gz")).write_bytes(gzip.decompress(t.read_bytes()))
        t.unlink()
    again = convert(ConvertConfig(inputs=(str(plain),), out=str(tmp_path / "ds2"), heldout_files=(),
                                  sample=0.5), progress=False)
    assert again.rows == report.rows
    def rows(d: Path) -> list[str]:  # as text: NaN (no temperature) equals itself there
        return [json.dumps(r, sort_keys=True) for r in iter_dataset_rows(d)]

    assert rows(tmp_path / "ds2") == rows(tmp_path / "ds")


@needs_engine
def test_shards_share_a_directory(tmp_path: Path) -> None:
    out = tmp_path / "coll"
    cfg = _config(_problems(tmp_path), runs=2)
    for i in range(2):
        collect(cfg, out, shard=(i, 2), progress=False)
    names = sorted(t.name for t in (out / "shards").glob("*.jsonl"))
    assert names == ["lin__run000.jsonl", "lin__run001.jsonl", "quad__run000.jsonl",
                     "quad__run001.jsonl"]
    m0 = json.loads((out / "manifest.shard-0-of-2.json").read_text())
    m1 = json.loads((out / "manifest.shard-1-of-2.json").read_text())
    assert set(m0["units"]).isdisjoint(m1["units"])
    assert set(m0["units"]) | set(m1["units"]) == {n[:-6] for n in names}


@needs_engine
@pytest.mark.slow
def test_resume_after_real_kill(tmp_path: Path) -> None:
    """SIGKILL the collect process mid-way; the rerun finishes with no duplicates."""
    problems = _problems(tmp_path)
    out = tmp_path / "coll"
    cmd = [sys.executable, "-m", "ttsr_bridge.cli", "traces", "collect", "--problems",
           str(problems), "--runs", "4", "--budget-iterations", "3", "--out", str(out),
           "--seed", "3", "--no-progress", "--config", str(tmp_path / "c.yaml")]
    (tmp_path / "c.yaml").write_text("search: " + json.dumps(TINY) + "\n")
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "shards").glob("*.jsonl")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / "shards").glob("*.jsonl")))
    assert 1 <= done_before
    rc = subprocess.run(cmd, capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    traces = sorted((out / "shards").glob("*.jsonl"))
    assert len(traces) == 8 and not list((out / "shards").glob(".*.tmp"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(u["status"] == "done" for u in manifest["units"].values())
    for t in traces:
        assert read_trace(t, strict=True).iterations


def test_cli_gzip_flag_and_config_key(tmp_path: Path) -> None:
    import argparse

    from ttsr_bridge.traces.collect_cli import _merge, add_arguments

    def merged(*argv: str, yaml_text: str = "") -> tuple:
        ap = argparse.ArgumentParser()
        add_arguments(ap)
        extra: list[str] = []
        if yaml_text:
            (tmp_path / "c.yaml").write_text(yaml_text)
            extra = ["--config", str(tmp_path / "c.yaml")]
        return _merge(ap.parse_args(["--out", "o", "--problems", "nguyen", "--budget-iterations", "1",
                                     *extra, *argv]))

    assert merged()[2] is False
    assert merged("--gzip")[2] is True
    assert merged(yaml_text="gzip: true\n")[2] is True
    assert merged("--no-gzip", yaml_text="gzip: true\n")[2] is False  # the flag wins
    with pytest.raises(CollectError, match="gzip must be true or false"):
        merged(yaml_text="gzip: 3\n")
