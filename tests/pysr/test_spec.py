"""PySR parameter plumbing without pysr or Julia."""

from __future__ import annotations

import inspect
import shutil
import sys

import numpy as np
import pytest

from ttsr_bridge.expr.operators import OperatorSet
from ttsr_bridge.pysr.bench_adapter import pysr_bench_kwargs
from ttsr_bridge.pysr.julia_env import julia_package_path
from ttsr_bridge.pysr.spec import (
    NEURAL_PARAMETERS,
    TTSRBRIDGE_UUID,
    JuliaMutationSpec,
    JuliaPluginSpec,
    NeuralSpec,
    PySRBudget,
    combined_init_signature,
    pysr_fit_overrides,
    pysr_operator_names,
    uses_worker_processes,
)
from ttsr_bridge.pysr.tracing import pysr_trace_kwargs


def test_import_ttsr_bridge_does_not_import_pysr():
    import subprocess

    code = "import ttsr_bridge, ttsr_bridge.pysr.spec, ttsr_bridge.pysr.tracing, ttsr_bridge.pysr.bench_adapter, sys; print('pysr' in sys.modules, 'juliacall' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_neural_spec_from_params_and_validation():
    assert NeuralSpec.from_params({"neural_proposer": None}) is None
    spec = NeuralSpec.from_params({**NEURAL_PARAMETERS, "neural_proposer": "m.onnx", "neural_weight": 0.5, "neural_server_args": ["--max-batch", "64"]})
    assert spec == NeuralSpec("m.onnx", 0.5, 2.0, True, False, ("--max-batch", "64"))
    for bad in ({"weight": -1.0}, {"weight": float("nan")}, {"timeout_s": 0.0}, {"proposer": ""}):
        with pytest.raises(ValueError):
            NeuralSpec(**{"proposer": "default", **bad})


def test_julia_plugin_spec_is_typed_and_validated():
    spec = NeuralSpec("default", weight=0.25, timeout_s=1.5).plugin("127.0.0.1", 8765)
    assert spec.config_kwargs() == {"host": "127.0.0.1", "port": 8765, "timeout_s": 1.5}
    assert spec.plugin_kwargs() == {"weight": 0.25, "feedback": True, "require_server": False}
    assert all(type(v) in (str, int, float, bool) for v in {**spec.config_kwargs(), **spec.plugin_kwargs()}.values())
    with pytest.raises(ValueError):
        JuliaPluginSpec('127.0.0.1"); run(`rm -rf /`); ("', 1, 1.0, 1.0, True, False)
    for port in (0, 70000, True, "80"):
        with pytest.raises(ValueError):
            JuliaPluginSpec("127.0.0.1", port, 1.0, 1.0, True, False)


def test_fit_overrides_append_plugin_and_worker_imports():
    spec = NeuralSpec("default")
    user_plugin = object()
    over = pysr_fit_overrides({"plugins": [user_plugin], "parallelism": "multithreading"}, spec, "127.0.0.1", 9000)
    assert over["plugins"][0] is user_plugin and isinstance(over["plugins"][1], JuliaPluginSpec)
    assert "worker_imports" not in over
    over = pysr_fit_overrides({"plugins": None, "parallelism": "multiprocessing", "worker_imports": ["Foo"]}, spec, "127.0.0.1", 9000)
    assert over["worker_imports"] == ["Foo", "TTSRBridge"]


def test_default_mutations_get_the_neural_mutation_explicitly():
    # SR.jl drops plugin mutations when `default_mutations` is given (src/core/Options.jl), so the
    # neural move must then be an explicit `mutations` entry; otherwise the plugin supplies it.
    spec = NeuralSpec("default", weight=0.75)
    assert "mutations" not in pysr_fit_overrides({"plugins": None}, spec, "127.0.0.1", 9000)
    user_key = object()
    over = pysr_fit_overrides(
        {"plugins": None, "default_mutations": {object(): 1.0}, "mutations": {user_key: 0.5}}, spec, "127.0.0.1", 9000
    )
    (neural,) = [m for m in over["mutations"] if isinstance(m, JuliaMutationSpec)]
    assert over["mutations"][user_key] == 0.5 and over["mutations"][neural] == 0.75
    assert neural.plugin == over["plugins"][0] and neural.weight == 0.75
    zero = NeuralSpec("default", weight=0.0)
    assert "mutations" not in pysr_fit_overrides({"default_mutations": {}}, zero, "127.0.0.1", 9000)


class _RecordingBridge:
    """Records the constructor calls `build` makes (the Julia module is not available here)."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def constructor(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return (name, args, kwargs)

        return constructor


def test_specs_build_julia_objects_from_typed_keywords():
    plugin = NeuralSpec("default", weight=0.5, timeout_s=1.5, feedback=False).plugin("127.0.0.1", 8765)
    bridge = _RecordingBridge()
    JuliaMutationSpec(plugin).build(bridge)
    plugin.build(bridge)
    config = ("BridgeConfig", (), {"host": "127.0.0.1", "port": 8765, "timeout_s": 1.5})
    assert bridge.calls == [
        config,
        ("NeuralMutation", (config,), {}),
        config,
        ("NeuralProposerPlugin", (), {"config": config, "weight": 0.5, "feedback": False, "require_server": False}),
    ]


def test_worker_processes_detection_follows_pysr_parallelism_mapping():
    assert not uses_worker_processes({"parallelism": "multithreading"})
    assert not uses_worker_processes({})
    assert uses_worker_processes({"parallelism": "multiprocessing"})
    assert uses_worker_processes({"cluster_manager": "slurm"})
    assert uses_worker_processes({"multithreading": False, "procs": 4})  # PySR's deprecated form
    assert not uses_worker_processes({"multithreading": False, "procs": 0})
    assert not uses_worker_processes({"multithreading": True, "procs": 4})


class _FakePySR:
    """Stands in for pysr.PySRRegressor's __init__ signature shape (keyword params + **kwargs)."""

    def __init__(self, model_selection="best", *, binary_operators=None, niterations=100, **kwargs):
        pass


def test_combined_signature_feeds_sklearn_get_params_and_clone():
    from sklearn.base import BaseEstimator, clone

    class Est(BaseEstimator):
        def __init__(self, **params):
            for k, v in {**NEURAL_PARAMETERS, "model_selection": "best", "binary_operators": None, "niterations": 100}.items():
                setattr(self, k, params.pop(k, v))
            assert not params

    Est.__init__.__signature__ = combined_init_signature(_FakePySR.__init__, NEURAL_PARAMETERS)
    names = list(inspect.signature(Est.__init__).parameters)[1:]
    assert names[: len(NEURAL_PARAMETERS)] == list(NEURAL_PARAMETERS)
    assert {"model_selection", "binary_operators", "niterations"} <= set(names) and "kwargs" not in names
    est = Est(neural_proposer="m.onnx", niterations=7)
    est2 = clone(est)
    assert est2.get_params()["neural_proposer"] == "m.onnx" and est2.niterations == 7
    est2.set_params(neural_weight=0.1)
    assert est2.neural_weight == 0.1


def test_budget_operator_names_and_kwargs(tmp_path):
    assert PySRBudget.coerce(5).niterations == 5
    with pytest.raises(ValueError):
        PySRBudget.coerce(0)
    ops = OperatorSet.from_names(["+", "*", "^"], ["sin", "log"])
    assert pysr_operator_names(ops) == (["+", "*", "^"], ["sin", "log"])
    assert pysr_operator_names(None) == (["+", "-", "*", "/"], [])

    class P:
        name = "toy"
        operators = ops

    kw = pysr_trace_kwargs(P(), 3, tmp_path / "t.jsonl", PySRBudget(niterations=2, populations=3))
    assert kw["use_tracing"] and kw["tracing_file"] == str(tmp_path / "t.jsonl")
    assert kw["deterministic"] and kw["parallelism"] == "serial" and kw["random_state"] == 3
    assert kw["niterations"] == 2 and kw["populations"] == 3 and kw["unary_operators"] == ["sin", "log"]
    assert pysr_bench_kwargs(1, 4, None)["niterations"] == 4


def test_julia_package_is_found_and_uuid_matches():
    import tomllib

    path = julia_package_path()
    assert tomllib.loads((path / "Project.toml").read_text())["uuid"] == TTSRBRIDGE_UUID


@pytest.mark.julia
@pytest.mark.skipif(shutil.which("julia") is None, reason="needs a julia executable on PATH (PySR + SR.jl)")
def test_pysr_regressor_neural_fit_end_to_end():
    from sklearn.base import clone

    from ttsr_bridge.pysr.regressor import PySRRegressor, bridge_stats

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 2))
    y = 2 * X[:, 0] + np.sin(X[:, 1])
    model = PySRRegressor(neural_proposer="classic", neural_weight=2.0, niterations=2, populations=4,
                          population_size=20, binary_operators=["+", "*"], unary_operators=["sin"],
                          progress=False, verbosity=0, temp_equation_file=True)
    assert clone(model).get_params()["neural_proposer"] == "classic"
    model.fit(X, y)
    assert model.plugins is None  # fit restored the user's parameters
    assert bridge_stats()["requests"] > 0
    import pickle

    assert pickle.loads(pickle.dumps(model)).predict(X).shape == (64,)
