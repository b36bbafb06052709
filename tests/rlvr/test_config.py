from pathlib import Path

import pytest

from rlvr.config import Config, ConfigError, load_config, to_dict

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))


def test_defaults_construct():
    cfg = Config()
    assert cfg.algo.group_size == 8 and cfg.reward.terms[0].name == "reasoning_gym"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_loads(path):
    cfg = load_config(path)
    assert cfg.train.steps > 0


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"tiny_arith_grpo.toml", "gsm8k_grpo.toml", "math_grpo.toml", "smollm2_gsm8k_grpo.toml"} <= names


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[algo]\ngroup_sise = 4\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: unknown key 'algo\.group_sise'"):
        load_config(path)


def test_unknown_section(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[algorithm]\ngroup_size = 4\n")
    with pytest.raises(ConfigError, match="unknown key 'algorithm'"):
        load_config(path)


def test_wrong_type_and_literal(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[algo]\ngroup_size = "eight"\n')
    with pytest.raises(ConfigError, match="algo.group_size = 'eight' is not a valid int"):
        load_config(path)
    with pytest.raises(ConfigError, match="not one of"):
        load_config(None, ["loss.aggregation=token-sum"])


def test_invalid_toml_names_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[algo\n")
    with pytest.raises(ConfigError, match="broken.toml: invalid TOML"):
        load_config(path)


def test_overrides():
    cfg = load_config(None, [
        "algo.group_size=16", "loss.clip_high=0.28", "model.path=/data/ckpt", "reward.terms.0.weight=0.5",
        "data.task_kwargs.min_terms=3", "learner.betas=[0.9, 0.95]", "loss.dual_clip=3.0",
    ])
    assert cfg.algo.group_size == 16 and cfg.loss.clip_high == 0.28
    assert cfg.model.path == "/data/ckpt"  # bare strings need no TOML quotes
    assert cfg.reward.terms[0].weight == 0.5
    assert cfg.data.task_kwargs == {"min_terms": 3}
    assert cfg.learner.betas == (0.9, 0.95) and cfg.loss.dual_clip == 3.0


@pytest.mark.parametrize("item, message", [
    ("algo.grup_size=3", r"unknown key 'algo.grup_size' .*\(did you mean 'algo.group_size'\?\)$"),
    ("algos.group_size=3", r"unknown key 'algos' .*\(did you mean 'algo.group_size'\?\)$"),
    ("nosection.x=1", "unknown key 'nosection' in override 'nosection.x=1'$"),  # nothing close: no guess
    ("reward.terms.5.weight=1", "unknown key"),
    ("algo.group_size", "override 'algo.group_size' has no '=': write key=value"),
])
def test_bad_overrides(item, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [item])


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="group_size must be >= 2"):
        load_config(None, ["algo.group_size=1"])
    # minibatches split prompts: 3 prompts in 2 minibatches is fine, 5 minibatches of 4 prompts is not
    assert load_config(None, ["data.batch_size=3", "algo.group_size=3", "algo.minibatches=2"]).algo.minibatches == 2
    with pytest.raises(ConfigError, match="more than the prompts per step"):
        load_config(None, ["data.batch_size=4", "algo.group_size=8", "algo.minibatches=5"])
    with pytest.raises(ConfigError, match="without loss scaling"):
        load_config(None, ["model.dtype=float16"])
    with pytest.raises(ConfigError, match="per-sequence loss.aggregation"):
        load_config(None, ["loss.policy=gspo"])
    with pytest.raises(ConfigError, match="dual_clip must be > 1"):
        load_config(None, ["loss.dual_clip=0.5"])
    with pytest.raises(ConfigError, match="no meaning"):
        load_config(None, ["algo.advantage=gae", "algo.advantage_norm=group"])
    with pytest.raises(ConfigError, match="distill.teacher"):
        load_config(None, ["algo.advantage=none"])
    assert load_config(None, ["eval.n=4", "eval.k=[1, 4]"]).eval.k == (1, 4)
    with pytest.raises(ConfigError, match=r"eval.k = \[1, 8\]: each k must lie in 1..eval.n \(4\)"):
        load_config(None, ["eval.n=4", "eval.k=[1, 8]"])


def test_to_dict_round_trips():
    cfg = load_config(None, ["algo.group_size=4"])
    assert Config.__name__ and to_dict(cfg)["algo"]["group_size"] == 4
    assert load_config(None, []) == Config()


def test_extends_starts_from_the_base_file(tmp_path):
    (tmp_path / "base.toml").write_text('[algo]\ngroup_size = 4\nepochs = 2\n[data]\nbatch_size = 8\n')
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[algo]\nepochs = 3\n')
    cfg = load_config(tmp_path / "child.toml")
    assert (cfg.algo.group_size, cfg.algo.epochs, cfg.data.batch_size) == (4, 3, 8)  # tables merge key by key
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.toml")


def test_method_presets_change_only_what_their_method_needs():
    base = to_dict(load_config("examples/tiny_arith_grpo.toml"))
    allowed = {"algo", "loss", "critic", "distill", "train", "learner", "data"}
    for preset in sorted(Path("examples").glob("tiny_arith_*.toml")):
        changed = {k for k, v in to_dict(load_config(preset)).items() if v != base[k]}
        # LoRA RL adapts a model that already solves part of the task (Tina): an SFT'd base, no cold start
        extra = {"model", "sft"} if preset.name == "tiny_arith_lora.toml" else set()
        assert changed <= allowed | extra, (preset, changed)


def test_cross_key_checks_run_once_all_overrides_are_in():
    """Defect: each override built (and checked) a whole config, so a rule spanning keys failed or passed
    depending on the order on the command line."""
    keys = ["cluster.placement=colocated", "learner.gpus=1", "rollout.gpus_per_engine=1"]
    assert load_config(None, keys) == load_config(None, keys[::-1])
    with pytest.raises(ConfigError, match="must both be on GPUs"):
        load_config(None, keys[:2])  # the rule itself still holds, whatever the order
    with pytest.raises(ConfigError, match="learner.gpus = 'x' is not a valid int"):
        load_config(None, ["learner.gpus=x", "learner.ranks=2"])  # a bad value is named as it comes


def test_allowed_names_are_the_tables_keys():
    """One owner per name: each Literal of the config lists exactly its table's keys (plus the documented
    names that are not entries), so adding an entry is one edit and a stale name fails here."""
    import typing

    from rlvr import config
    from rlvr.algorithms.advantages import ESTIMATORS
    from rlvr.algorithms.losses import AGGREGATIONS, KL_ESTIMATORS, MISMATCH_CORRECTIONS, POLICY_LOSSES

    def names(literal) -> set[str]:
        return set(typing.get_args(literal))

    assert names(config.Advantage) == set(ESTIMATORS) | {"gae", "none"}  # gae: the critic; none: distillation
    assert names(config.PolicyObjective) == set(POLICY_LOSSES)
    assert names(config.KLEstimator) == set(KL_ESTIMATORS)
    assert names(config.Mismatch) == set(MISMATCH_CORRECTIONS) | {"none", "auto"}  # weight 1; resolved by the builder
    assert names(config.Aggregation) == set(AGGREGATIONS)


def test_config_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, rlvr.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_loss_kernel_names_the_key_when_wrong():
    assert load_config(None, ["loss.kernel=triton"]).loss.kernel == "triton"
    with pytest.raises(ConfigError, match="loss.kernel"):
        load_config(None, ["loss.kernel=cuda"])
