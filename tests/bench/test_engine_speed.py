import json

from ttsr_bridge.bench import engine_speed


def test_engine_speed_json_line(capsys):
    assert engine_speed.main(["--json", "--evals", "3000"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    out = json.loads(line)
    assert out["engine_evals_per_s"] > 0 and out["engine_evals"] >= 3000
    if out["operon_evals_per_s"] is not None:
        assert out["ratio"] > 0


def test_engine_speed_repeat_reports_medians(capsys):
    assert engine_speed.main(["--json", "--evals", "2000", "--repeat", "2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    runs = out["engine_evals_per_s_runs"]
    assert out["repeat"] == 2 and len(runs) == 2
    assert min(runs) <= out["engine_evals_per_s"] <= max(runs)
