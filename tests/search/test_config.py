import pytest

from ttsr_bridge.config_io import ConfigError
from ttsr_bridge.search import PYSR_MUTATION_WEIGHTS, SRJL_MUTATION_WEIGHTS, SearchConfig


def test_pysr_preset_matches_pysr_defaults():
    c = SearchConfig.preset("pysr")
    assert (c.populations, c.population_size, c.ncycles_per_iteration) == (31, 27, 380)
    assert (c.tournament_selection_n, c.tournament_selection_p) == (15, 0.982)
    assert c.crossover_probability == 0.2 and c.annealing is True and c.alpha == 3.17
    assert c.adaptive_parsimony_scaling == 1040.0 and c.topn == 12
    assert (c.optimizer_nrestarts, c.optimizer_iterations, c.optimize_probability) == (2, 8, 0.14)
    assert c.mutation_weights == PYSR_MUTATION_WEIGHTS
    assert c.mutation_weights.rotate_tree == 4.26 and SRJL_MUTATION_WEIGHTS.mutate_operator == 3.63


def test_basic_preset():
    c = SearchConfig.preset("basic")
    assert c.populations == 1 and not c.annealing and not c.use_frequency
    assert c.constant_set == (1.0, 2.0) and c.basic_elitism


def test_validation_errors_are_clear():
    with pytest.raises(ConfigError, match="tournament_selection_n"):
        SearchConfig.preset("pysr", population_size=10)
    with pytest.raises(ConfigError, match="unknown"):
        SearchConfig.preset("pysr").replace(nope=1)
    with pytest.raises(ConfigError, match="unknown key"):
        SearchConfig.from_mapping({"populations": 2, "bogus": 1})
    with pytest.raises(ConfigError):
        SearchConfig.from_mapping({"populations": "two"})
    with pytest.raises(KeyError):
        SearchConfig(binary_operators=("+", "frobnicate"))
    with pytest.raises(ConfigError, match="unknown SearchConfig preset"):
        SearchConfig.preset("julia")


def test_replace_and_mapping():
    c = SearchConfig.from_mapping({"populations": 3, "complexity_of_operators": {"*": 2},
                                   "mutation_weights": {"add_node": 1.0}}, preset="pysr")
    assert c.populations == 3 and c.complexity_of_operators == (("*", 2),)
    assert c.mutation_weights.add_node == 1.0 and c.mutation_weights.rotate_tree == 4.26
    assert c.replace(mutation_weights={"neural": 2.0}).mutation_weights.neural == 2.0
