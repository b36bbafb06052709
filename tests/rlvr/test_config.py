import dataclasses
import json
import math
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Literal

import pytest
from pydantic import TypeAdapter

from rlvr.config import Config, ConfigError, LossConfig, load_config, to_dict
from rlvr.runtime.checkpoint import write_json_atomic

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
    with pytest.raises(ConfigError, match='loss.aggregation = "seq-mean-token-mean".*not "token-mean"'):
        load_config(None, ["loss.policy=gspo"])
    with pytest.raises(ConfigError, match='GSPO eq. 5.*not "seq-mean-token-sum-norm"'):  # length-weighted too
        load_config(None, ["loss.policy=gspo", "loss.aggregation=seq-mean-token-sum-norm"])
    assert load_config(None, ["loss.policy=gspo", "loss.aggregation=seq-mean-token-mean"]).loss.policy == "gspo"
    with pytest.raises(ConfigError, match="dual_clip must be > 1"):
        load_config(None, ["loss.dual_clip=0.5"])
    with pytest.raises(ConfigError, match="no meaning"):
        load_config(None, ["algo.advantage=gae", "algo.advantage_norm=group"])
    with pytest.raises(ConfigError, match="distill.teacher"):
        load_config(None, ["algo.advantage=none"])
    distill = ["algo.advantage=none", "distill.teacher=builtin:tiny-char-teacher", "loss.kl_coef=0.1"]
    with pytest.raises(ConfigError, match=r'algo.advantage = "none".*loss.kl_in = "reward".*loss.kl_coef'):
        load_config(None, distill + ["loss.kl_in=reward"])
    assert load_config(None, distill + ["loss.kl_in=loss"]).loss.kl_in == "loss"
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


def test_relative_paths_follow_the_file_that_names_them_and_overrides_the_working_directory(tmp_path, monkeypatch):
    """Issue 20: `extends` resolved against the config file but data.source against the working directory, so an
    example failed outside the repository root."""
    configs, elsewhere = tmp_path / "configs", tmp_path / "elsewhere"
    (configs / "sub" / "org" / "critic").mkdir(parents=True)  # a folder shaped like a hub id
    elsewhere.mkdir()
    (configs / "base.toml").write_text('[data]\neval_source = "data/test.jsonl"\n')
    (configs / "sub" / "run.toml").write_text(
        'extends = "../base.toml"\n[data]\nsource = "../data/train.jsonl"\n[model]\npath = "Qwen/Qwen2.5-0.5B"\n'
        '[critic]\npath = "org/critic"\n[distill]\nteacher = "builtin:tiny-char-teacher"\n')
    monkeypatch.chdir(elsewhere)
    cfg = load_config(configs / "sub" / "run.toml")
    assert cfg.data.source == str(configs / "data" / "train.jsonl")
    assert cfg.data.eval_source == str(configs / "data" / "test.jsonl")  # the base file's own folder
    assert cfg.model.path == "Qwen/Qwen2.5-0.5B"  # a hub id, no folder of that name beside the config
    assert cfg.critic.path == str(configs / "sub" / "org" / "critic")
    assert cfg.distill.teacher == "builtin:tiny-char-teacher"
    cfg = load_config(configs / "sub" / "run.toml", ["data.eval_source=held.jsonl", "model.path=./Qwen/Qwen2.5-0.5B",
                                                      "data.source=reasoning_gym:chain_sum", "algo.group_size=4"])
    assert cfg.data.eval_source == str(elsewhere / "held.jsonl")  # typed on the command line: the shell's folder
    assert cfg.model.path == str(elsewhere / "Qwen" / "Qwen2.5-0.5B")  # "./": a folder, whatever its shape
    assert cfg.data.source == "reasoning_gym:chain_sum" and cfg.critic.path == str(configs / "sub" / "org" / "critic")
    assert load_config(None, ["data={source = 'rows.jsonl'}"]).data.source == str(elsewhere / "rows.jsonl")


def test_a_runs_run_config_json_is_a_config(tmp_path, monkeypatch):
    cfg = load_config("examples/smollm2_gsm8k_grpo.toml", ["eval.size=8", "learner.betas=[0.9, 0.95]"])
    (tmp_path / "run").mkdir()
    write_json_atomic(tmp_path / "run" / "run_config.json", to_dict(cfg))  # as train() writes it
    monkeypatch.chdir(tmp_path)
    assert load_config(tmp_path / "run" / "run_config.json") == cfg  # paths were stored absolute
    assert load_config("run/run_config.json", ["sft.steps=7"]).sft.steps == 7
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ConfigError, match=r"bad\.json: expected a JSON object"):
        load_config(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path / "run")


def test_method_presets_change_only_what_their_method_needs():
    base = to_dict(load_config("examples/tiny_arith_grpo.toml"))
    allowed = {"algo", "loss", "critic", "distill", "train", "learner", "data"}
    for preset in sorted(Path("examples").glob("tiny_arith_*.toml")):
        changed = {k for k, v in to_dict(load_config(preset)).items() if v != base[k]}
        # LoRA RL adapts a model that already solves part of the task (Tina): an SFT'd base, no cold start
        extra = {"model", "sft"} if preset.name == "tiny_arith_lora.toml" else set()
        extra |= {"rollout", "cluster"} if preset.name == "tiny_arith_async.toml" else set()  # see below
        assert changed <= allowed | extra, (preset, changed)


def test_the_async_demo_is_the_demo_at_staleness_zero():
    """examples/tiny_arith_async.toml differs from the demo only in settings that act when train.max_staleness
    > 0, so train.max_staleness=0 runs the demo itself."""
    base = to_dict(load_config("examples/tiny_arith_grpo.toml"))
    stale = to_dict(load_config("examples/tiny_arith_async.toml"))
    differ = {(s, k) for s in base for k in base[s] if base[s][k] != stale[s][k]}
    acting_only_when_stale = {("rollout", "update_mode"), ("rollout", "group_timeout_s"), ("cluster", "rollout_cores")}
    assert ("train", "max_staleness") in differ and differ - {("train", "max_staleness")} <= acting_only_when_stale


def test_cross_key_checks_run_once_all_overrides_are_in():
    """Defect: each override built (and checked) a whole config, so a rule spanning keys failed or passed
    depending on the order on the command line."""
    keys = ["cluster.placement=colocated", "learner.gpus=1", "rollout.gpus_per_engine=1"]
    assert load_config(None, keys) == load_config(None, keys[::-1])
    with pytest.raises(ConfigError, match="must both be on GPUs"):
        load_config(None, keys[:2])  # the rule itself still holds, whatever the order
    with pytest.raises(ConfigError, match="learner.gpus = 'x' is not a valid int"):
        load_config(None, ["learner.gpus=x", "learner.ranks=2"])  # a bad value is named as it comes


@pytest.mark.parametrize("item, message", [
    ("curriculum.target=1.5", "command line: curriculum.target must be <= 1 (got 1.5)"),
    ("learner.ranks=0", "command line: learner.ranks must be > 0 (got 0)"),
    ("reward.max_failed_frac=2", "command line: reward.max_failed_frac must be <= 1 (got 2)"),
    ("learner.betas=[0.9]", "command line: learner.betas = [0.9] has too few items"),
    ("rollout.enforce_eager=1", "command line: rollout.enforce_eager = 1 is not a valid bool"),  # TOML's types
    ("learner.micro_batch_size=8.0", "command line: learner.micro_batch_size = 8.0 is not a valid int"),
    ("train.loggers=[\"tb\"]", "command line: train.loggers.0 = 'tb' is not one of 'tensorboard', 'ray' or 'wandb'"),
    ('reward.terms=[{nme="math"}]', "command line: unknown key 'reward.terms.0.nme' in override "
                                    "'reward.terms=[{nme=\"math\"}]' (did you mean 'reward.terms.0.name'?)"),
    ("algo=3", "command line: algo = 3 is not a valid table"),
])
def test_each_mistake_is_one_line_naming_the_key(item, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [item])
    assert str(info.value) == message


def test_a_file_mistake_names_the_file_and_the_known_keys(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[algo]\ngroup_sise = 4\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: unknown key 'algo\.group_sise' \(did you mean"):
        load_config(path)
    path.write_text("[curriculum]\nfoo = 4\n")
    with pytest.raises(ConfigError, match=r"unknown key 'curriculum\.foo' \(known keys here: mode, target, width, "):
        load_config(path)


def test_nan_survives_to_dict_and_code_built_configs_are_validated():
    cfg = load_config(None, ["reward.timeout_value=nan"])
    assert math.isnan(to_dict(cfg)["reward"]["timeout_value"])
    assert load_config(None, [f"reward.timeout_value={to_dict(cfg)['reward']['timeout_value']}"]) is not None
    assert dataclasses.replace(LossConfig(), clip_high=1).clip_high == 1.0
    with pytest.raises(ValueError, match="dual_clip"):
        dataclasses.replace(LossConfig(), dual_clip=0.5)

# ---- the README's settings tables are checked against the config, so the two cannot drift ----
README = Path(__file__).resolve().parents[2] / "README.md"
FILES = (".toml", ".json", ".jsonl", ".py", ".md", ".safetensors")  # dotted names that are no settings


def readme_settings_rows() -> list[tuple[str, str]]:
    """(setting cell, description cell) of every row of the README's `| setting | what |` tables."""
    rows, in_table = [], False
    for line in README.read_text().splitlines():
        in_table = line.startswith("| setting |") or (in_table and line.startswith("|"))
        if in_table and not line.startswith(("| setting |", "|---")):
            setting, what = line.strip("|").split("|", 1)
            rows.append((setting, what))
    return rows


def field_type(key: str):
    """The annotation of a dotted key (a section's class for a section)."""
    tp = Config
    for part in key.split("."):
        fields = getattr(tp, "__pydantic_fields__", {})
        assert part in fields, f"README names {key!r}, which the config does not have"
        tp = fields[part].annotation
    return tp


def check_value(key: str, value: str) -> None:
    """`value` (TOML) is one `key` takes, by the config's own validation."""
    TypeAdapter(field_type(key)).validate_json(json.dumps(tomllib.loads(f"v = {value}")["v"]), strict=True)


def default(key: str):
    node = to_dict(Config())
    for part in key.split("."):
        node = node[part]
    return node


def test_readme_settings_tables_name_real_keys_values_and_defaults():
    """Every key a settings table names exists (`key = value`: takes that value); a Literal key's row names all
    its choices; a value marked "(default)" is the default."""
    rows = readme_settings_rows()
    assert len(rows) > 20
    for setting, what in rows:
        keys = []
        for token in re.findall(r"`([^`]+)`", setting):
            key, _, value = (s.strip() for s in token.partition("="))
            field_type(key)
            keys.append(key)
            if value:  # `learner.backend = "deepspeed"`
                check_value(key, value)
                continue
            tp = field_type(key)
            missing = [v for v in typing.get_args(tp) if typing.get_origin(tp) is Literal and f"`{v}`" not in what]
            assert not missing, f"README: the row of {key} does not name {missing}"
        for key, value in re.findall(r"`([a-z_]+\.[a-z_.*]+)(?: = ([^`]+))?`", what):
            if not key.endswith(FILES):
                field_type(key.removesuffix(".*"))
                if value:
                    check_value(key, value)
        for value in re.findall(r"`([^`]+)` \(default\)", what):
            assert len(keys) == 1 and default(keys[0]) == value, f"README: {value} is not the default of {setting}"


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


def test_asynchronous_settings_that_cannot_work_fail_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"rollout.group_timeout_s = 20 must be below cluster.call_timeout_s = 10"):
        load_config("examples/tiny_arith_async.toml", ["cluster.call_timeout_s=10", "rollout.group_timeout_s=20"])
    with pytest.raises(ConfigError, match="colocated engines sleep while the learner trains"):
        load_config("examples/tiny_arith_async.toml", ["cluster.placement=colocated"])
    cfg = load_config("examples/tiny_arith_async.toml", ["cluster.call_timeout_s=10"])
    assert cfg.group_timeout_s() == 5.0  # 0 resolves to half the call deadline
    # At staleness 0 neither setting acts, so neither is checked.
    load_config("examples/tiny_arith_async.toml", ["train.max_staleness=0", "cluster.placement=colocated"])


def test_stale_rollouts_turn_the_mismatch_correction_on():
    from rlvr.learner.build import mismatch_mode
    from rlvr.runtime.placement import cpu_threads

    assert mismatch_mode(load_config("examples/tiny_arith_grpo.toml")) == "none"
    stale = load_config("examples/tiny_arith_async.toml")
    assert mismatch_mode(stale) == "tis"
    assert mismatch_mode(load_config("examples/tiny_arith_async.toml", ["loss.mismatch=none"])) == "none"
    cores = os.cpu_count()
    assert cpu_threads(load_config("examples/tiny_arith_grpo.toml")) == (cores, cores)  # roles take turns
    engine, learner = cpu_threads(stale)
    assert engine + learner == max(cores, 2) and engine == 1
