"""Static checks of the Julia package (Julia is not needed): every source parses with
tree-sitter-julia without ERROR/MISSING nodes, and the package layout is what Pkg expects."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "julia" / "TTSRBridge"
SOURCES = sorted((PKG / "src").glob("*.jl")) + sorted((PKG / "test").glob("*.jl"))


def _parser():
    import tree_sitter
    import tree_sitter_julia

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_julia.language()))


def _problems(node, out):
    if node.type == "ERROR" or node.is_missing:
        out.append(f"{node.type}{' (missing)' if node.is_missing else ''} at line {node.start_point[0] + 1}")
    for child in node.children:
        _problems(child, out)
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG)))
def test_julia_source_parses(path):
    tree = _parser().parse(path.read_bytes())
    assert _problems(tree.root_node, []) == []


def test_every_source_is_included():
    main = (PKG / "src" / "TTSRBridge.jl").read_text()
    included = set(re.findall(r'include\("([^"]+)"\)', main))
    assert included == {p.name for p in (PKG / "src").glob("*.jl")} - {"TTSRBridge.jl"}


def test_project_files():
    project = tomllib.loads((PKG / "Project.toml").read_text())
    assert project["name"] == "TTSRBridge"
    assert set(project["deps"]) >= {"SymbolicRegression", "DynamicExpressions", "JSON3", "Sockets"}
    assert project["compat"]["SymbolicRegression"] == "2.7"
    assert set(project["deps"]) - {"Random", "Sockets"} <= set(project["compat"])
    top = tomllib.loads((ROOT / "Project.toml").read_text())
    assert top["deps"]["TTSRBridge"] == project["uuid"]
    assert top["sources"]["TTSRBridge"]["path"] == "julia/TTSRBridge"


def test_protocol_doc_matches_server_version():
    from ttsr_bridge.propose.server import PROTOCOL_VERSION

    doc = (PKG / "PROTOCOL.md").read_text()
    assert f"Protocol version: {PROTOCOL_VERSION}" in doc
    jl = (PKG / "src" / "TTSRBridge.jl").read_text()
    assert f"const PROTOCOL_VERSION = {PROTOCOL_VERSION}" in jl


@pytest.mark.julia
@pytest.mark.skipif(shutil.which("julia") is None, reason="needs a julia executable on PATH")
def test_julia_package_tests():
    subprocess.run(
        ["julia", f"--project={ROOT}", "--threads=4", str(PKG / "test" / "runtests.jl")],
        check=True,
        timeout=3600,
        cwd=ROOT,
    )
