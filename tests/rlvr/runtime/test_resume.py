"""Checkpoint and resume (rlvr/runtime/resume.py): atomic folders, the newest complete one, pruning, config checks,
every part's state round trip, and a real run stopped by Ctrl-C and resumed against the same run uninterrupted."""

import copy
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from learner_cases import COMPLETIONS, PROMPTS, groups_of  # noqa: E402

from rlvr.algorithms.batch import make_train_batch
from rlvr.config import LoraConfig, LossConfig, TrainConfig, load_config, to_dict
from rlvr.learner.actor import Learner
from rlvr.learner.optim import OptimSpec
from rlvr.observe.metrics import MetricsLogger, keep_steps_before
from rlvr.runtime.resume import (
    MARKER,
    Checkpoints,
    Parts,
    ResumeError,
    Start,
    atomic_dir,
    clear_run,
    complete_checkpoints,
    config_differences,
    plan_start,
    prune,
    step_dir,
)

LearnerClass = Learner.__ray_actor_class__


def write_checkpoint(root: Path, step: int) -> Path:
    with atomic_dir(step_dir(root, step)) as tmp:
        (tmp / "driver.json").write_text(json.dumps({"step": step}))
    return step_dir(root, step)


def test_only_complete_checkpoints_count_and_pruning_keeps_the_newest(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (3, 6, 9):
        write_checkpoint(root, step)
    (root / "step_000012").mkdir()  # renamed by hand, or a marker lost: not complete
    (root / ".step_000012.tmp-abc").mkdir()  # what a killed save leaves behind
    assert [s for s, _ in complete_checkpoints(root)] == [3, 6, 9]
    assert (root / "step_000009" / MARKER).read_text() == "step_000009\n"
    prune(root, keep_last=2)
    assert sorted(p.name for p in root.iterdir()) == ["step_000006", "step_000009", "step_000012"]
    prune(root, keep_last=0)  # 0: keep all
    assert [s for s, _ in complete_checkpoints(root)] == [6, 9]


def test_a_save_that_raises_leaves_nothing(tmp_path):
    root = tmp_path / "checkpoints"
    with pytest.raises(RuntimeError, match="disk full"), atomic_dir(step_dir(root, 3)) as tmp:
        (tmp / "driver.json").write_text("{}")
        raise RuntimeError("disk full")
    assert list(root.iterdir()) == []


def test_a_save_killed_mid_write_is_never_complete(tmp_path):
    """kill -9 while the checkpoint is being written: no folder named step_N with a marker appears."""
    root = tmp_path / "checkpoints"
    write_checkpoint(root, 3)
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from rlvr.runtime.resume import atomic_dir, step_dir
        with atomic_dir(step_dir(Path({str(root)!r}), 6)) as tmp:
            (tmp / "weights.bin").write_bytes(b"x" * 1000)
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[3])
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert any(p.name.startswith(".step_000006.tmp-") for p in root.iterdir())  # the partial folder is there
    assert [s for s, _ in complete_checkpoints(root)] == [3]
    assert Checkpoints(tmp_path, TrainConfig(), 10).latest({}).step == 3
    prune(root, keep_last=2)  # the next save clears the debris
    assert sorted(p.name for p in root.iterdir()) == ["step_000003"]


def test_resume_without_a_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(ResumeError, match=f"no complete checkpoint in {tmp_path / 'checkpoints'}"):
        Checkpoints(tmp_path, TrainConfig(), 10).latest({})
    (tmp_path / "checkpoints" / ".step_000003.tmp-x").mkdir(parents=True)
    with pytest.raises(ResumeError, match=r"incomplete, ignored: \.step_000003\.tmp-x"):
        Checkpoints(tmp_path, TrainConfig(), 10).latest({})


def test_resume_with_a_changed_config_names_the_keys():
    saved = to_dict(load_config("examples/tiny_arith_grpo.toml", []))
    changed = to_dict(load_config("examples/tiny_arith_grpo.toml", [
        "learner.lr=3e-4", "data.task_kwargs={min_terms=2, max_terms=5, min_digits=1, max_digits=1}",
        "train.steps=900", "train.save_every=5", "cluster.num_cpus=3", "eval.every=10", "train.loggers=[]",
        "reward.max_failed_frac=0.9",  # a run stopped by too many reward failures may resume more tolerant
    ]))
    assert config_differences(saved, changed) == [
        "data.task_kwargs: {'min_terms': 2, 'max_terms': 4, 'min_digits': 1, 'max_digits': 1} -> "
        "{'min_terms': 2, 'max_terms': 5, 'min_digits': 1, 'max_digits': 1}",
        "learner.lr: 0.0001 -> 0.0003",
    ]
    assert config_differences(saved, saved) == []


def test_checkpoint_refuses_a_config_that_changes_the_run(tmp_path):
    cfg = load_config("examples/tiny_arith_grpo.toml", [])
    (tmp_path / "run_config.json").write_text(json.dumps(to_dict(cfg)))
    write_checkpoint(tmp_path / "checkpoints", 3)
    other = to_dict(load_config("examples/tiny_arith_grpo.toml", ["algo.group_size=4"]))
    with pytest.raises(ResumeError, match=r"algo\.group_size: 8 -> 4"):
        Checkpoints(tmp_path, cfg.train, 10).latest(other)
    assert Checkpoints(tmp_path, cfg.train, 10).latest(to_dict(cfg)).step == 3


def test_a_folder_holding_a_run_is_refused_replaced_or_resumed_never_reused(tmp_path):
    """Issue 20: a fresh run into a finished run's folder truncated its metrics.jsonl and left its checkpoints for
    a later --resume to pick; --resume=auto (a requeued job) resumes or starts afresh."""
    cfg = load_config("examples/tiny_arith_grpo.toml", [])
    config, out = to_dict(cfg), tmp_path / "run"

    def plan(mode, config=config):
        return plan_start(out, mode, config, cfg.train, 10)

    out.mkdir()
    (out / "slurm-7.out").write_text("the caller's log\n")  # not the run's: does not count
    assert plan("fresh") == plan("auto") == Start() and plan("overwrite") == Start(clear=True)
    with pytest.raises(ResumeError, match="no complete checkpoint"):
        plan("resume")
    # an attempt that died before its first checkpoint
    (out / "run_config.json").write_text(json.dumps(config))
    (out / "metrics.jsonl").write_text('{"step": 0}\n')
    (out / "run.log").write_text("killed\n")
    with pytest.raises(ResumeError, match=rf"^{out} holds a run \(metrics.jsonl, run_config.json\): pass --resume to "
                                          r"continue it or --overwrite to replace it") as refused:
        plan("fresh")
    assert refused.value.kind == "output-dir"
    assert plan("overwrite") == Start(clear=True)
    assert plan("auto") == Start(clear=True, keep_log=True)  # the same config: start it afresh
    (out / "summary.json").write_text("{}")  # ...unless it finished (train.save_every = 0): its results stay
    with pytest.raises(ResumeError, match=r"--resume=auto: .* holds a finished run \(summary.json\) and no checkpoint"):
        plan("auto")
    (out / "summary.json").unlink()
    other = to_dict(load_config("examples/tiny_arith_grpo.toml", ["algo.group_size=4"]))
    with pytest.raises(ResumeError, match=r"--resume=auto: .* config differs \(algo.group_size: 8 -> 4\): pass --overwrite"):
        plan("auto", other)
    # ...and one with a checkpoint
    write_checkpoint(out / "checkpoints", 3)
    assert plan("auto") == plan("resume") == Start(checkpoint=out / "checkpoints" / "step_000003")
    with pytest.raises(ResumeError, match=r"holds a run \(metrics.jsonl, run_config.json, checkpoints/\)"):
        plan("fresh")
    (out / "tensorboard").mkdir()
    (out / "model.safetensors").write_bytes(b"weights")
    assert [p.name for p in clear_run(out, keep_log=True)] == [
        "checkpoints", "metrics.jsonl", "model.safetensors", "run_config.json", "tensorboard"]
    assert sorted(p.name for p in out.iterdir()) == ["run.log", "slurm-7.out"]
    clear_run(out)
    assert [p.name for p in out.iterdir()] == ["slurm-7.out"]


def test_metrics_keep_only_the_steps_before_the_resumed_one(tmp_path):
    """Killed after logging step 4 with its newest checkpoint at step 3 (and a torn last line)."""
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in range(5)) + '{"step": 5, "lo')
    assert keep_steps_before(path, 3) == 3
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 1, 2]
    logger = MetricsLogger(tmp_path, total_steps=3, start_step=3)
    for step in (3, 4, 5):
        logger.log(step, {"reward/mean": 0.5})
    logger.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 1, 2, 3, 4, 5]
    MetricsLogger(tmp_path, total_steps=1).close()  # a fresh run (start_step 0) starts the file afresh
    assert path.read_text() == ""


def test_torch_updater_state_resumes_the_same_updates():
    from rlvr.learner.optim import TorchUpdater

    def model():
        torch.manual_seed(0)
        return torch.nn.Linear(4, 3)

    def step(m, u, i):
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(i))
        u.backward(m(x).square().mean())
        u.step()

    spec = OptimSpec(lr=1e-2, warmup_steps=3, decay_steps=5)
    a = model()
    ua = TorchUpdater(a, spec)
    for i in range(3):
        step(a, ua, i)
    # a deep copy, as torch.save makes: the optimizer's state_dict holds its live moment tensors
    saved, weights = copy.deepcopy(ua.state_dict()), {k: v.clone() for k, v in a.state_dict().items()}
    lr = ua.lr()
    for i in range(3, 6):
        step(a, ua, i)
    b = model()
    b.load_state_dict(weights)
    ub = TorchUpdater(b, spec)
    ub.load_state_dict(saved)
    assert ub.lr() == lr
    for i in range(3, 6):
        step(b, ub, i)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in weights)
    assert ub.lr() == ua.lr()


def test_laser_d_and_the_scorer_keep_shaper_state():
    from rlvr.config import RewardTermConfig
    from rlvr.rewards.laser import LaserD
    from rlvr.scoring.service import Scorer
    from rlvr.types import Rollout, Sample

    laser = LaserD(initial_target=5, min_lengths=1)
    group = [Rollout(Sample("p", "q", "5"), "x", "stop", (0,) * n, (0.0,) * n, (), 0) for n in (3, 7)]
    laser(group, [1.0, 1.0], pass_rate=0.9)
    copy = LaserD(initial_target=5, min_lengths=1)
    copy.restore(json.loads(json.dumps(laser.state())))  # through JSON, as driver.json holds it
    assert copy.lengths == laser.lengths and copy.target("easy") == laser.target("easy") == 7

    terms = [RewardTermConfig(name="exact"), RewardTermConfig(name="laser_d", weight=0.0, kwargs={"initial_target": 4})]
    with Scorer(terms, workers=1) as a, Scorer(terms, workers=1) as b:
        assert a.shaper_state() == {"laser_d": {"easy": [], "hard": [], "medium": []}}
        a._group[0].fn(group, [1.0, 1.0], pass_rate=0.9)
        b.set_shaper_state(json.loads(json.dumps(a.shaper_state())))
        assert b.shaper_state() == a.shaper_state() == {"laser_d": {"easy": [3, 7], "hard": [], "medium": []}}
        with pytest.raises(ValueError, match=r"stateful shapers are \['laser_d'\]"):
            b.set_shaper_state({})


def _batch():
    groups = groups_of(PROMPTS, COMPLETIONS)
    return make_train_batch(groups, [[1.0 if j == 0 else -1.0 for j in range(len(g))] for g in groups])


@pytest.mark.parametrize("lora", [LoraConfig(), LoraConfig(rank=4, alpha=8.0, target_modules=("q_proj", "v_proj"))],
                         ids=["full", "lora"])
def test_learner_state_resumes_exactly(tiny_model, tmp_path, lora):
    """Two steps, save, a third step; a fresh learner loaded from the save takes the same third step
    (a LoRA learner: from its saved adapter on the starting model)."""
    kw = dict(optim=OptimSpec(lr=3e-3, warmup_steps=4), loss=LossConfig(kl_coef=0.05), threads=2, epochs=2,
              minibatches=2, micro_batch_size=2, seed=3, lora=lora)
    batch = _batch()
    a = LearnerClass(tiny_model, **kw)
    # pi_ref's log-probs come with the batch (the reference actor's, rlvr/algorithms/estimate.py): the policy before RL
    batch = dataclasses.replace(batch, ref_logprobs_B_Lc=a.logprobs(batch))
    a.set_reference()
    a.train_step(batch)
    a.train_step(batch)
    a.save_state(str(tmp_path / "learner"))
    expected = a.train_step(batch)

    b = LearnerClass(tiny_model, **kw)
    assert b.load_state(str(tmp_path / "learner")) == 2
    got = b.train_step(batch)
    for key in ("loss", "grad_norm", "kl", "lr"):
        assert got[key] == expected[key], key
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert (tmp_path / "learner" / "model" / "config.json").exists()  # a plain HF folder, usable by `rlvr eval`


def test_critic_state_round_trip(tiny_model, tmp_path):
    from rlvr.learner.critic import Critic

    CriticClass = Critic.__ray_actor_class__
    groups = groups_of(PROMPTS, COMPLETIONS)
    batch = make_train_batch(groups, [[0.0] * len(g) for g in groups])
    mask = batch.completion_mask_B_Lc
    import dataclasses

    batch = dataclasses.replace(batch, values_B_Lc=torch.zeros(mask.shape), returns_B_Lc=mask.float())
    a = CriticClass(tiny_model, optim=OptimSpec(lr=1e-3), threads=2)
    a.train_step(batch)
    a.save_state(str(tmp_path / "critic"))
    expected = a.train_step(batch)
    b = CriticClass(tiny_model, optim=OptimSpec(lr=1e-3), threads=2)
    b.load_state(str(tmp_path / "critic"))
    assert b.train_step(batch)["critic/grad_norm"] == expected["critic/grad_norm"]
    assert torch.equal(a.values(batch), b.values(batch))


def test_checkpoint_saves_and_restores_every_driver_part(tiny_model, tmp_path):
    """Checkpoints.save / Resumed.restore with the real parts, in this process (plain methods, as a learner
    group will have): learner, reward shapers, pass-rate tracker, prompt stream, the driver's RNGs."""
    import random

    from rlvr.algorithms.estimate import OutcomeAdvantages
    from rlvr.config import RewardTermConfig
    from rlvr.data.curriculum import PassRateTracker
    from rlvr.data.sources import PromptStream
    from rlvr.scoring.correctness import Correctness
    from rlvr.scoring.service import Scorer
    from rlvr.types import Sample

    terms = [RewardTermConfig(name="exact"), RewardTermConfig(name="laser_d", weight=0.0, kwargs={"initial_target": 4})]
    samples = [Sample(id=str(i), prompt=f"{i} + 1 =", answer=str(i + 1)) for i in range(10)]
    groups = groups_of(PROMPTS, COMPLETIONS)
    kw = dict(optim=OptimSpec(lr=1e-3), loss=LossConfig(), threads=2)

    def build(scorer):
        learner = LearnerClass(tiny_model, **kw)
        tracker = PassRateTracker(Correctness("t"))
        return Parts(learner, OutcomeAdvantages("grpo", "auto"), scorer, tracker, PromptStream(samples, 4, seed=1))

    ckpt = Checkpoints(tmp_path, TrainConfig(save_every=2, keep_last=1), timeout_s=60)
    with Scorer(terms, workers=1) as scorer_a, Scorer(terms, workers=1) as scorer_b:
        a = build(scorer_a)
        a.learner.train_step(_batch())
        a.tracker.update(groups)
        scorer_a._group[0].fn([s.rollout for s in groups[0]], [1.0, 1.0])
        for _ in range(3):
            next(a.prompts)
        random.seed(7)
        ckpt.save(2, a, {"rewards_per_step": [0.5, 0.25]})
        expected = (next(a.prompts), random.random(), torch.rand(3))

        b = build(scorer_b)
        resumed = ckpt.latest({})
        assert (resumed.step, resumed.path) == (2, step_dir(tmp_path / "checkpoints", 2))
        assert resumed.restore(b) == {"rewards_per_step": [0.5, 0.25]}
        assert (next(b.prompts), random.random()) == expected[:2] and torch.equal(torch.rand(3), expected[2])
        assert b.tracker.state() == a.tracker.state() and b.tracker.rates
        assert scorer_b.shaper_state() == scorer_a.shaper_state() != {"laser_d": {"easy": [], "hard": [], "medium": []}}
        assert b.learner.steps == 1 and b.learner.updater is not None
        assert all(torch.equal(p, q) for p, q in zip(a.learner.model.parameters(), b.learner.model.parameters()))
        ckpt.save(4, a, {})
        assert [s for s, _ in complete_checkpoints(tmp_path / "checkpoints")] == [4]  # keep_last = 1


@pytest.mark.slow  # ~2 min here: two DeepSpeed actors start on gloo
@pytest.mark.ray
def test_deepspeed_learner_state_resumes(ray_cluster, tiny_model, tmp_path):
    import ray

    kw = dict(optim=OptimSpec(lr=3e-3), loss=LossConfig(), threads=1, micro_batch_size=4, backend="deepspeed",
              zero_stage=2)
    batch = _batch()
    a = Learner.remote(tiny_model, **kw)
    ray.get([a.train_step.remote(batch), a.train_step.remote(batch)])
    ray.get(a.save_state.remote(str(tmp_path / "learner")))
    assert (tmp_path / "learner" / "deepspeed" / "state").is_dir()  # DeepSpeed's own format
    expected = ray.get(a.train_step.remote(batch))
    b = Learner.remote(tiny_model, **kw)
    assert ray.get(b.load_state.remote(str(tmp_path / "learner"))) == 2
    got = ray.get(b.train_step.remote(batch))
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6) and got["grad_norm"] == pytest.approx(
        expected["grad_norm"], rel=1e-6)
    wa, wb = ray.get([a.named_weights.remote(), b.named_weights.remote()])
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-6
    for learner in (a, b):
        ray.kill(learner)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _session(sid: int) -> dict[int, tuple[float, str]]:
    """pid -> (start time, name) of every process in session `sid`: a run started with start_new_session=True and
    everything it starts (Ray's daemons, and its workers, which get process groups of their own but stay in it)."""
    found = {}
    for p in psutil.process_iter(["create_time", "name"]):
        try:
            if os.getsid(p.pid) == sid:
                found[p.pid] = (p.info["create_time"], p.info["name"])
        except OSError:  # gone meanwhile
            continue
    return found


def _alive(pid: int, started: float) -> bool:
    try:
        return psutil.Process(pid).create_time() == started
    except psutil.NoSuchProcess:
        return False


def _ctrl_c_after_the_first_step(argv: list[str], out: Path) -> tuple[int, str]:
    """`rlvr train` in its own session, as from a terminal, and Ctrl-C as a terminal sends it, to the whole process
    group, once the first RL step is in metrics.jsonl. Checks issue 20's acceptance: exit code 130 within 20 s,
    no traceback, nothing of the run left running. Returns the step it stopped at, the last stderr line and the
    seconds from the Ctrl-C to the exit."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local cluster, as a user's
    with (out.parent / "stderr.txt").open("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rlvr.cli", *argv], cwd=Path(__file__).parents[3], env=env,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            while not ((out / "metrics.jsonl").exists() and '"loss"' in (out / "metrics.jsonl").read_text()):
                assert proc.poll() is None and time.monotonic() < deadline, proc.returncode
                time.sleep(0.2)
            running = _session(proc.pid)
            sent = time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=60)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        err.seek(0)
        stderr = err.read()
    assert code == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert took < 20
    assert {"raylet", "gcs_server"} <= {n for _, n in running.values()}  # the check below sees Ray's processes
    for _ in range(50):  # a worker may take a moment to see its raylet gone
        # the session now, and what ran at the Ctrl-C (by pid and start time, in case one left the session)
        left = _session(proc.pid) | {pid: v for pid, v in running.items() if _alive(pid, v[0])}
        if not left:
            break
        time.sleep(0.2)
    assert not left, left
    last = stderr.strip().splitlines()[-1]
    step = int(re.fullmatch(r"rlvr: interrupted \(SIGINT\) at step (\d+); .*", last).group(1))
    return step, last, took


PPO = ["examples/tiny_arith_ppo.toml", "critic.epochs=1"]  # + the critic's weights and optimizer


@pytest.mark.ray
@pytest.mark.vllm
@pytest.mark.parametrize("example", [
    pytest.param(["examples/tiny_arith_grpo.toml", "learner.ranks=2"], id="grpo"),  # two learner ranks' states
    pytest.param(PPO, id="ppo", marks=pytest.mark.slow),
])
def test_a_stopped_and_resumed_run_equals_the_uninterrupted_run(ray_cluster, tiny_model, tmp_path, capsys, example):
    """Issue 9's acceptance: 6 RL steps with save_every=3, against a run stopped by Ctrl-C (issue 20: at the end of
    step 1 or 2, with a checkpoint although train.save_every = 0; started with --overwrite into an earlier run's
    folder) and continued with the command it printed (no CONFIG: DIR/run_config.json, no override retyped).

    The config exercises every piece of state: warm-up (scheduler), two minibatches (the shuffle seeded by
    the learner's step counter), a KL term (pi_ref), adaptive entropy control, the pass-rate curriculum
    (tracker and draws) and LASER-D's length windows (reward shaper state); PPO adds the critic.
    """
    from safetensors.torch import load_file

    from rlvr.cli import main

    args = [
        *example, f"model.path={tiny_model}", "sft.steps=30", "sft.batch_size=16",
        "train.steps=6", "train.save_every=3", "train.keep_last=1", "eval.size=8", "data.batch_size=4",
        "algo.group_size=4", "data.train_size=200", "algo.minibatches=2", "learner.lr=3e-3", "learner.warmup_steps=4",
        "loss.kl_coef=0.01", "loss.entropy_schedule=adaptive", "loss.entropy_coef=0.001", "loss.entropy_target=5.0",
        "curriculum.mode=pass_rate", "train.loggers=[\"tensorboard\"]",
        'reward.terms=[{name="reasoning_gym"}, {name="laser_d", weight=0.1, kwargs={initial_target=4, min_lengths=2}}]',
    ]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", args[0], "--output-dir", str(full), *args[1:]]) == 0
    cut_args = [*args[1:], "train.save_every=0", "cluster.dashboard=false"]
    # `cut` held another run, whose step-9 checkpoint a --resume would have picked: --overwrite removes it
    write_checkpoint(cut / "checkpoints", 9)
    (cut / "metrics.jsonl").write_text(json.dumps({"step": 0, "reward/mean": -1.0}) + "\n")
    (cut / "notes.txt").write_text("the caller's\n")
    k, last, took = _ctrl_c_after_the_first_step(
        ["train", args[0], "--output-dir", str(cut), "--overwrite", *cut_args], cut)
    checkpoint = cut / "checkpoints" / f"step_{k:06d}"
    resume = ["rlvr", "train", "--output-dir", str(cut), "--resume"]
    assert last == f"rlvr: interrupted (SIGINT) at step {k}; checkpoint written to {checkpoint}; continue with " \
                   f"`{shlex.join(resume)}`"
    assert [r["step"] for r in _records(cut)] == list(range(k)) and (checkpoint / MARKER).exists()
    assert (cut / "notes.txt").exists() and not (cut / "checkpoints" / "step_000009").exists()
    # A later life of the run that died after logging two more steps, its step-6 checkpoint half written.
    with (cut / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": k, "reward/mean": -1.0}) + "\n" + json.dumps({"step": k + 1, "reward/mean": -1.0}) + "\n")
    (cut / "checkpoints" / "step_000006").mkdir()
    (cut / "checkpoints" / ".step_000006.tmp-killed").mkdir()
    capsys.readouterr()
    assert main([*shlex.split(last.split("`")[1])[1:], "train.save_every=3"]) == 0  # the printed command, as typed
    assert f"resuming from {checkpoint}" in capsys.readouterr().err

    a, b = _records(full), _records(cut)
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4, 5]
    print(f"Ctrl-C: stopped at step {k}, exited {took:.1f} s after it; reward/mean full:", [r["reward/mean"] for r in a], "resumed:", [r["reward/mean"] for r in b])
    for key in ("reward/mean", "loss", "grad_norm", "kl", "lr", "entropy/coef", "reward/laser_d/mean",
                "curriculum/mean_pass_rate"):
        assert [r[key] for r in a[k:]] == [r[key] for r in b[k:]], key
    assert len({r["reward/mean"] for r in a}) > 1 and a[5]["kl"] > 0  # the run did learn something
    wa, wb = load_file(full / "model.safetensors"), load_file(cut / "model.safetensors")
    diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    print("final weights max |diff|:", diff)
    assert diff <= 1e-6
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (full, cut))
    assert sb["rl_steps"] == 6 and sb["reward/first10_mean"] == sa["reward/first10_mean"]
    assert sb["eval/accuracy_before_rl"] == sa["eval/accuracy_before_rl"]
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == ["step_000006"]  # keep_last = 1
    assert (cut / "checkpoints" / "step_000006" / MARKER).exists()


def test_tensorboard_of_a_resumed_run_has_each_step_once(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rlvr.observe.trackers import TensorBoard

    first = TensorBoard(tmp_path)
    for step in range(5):  # the run died after step 4; its checkpoint is step 3
        first.log(step, {"reward/mean": float(step)})
    first.close()
    resumed = TensorBoard(tmp_path, start_step=3)
    for step in range(3, 6):
        resumed.log(step, {"reward/mean": 10.0 + step})
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("reward/mean")] == [
        (0, 0.0), (1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0), (5, 15.0)]
