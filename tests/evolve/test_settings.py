"""A run's settings: checked by parameter name (the command line alone names the flag), and the
named presets as library objects."""

import pytest

from evoproxy.cli import build_parser
from evoproxy.cli.args import flag_for
from evoproxy.errors import ParameterError
from evoproxy.evolve import PRESETS, CSPSettings, EvolutionSettings, expand_benches, transfer_benches
from evoproxy.proxy import Genome, get_genome


@pytest.mark.parametrize(
    "owner, values, param, flag",
    [
        (EvolutionSettings, {"population": 1}, "population", "--population"),
        (EvolutionSettings, {"samples": 3}, "samples", "--samples"),
        (EvolutionSettings, {"ratio": 0.0}, "ratio", "--ratio"),
        (EvolutionSettings, {"strategy": "annealing"}, "strategy", "--strategy"),
        (EvolutionSettings, {"benches": ()}, "benches", "--benches"),
        (EvolutionSettings, {"islands": 257}, "islands", "--islands"),
        (EvolutionSettings, {"parsimony": float("inf")}, "parsimony", "--parsimony"),
        (EvolutionSettings, {"select_top": -1}, "select_top", "--select-top"),
        (EvolutionSettings, {"perturb_around": 1}, "perturb_around", "--perturb-around"),
        (CSPSettings, {"timeout_s": 0.0}, "timeout_s", "--candidate-timeout"),
        (CSPSettings, {"timeout_s": 86_401.0}, "timeout_s", "--candidate-timeout"),
    ],
)
def test_a_setting_out_of_range_names_its_parameter_and_the_command_line_its_flag(owner, values, param, flag):
    with pytest.raises(ParameterError) as caught:
        owner(**values)
    error = caught.value
    assert (error.owner, error.param) == (owner.__name__, param)
    assert str(error).startswith(f"{owner.__name__}.{param} must be") and "--" not in str(error)
    assert flag_for(error) == flag


def test_stored_settings_out_of_range_are_a_damaged_run_not_a_flag():
    stored = {**EvolutionSettings().to_dict(), "population": 1}
    with pytest.raises(Exception, match="the stored run settings are not valid") as caught:
        EvolutionSettings.from_dict(stored)
    assert not isinstance(caught.value, ParameterError)


def test_the_wide_set_names_the_wider_zoos_main_benches_apart_from_the_zoos():
    wide = expand_benches("wide")
    assert wide == (
        "fmnist-convnext-w234",
        "fmnist-mixer-adamw-w234",
        "fmnist-mobilenetv2-adamw-w234",
        "fmnist-resnet20-adamw-w234",
        "fmnist-shufflenet-adamw-w234",
        "fmnist-squeezenet-adamw-w234",
        "fmnist-vgg-adamw-w234",
        "fmnist-widehead-w234",
    )
    assert not set(wide) & set(expand_benches("zoo")) and len(expand_benches("zoo")) == 6
    assert expand_benches(("zoo", "wide")) == expand_benches("zoo") + wide


def test_a_preset_is_its_values_over_the_defaults_with_overrides_over_both():
    zoo = EvolutionSettings.preset("zoo")
    assert zoo.benches == tuple(transfer_benches([])) and len(zoo.benches) == 6
    assert (zoo.space, zoo.samples, zoo.islands, zoo.iterations) == ("bitaware", 0, 2, 500)
    assert [Genome.from_json(g).wl_hash() for g in zoo.init] == [get_genome("hawq-v2").wl_hash()]
    assert zoo.ratio == EvolutionSettings().ratio  # what the preset does not name is the default

    mine = EvolutionSettings.preset("strong", iterations=3, init=(get_genome("fisher"), "emq-paper"), seed=7)
    assert (mine.iterations, mine.seed, mine.population, mine.islands) == (3, 7, 50, 4)
    assert [Genome.from_json(g).wl_hash() for g in mine.init] == [
        get_genome("fisher").wl_hash(),
        get_genome("emq-paper").wl_hash(),
    ]
    assert EvolutionSettings.preset("paper", benches="fmnist-vgg-w345").benches == ("fmnist-vgg-w345",)
    with pytest.raises(ParameterError, match="preset must be one of paper, strong, zoo, got 'fast'"):
        EvolutionSettings.preset("fast")


def test_zoo_among_bench_names_stands_for_every_main_bench_each_once():
    assert expand_benches(["fmnist-vgg-w345", "zoo", "fmnist-vgg-w345", "fmnist-vgg-w234"]) == (
        "fmnist-vgg-w345",
        *transfer_benches([]),
    )


def test_the_command_line_offers_the_library_presets_and_groups_the_evolve_flags():
    parser = build_parser()
    evolve = parser._subparsers._group_actions[0].choices["evolve"]
    (preset,) = [a for a in evolve._actions if a.dest == "preset"]
    assert preset.choices == sorted(PRESETS) and preset.default == "zoo"
    groups = {g.title: {a.dest for a in g._group_actions} for g in evolve._action_groups}
    assert {"population", "islands", "ratio"} <= groups["population and variation"]
    assert {"iterations", "hours", "patience"} == groups["budget"]
    assert {"jobs", "backend", "scheduler", "device"} == groups["parallelism"]
    assert {"no_equivalence", "no_conflict", "no_invalid", "no_insensitive", "candidate_timeout"} == groups[
        "screening (CSP)"
    ]
