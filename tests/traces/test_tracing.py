"""TraceWriter (SR.jl Tracing.jl mirror) → reader round trip, and schema validation."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from ttsr_bridge.expr.tree import Expr, const, op, var
from ttsr_bridge.traces.reader import read_trace
from ttsr_bridge.traces.records import CrossoverEvent, DeathEvent, MutateEvent, TuningEvent
from ttsr_bridge.traces.tracing import MutationStepTrace, TraceWriter
from ttsr_bridge.traces.validate import validate_file

_refs = itertools.count(1000)


@dataclass
class Member:
    """Has exactly the attributes the writer reads from the engine's PopMember."""

    tree: Expr
    loss: float
    cost: float
    complexity: int
    birth: int
    ref: int
    parent: int


def member(tree: Expr, loss: float, parent: int = -1, birth: int = 0) -> Member:
    return Member(tree, loss, loss, len(tree), birth, next(_refs), parent)


def write_small_trace(path: Path, background: bool | None = None) -> dict[str, Member]:
    """A two-iteration trace exercising every hook; returns the members by name."""
    a = member(op("+", op("*", var(0), const(2.5)), op("sin", var(1))), 0.0123, birth=3)
    b = member(var(0), 1.25, birth=1)
    c = member(op("cos", var(1)), 0.9, birth=2)
    d = member(op("/", var(0), const(0.0)), math.inf, birth=0)
    e = member(op("+", op("sin", var(1)), op("*", var(0), const(2.5))), 0.0123, parent=a.ref)
    f = member(var(0), 1.25, parent=b.ref)
    g = member(op("cos", op("sin", var(1))), 0.97, parent=a.ref)
    h = member(op("+", var(0), var(1)), 0.5, parent=c.ref)
    tuned = member(op("+", op("*", var(0), const(2.4999999999999996)), op("sin", var(1))),
                   0.0122, parent=a.ref)
    with TraceWriter(path, "SearchConfig(populations=2)", background=background) as tw:
        it = tw.iteration_start(1, 1, 0, [a, b, c, d])
        it.mutation_attempts([(a, e, MutationStepTrace("rotate_tree", "accept", "pass"))], d, 1)
        it.mutation_attempts(
            [(b, f, MutationStepTrace("add_node:append", "reject", "failed_constraint_check"))],
            None, 1,
        )
        it.crossover(a, c, g, h, b, c,
                     {"type": "subtree_crossover", "result": "accept", "reason": "pass"})
        it.optimization(tuned, a.ref, tuned.ref, True)
        tw.write(it)
        it2 = tw.iteration_start(1, 2, 0, [e, f])
        it2.mutation_attempts([(e, g, MutationStepTrace.identity())], f, 1)
        # A member traced only through tuning: its entry is copied from the members dump.
        f2 = member(var(0), 1.2, parent=f.ref)
        it2.optimization(f2, f.ref, f2.ref, False)
        tw.write(it2)
    return dict(a=a, b=b, c=c, d=d, e=e, f=f, g=g, h=h, tuned=tuned)


@pytest.mark.parametrize("background", [False, True], ids=["inline", "process"])
def test_round_trip(tmp_path: Path, background: bool) -> None:
    path = tmp_path / "t.jsonl"
    m = write_small_trace(path, background)
    tf = read_trace(path, strict=True)
    assert tf.search is not None and tf.search.options == "SearchConfig(populations=2)"
    assert tf.skipped == 0 and len(tf.iterations) == 2
    it = tf.iterations[0]
    assert (it.output, it.population, it.iteration) == (1, 1, 0)
    assert [x.ref for x in it.members] == [m[k].ref for k in "abcd"]
    assert it.members[0].tree == "(x1 * 2.5) + sin(x2)"
    assert math.isinf(it.members[3].loss)
    ev_a = it.mutations[m["a"].ref].events
    assert isinstance(ev_a[0], MutateEvent) and ev_a[0].child == m["e"].ref and ev_a[0].selected
    assert ev_a[0].mutation.type == "rotate_tree" and ev_a[0].mutation.accepted
    assert isinstance(ev_a[1], CrossoverEvent) and ev_a[1].child2 == m["h"].ref
    assert isinstance(ev_a[2], TuningEvent) and ev_a[2].child == m["tuned"].ref
    assert ev_a[2].mutation.type == "simplification_and_optimization"
    assert isinstance(ev_a[3], DeathEvent)
    # the replaced member dies; the rejected mutation (skipped) kills nobody
    assert [type(e) for e in it.mutations[m["d"].ref].events] == [DeathEvent]
    assert it.mutations[m["f"].ref].events == ()
    assert it.mutations[m["f"].ref].parent == m["b"].ref
    assert isinstance(it.mutations[m["c"].ref].events[0], CrossoverEvent)
    it2 = tf.iterations[1]
    ident = it2.mutations[m["e"].ref].events[0]
    assert ident.mutation.type == "identity" and ident.mutation.reason == "identity"
    assert [type(e) for e in it2.mutations[m["f"].ref].events] == [DeathEvent, TuningEvent,
                                                                    DeathEvent]


def test_file_is_sr_jl_format(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_small_trace(path)
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    assert set(first) == {"schema_version", "record_type", "started_at", "options"}
    rec = json.loads(lines[1])
    assert set(rec) == {"schema_version", "record_type", "output", "population", "iteration",
                        "started_at", "members", "mutations"}
    assert set(rec["members"][0]) == {"tree", "loss", "cost", "complexity", "birth", "ref",
                                      "parent"}
    entry = next(iter(rec["mutations"].values()))
    assert set(entry) == {"events", "tree", "cost", "loss", "parent"}
    assert '"loss":Infinity' in lines[1]  # what SR.jl's JSON3 (allow_inf) writes
    report = validate_file(path)
    assert report.ok, report.errors


_SPECIALS = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-300, -2.5e17, 0.1, 123456.0, 1e6]


def _grow_any(rng, depth: int, nvars: int) -> tuple[list[int], list[float]]:
    """A random prefix tree over every registered operator, special constants included."""
    from ttsr_bridge.expr.operators import OPERATORS

    if depth == 0 or rng.random() < 0.3:
        if rng.random() < 0.5:
            v = _SPECIALS[rng.integers(len(_SPECIALS))] if rng.random() < 0.3 else rng.normal()
            return [0], [float(v)]
        return [int(rng.integers(1, nvars + 1))], [0.0]
    ops = sorted(OPERATORS.items())
    oid, o = ops[rng.integers(len(ops))]
    codes, vals = [-oid], [0.0]
    for _ in range(o.arity):
        c, v = _grow_any(rng, depth - 1, nvars)
        codes += c
        vals += v
    return codes, vals


@pytest.mark.parametrize("jit_after_nodes", [None, 0], ids=["numpy", "compiled"])
def test_batch_printer_matches_string_tree(jit_after_nodes) -> None:
    """The chunk printer (its NumPy passes and its compiled walk) writes exactly string_tree's
    text (as JSON literals), for every registered operator, special constants, many variables,
    and flags what it cannot print."""
    import numpy as np

    from ttsr_bridge.expr.operators import OPERATORS
    from ttsr_bridge.expr.printer import format_julia_float, string_tree
    from ttsr_bridge.traces.tracing import _FastStringTree
    from ttsr_bridge.traces.tree_batch import BatchPrinter

    rng = np.random.default_rng(1)
    fast = _FastStringTree(string_tree)
    printer = BatchPrinter(fast.forms(), fast.print_lists, format_julia_float,
                           jit_after_nodes=jit_after_nodes)
    trees = [_grow_any(rng, 6, nvars=119) for _ in range(2000)]
    codes = np.array([c for t in trees for c in t[0]], np.int64)
    vals = np.array([v for t in trees for v in t[1]], np.float64)
    lens = np.array([len(t[0]) for t in trees], np.int64)
    out = printer.print_chunk(codes.tobytes(), vals.tobytes(), lens.tobytes())
    assert printer.compiled == (jit_after_nodes is not None)
    assert len(out) == len(trees)
    for (c, v), s in zip(trees, out):
        assert json.loads(s) == string_tree(Expr(c, v)), (c, v, s)

    # An operator without a printable form here goes through the Python printer; a malformed
    # tree raises the printer's error; lengths that do not cover the nodes are refused.
    sin = -next(i for i, o in OPERATORS.items() if o.name == "sin")
    partial = BatchPrinter([f for f in fast.forms() if f[0] != sin], fast.print_lists,
                           format_julia_float, jit_after_nodes=jit_after_nodes)
    assert partial.print_chunk(np.array([sin, 1, 1]), np.zeros(3), np.array([2, 1])) == \
        ['"sin(x1)"', '"x1"']
    with pytest.raises(ValueError):  # string_tree's error for a malformed tree
        printer.print_chunk(np.array([sin]), np.zeros(1), np.array([1]))
    with pytest.raises(ValueError):  # a node after the root's end
        printer.print_chunk(np.array([1, 1, 2]), np.zeros(3), np.array([1, 2]))
    assert printer.print_chunk(np.array([sin, 1, 0]), np.array([0.0, 0.0, -0.0]),
                               np.array([2, 1])) == ['"sin(x1)"', '"-0.0"']
    with pytest.raises(ValueError, match="lengths"):
        printer.print_chunk(np.array([1, 2]), np.zeros(2), np.array([1]))


def test_batch_printer_switches_to_the_compiled_walk_after_enough_nodes(monkeypatch) -> None:
    import numpy as np

    from ttsr_bridge.expr.printer import format_julia_float, string_tree
    from ttsr_bridge.traces import tree_batch
    from ttsr_bridge.traces.tracing import _FastStringTree
    from ttsr_bridge.traces.tree_batch import BatchPrinter

    monkeypatch.setattr(tree_batch, "_compiled", None)  # as in a new process
    monkeypatch.setattr(tree_batch, "_numpy_nodes", 0)

    rng = np.random.default_rng(2)
    fast = _FastStringTree(string_tree)
    printer = BatchPrinter(fast.forms(), fast.print_lists, format_julia_float, jit_after_nodes=500)
    never = BatchPrinter(fast.forms(), fast.print_lists, format_julia_float, jit_after_nodes=None)
    seen = []
    for _ in range(6):
        trees = [_grow_any(rng, 5, nvars=3) for _ in range(40)]
        codes = np.array([c for t in trees for c in t[0]], np.int64)
        vals = np.array([v for t in trees for v in t[1]], np.float64)
        lens = np.array([len(t[0]) for t in trees], np.int64)
        assert printer.print_chunk(codes, vals, lens) == never.print_chunk(codes, vals, lens)
        seen.append(printer.compiled)
    assert seen[0] is False and seen[-1] is True and not never.compiled
    assert 0 < tree_batch.nodes_printed() <= 500  # the chunk that crossed it was compiled


def test_memoised_float_text_is_jfloat() -> None:
    # The writer's float texts are memoised by value: a dict takes 0.0 and -0.0 (and 1 and
    # 1.0) as one key, and NaN is never equal to itself; every text must still be jfloat's.
    import numpy as np

    from ttsr_bridge.traces.tracing_render import _jfloat_fast, jfloat

    values = [0.0, -0.0, 0.0, 1, 1.0, -1.0, 1, 0.1, math.nan, math.nan, math.inf, -math.inf,
              np.float64(2.5), np.float32(0.1), 0.10000000149011612, 5e-324, -0.0, 1e300]
    for v in values + values[::-1]:
        assert _jfloat_fast(v) == jfloat(v), v


@pytest.mark.parametrize("background", [False, True])
def test_optimization_of_unknown_ref_fails_the_writer(tmp_path: Path, background: bool) -> None:
    # The ref is checked where the record is rendered: inline at the write, in a writer
    # process at the latest when closing; either way the error names the ref.
    from ttsr_bridge.traces.tracing_process import TraceWriterError

    tw = TraceWriter(tmp_path / "t.jsonl", "x", background=background)
    it = tw.iteration_start(1, 1, 0, [member(var(0), 1.0)])
    it.optimization(member(var(0), 1.0), 123456, 7, False)
    with pytest.raises((ValueError, TraceWriterError), match="ref 123456, neither traced"):
        tw.write(it)
        tw.close()
    tw.close()


def test_fast_printer_matches_string_tree() -> None:
    import numpy as np

    from ttsr_bridge.expr.printer import string_tree
    from ttsr_bridge.traces.tracing import _FastStringTree

    rng = np.random.default_rng(0)
    fast = _FastStringTree(string_tree)
    for _ in range(3000):
        e = Expr(*_grow_any(rng, 5, nvars=3))
        assert fast(e) == string_tree(e), (e.codes, e.vals)


# ---- byte-for-byte against a plain reference (SR.jl's dict semantics + json.dumps) ---------------

def _random_tree(rng) -> Expr:
    import numpy as np

    specials = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-300, -2.5e17, 0.1, 1e6]

    def grow(depth: int) -> tuple[list[int], list[float]]:
        if depth == 0 or rng.random() < 0.3:
            if rng.random() < 0.5:
                v = specials[rng.integers(len(specials))] if rng.random() < 0.3 else rng.normal()
                return [0], [float(v)]
            return [int(rng.integers(1, 4))], [0.0]
        name = ["+", "-", "*", "/", "sin", "cos", "exp", "square"][rng.integers(8)]
        sub = [grow(depth - 1) for _ in range(1 if name in ("sin", "cos", "exp", "square") else 2)]
        codes = [op(name, *[var(0)] * len(sub)).codes[0]]
        vals = [0.0]
        for c, v in sub:
            codes += c
            vals += v
        return codes, vals

    del np
    return Expr(*grow(4))


class _Reference:
    """SR.jl's Tracing.jl semantics on plain dicts, dumped with json.dumps."""

    def __init__(self, tw: TraceWriter) -> None:
        self.tw = tw
        self.lines: list[str] = []
        self.rec: dict = {}

    def start(self, members: list[Member], started_at: float) -> None:
        self.rec = {"schema_version": 1, "record_type": "iteration", "output": 1, "population": 1,
                    "iteration": 0, "started_at": started_at,
                    "members": [{"tree": self.tw.tree_string(m), "loss": float(m.loss),
                                 "cost": float(m.cost), "complexity": m.complexity,
                                 "birth": m.birth, "ref": m.ref, "parent": m.parent}
                                for m in members],
                    "mutations": {}}

    def entry(self, m: Member) -> None:
        muts = self.rec["mutations"]
        if str(m.ref) not in muts:
            muts[str(m.ref)] = {"events": [], "tree": self.tw.tree_string(m),
                                "cost": float(m.cost), "loss": float(m.loss), "parent": m.parent}

    def event(self, ref: int, ev: dict) -> None:
        self.rec["mutations"][str(ref)]["events"].append(ev)

    def end(self) -> None:
        self.lines.append(json.dumps(self.rec, separators=(",", ":")))


@pytest.mark.parametrize("compact", [False, True], ids=["srjl_hooks", "engine_compact_hooks"])
def test_bytes_match_a_plain_json_reference(tmp_path: Path, monkeypatch, compact: bool) -> None:
    """Both hook families (SR.jl's general ones, and the engine's compact ``mutation`` /
    ``crossover_pair`` that send only new children) write SR.jl's dict semantics exactly."""
    import numpy as np

    from ttsr_bridge.traces import tracing

    clock = iter(1.7e9 + 0.001 * k for k in itertools.count())
    now = {"t": 0.0}

    def fake_time() -> float:
        now["t"] = next(clock)
        return now["t"]

    monkeypatch.setattr(tracing, "_time", fake_time)
    monkeypatch.setattr(tracing.time, "time", fake_time)
    rng = np.random.default_rng(3)
    path = tmp_path / "t.jsonl"
    with TraceWriter(path, "opts", background=False) as tw:
        ref = _Reference(tw)
        pop = [member(_random_tree(rng), float(rng.choice([0.5, math.inf, math.nan, 1e-3])))
               for _ in range(6)]
        for it_no in range(3):
            it = tw.iteration_start(1, 1, it_no, pop)
            ref.start(pop, now["t"])
            ref.rec["iteration"] = it_no
            for _ in range(40):
                kind = rng.integers(3)
                if kind == 0:
                    parent = pop[rng.integers(len(pop))]
                    child = member(_random_tree(rng) if rng.random() < 0.7 else parent.tree,
                                   float(rng.normal() ** 2), parent=parent.ref)
                    kill = rng.integers(len(pop)) if rng.random() < 0.8 else None
                    step = MutationStepTrace(str(rng.choice(["swap_operands", "neural"])),
                                             *(("accept", "pass") if kill is not None
                                               else (None, None)))
                    if compact:
                        it.mutation(parent, child, step.type, step.result, step.reason,
                                    pop[kill] if kill is not None else None)
                    else:
                        it.mutation_attempts([(parent, child, step)],
                                             pop[kill] if kill is not None else None, 1)
                    if kill is not None:
                        ref.entry(pop[kill])
                    ref.entry(parent)
                    ref.entry(child)
                    ref.event(parent.ref, {"type": "mutate", "time": now["t"], "child": child.ref,
                                           "selected": True, "mutation": step.to_json()})
                    if kill is not None:
                        ref.event(pop[kill].ref, {"type": "death", "time": now["t"]})
                        pop[kill] = child
                elif kind == 1:
                    i, j = rng.choice(len(pop), 2, replace=False)
                    c1 = member(_random_tree(rng), 1.0, parent=pop[i].ref)
                    c2 = member(_random_tree(rng), 2.0, parent=pop[j].ref)
                    o1, o2 = rng.choice(len(pop), 2, replace=False)
                    details = {"result": "accept", "reason": "pass"}
                    hook = it.crossover_pair if compact else it.crossover
                    hook(pop[i], pop[j], c1, c2, pop[o1], pop[o2], details)
                    for m in (pop[i], pop[j], c1, c2, pop[o1], pop[o2]):
                        ref.entry(m)
                    ev = {"type": "crossover", "time": now["t"], "parent1": pop[i].ref,
                          "parent2": pop[j].ref, "child1": c1.ref, "child2": c2.ref,
                          "details": {**details, "type": "subtree_crossover"}}
                    ref.event(pop[i].ref, ev)
                    ref.event(pop[j].ref, ev)
                    ref.event(pop[o1].ref, {"type": "death", "time": now["t"]})
                    ref.event(pop[o2].ref, {"type": "death", "time": now["t"]})
                    pop[o1], pop[o2] = c1, c2
            # tuning of every member, as the engine's optimize step
            for k, m in enumerate(pop):
                tuned = member(m.tree, m.loss, parent=m.ref)
                it.optimization(tuned, m.ref, tuned.ref, bool(k % 2))
                ref.entry(tuned)
                if str(m.ref) not in ref.rec["mutations"]:
                    start = next(x for x in ref.rec["members"] if x["ref"] == m.ref)
                    ref.rec["mutations"][str(m.ref)] = {"events": [], **start}
                kind_name = "simplification_and_optimization" if k % 2 else "simplification"
                ref.event(m.ref, {"type": "tuning", "time": now["t"], "child": tuned.ref,
                                  "mutation": {"type": kind_name}})
                ref.event(m.ref, {"type": "death", "time": now["t"]})
                pop[k] = tuned
            tw.write(it)
            ref.end()
    lines = path.read_text().splitlines()
    assert lines[1:] == ref.lines


def test_numpy_scalars_are_written_as_plain_numbers(tmp_path: Path) -> None:
    import numpy as np

    plain = Member(op("sin", var(0)), 0.25, 1.5, 2, 3, 7, -1)
    numpy_m = Member(plain.tree, np.float64(0.25), np.float32(1.5), np.int64(2), np.int32(3),
                     np.int64(7), np.int64(-1))
    out = []
    for m, bg in ((plain, False), (numpy_m, True), (numpy_m, False)):
        path = tmp_path / f"{len(out)}.jsonl"
        with TraceWriter(path, "x", background=bg) as tw:
            it = tw.iteration_start(1, 1, 0, [m])
            child = Member(op("cos", var(0)), np.float64(0.5), 0.5, 2, 4, np.int64(8), m.ref)
            it.mutation_attempts([(m, child, MutationStepTrace("mutate_operator", "accept",
                                                              "pass"))], m, np.int64(1))
            tw.write(it)
        out.append(json.loads(path.read_text().splitlines()[1]))
    for rec in out:
        rec.pop("started_at")
        for e in rec["mutations"].values():
            for ev in e["events"]:
                ev.pop("time")
    assert out[0] == out[1] == out[2]


@pytest.mark.parametrize("background", [False, True], ids=["inline", "process"])
def test_events_after_a_death_are_kept(tmp_path: Path, background: bool) -> None:
    """The renderer writes a dead ref's entry at its death (so that ending a record is cheap);
    the general hooks may still name it afterwards, and then every event is in the file."""
    a, b, c = (member(var(0), 1.0), member(var(1), 2.0), member(op("sin", var(0)), 3.0))
    k1 = member(op("cos", var(0)), 0.5, parent=a.ref)
    k2 = member(op("exp", var(1)), 0.25, parent=b.ref)
    k3 = member(op("+", var(0), var(1)), 0.125, parent=b.ref)
    path = tmp_path / "t.jsonl"
    with TraceWriter(path, "opts", background=background) as tw:
        it = tw.iteration_start(1, 1, 0, [a, b, c])
        it.mutation_attempts([(a, k1, MutationStepTrace("mutate_operator", "accept", "pass"))], b, 1)
        # b is dead now; a later mutation of b and a second death still land on its entry
        it.mutation_attempts([(b, k2, MutationStepTrace("swap_operands", "accept", "pass"))], c, 1)
        it.mutation_attempts([(k1, k3, MutationStepTrace("rotate_tree", "accept", "pass"))], b, 1)
        tw.write(it)
    rec = json.loads(path.read_text().splitlines()[1])
    events_b = [e["type"] for e in rec["mutations"][str(b.ref)]["events"]]
    assert events_b == ["death", "mutate", "death"]
    assert [e["type"] for e in rec["mutations"][str(c.ref)]["events"]] == ["death"]
    assert list(rec["mutations"]) == [str(r) for r in (b.ref, a.ref, k1.ref, c.ref, k2.ref, k3.ref)]


def test_renderer_takes_trees_from_a_table_and_checks_slots() -> None:
    """``feed`` with a tree table: slots pick rows (any order, repeats allowed) between the
    trees sent one by one; slots that do not match the chunk are a clear error."""
    import numpy as np

    from ttsr_bridge.traces.tracing_render import OP_BEGIN, OP_END, OP_ENTRY, TraceRenderer

    own = [op("sin", var(0))]
    table = [var(1), op("+", var(0), const(2.5)), op("cos", var(1))]
    tcodes = np.array([c for t in table for c in t.codes], np.int64).tobytes()
    tvals = np.array([v for t in table for v in t.vals], np.float64).tobytes()
    tlens = np.array([len(t) for t in table], np.int64).tobytes()
    codes = np.array(own[0].codes, np.int64).tobytes()
    vals = np.array(own[0].vals, np.float64).tobytes()
    lens = np.array([len(own[0])], np.int64).tobytes()
    members = [(1, 0.5, 0.5, 1, 0, -1), (2, 0.25, 0.25, 2, 0, -1), (3, 1.0, 1.0, 2, 0, -1)]
    ops = [OP_BEGIN, 0, 1, 1, 0, 1.0, members, OP_ENTRY, 0, 9, 1, 0.1, 0.2, OP_END, 0]
    slots = np.array([2, -1, 1, 1], np.int64).tobytes()  # members from rows 2, own, 1; entry 1
    line = TraceRenderer().feed(ops, codes, vals, lens, tcodes, tvals, tlens, slots)[0]
    rec = json.loads(line)
    assert [m["tree"] for m in rec["members"]] == ["cos(x2)", "sin(x1)", "x1 + 2.5"]
    assert rec["mutations"]["9"]["tree"] == "x1 + 2.5"
    for bad in ([2, 1, 1, 1], [2, -1, 3, 1], [2, -1, 1]):  # own tree unused; row 3; too few
        with pytest.raises(ValueError, match="malformed trace event stream"):
            TraceRenderer().feed(ops, codes, vals, lens, tcodes, tvals, tlens,
                                 np.array(bad, np.int64).tobytes())
