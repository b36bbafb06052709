"""Each learner engine's resumable state round-trips exactly: save after two steps, a third step; a fresh
engine on the saved weights, loaded from the save, takes the same third step bit for bit."""

import pytest
import torch

from rlvr.learner.engine import LearnerEngine, TorchEngine, make_engine
from rlvr.learner.optim import OptimSpec

SPEC = OptimSpec(lr=1e-2, warmup_steps=3, decay_steps=5)


def _model(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(dtype)


def _step(engine: LearnerEngine, i: int) -> float:
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(i)).to(next(engine.module.parameters()).dtype)
    for j, half in enumerate(x.chunk(2)):  # two micro-batches, the last one the boundary
        engine.backward(engine.module(half).float().square().mean() * engine.loss_scale, boundary=j == 1)
    return engine.step()


def round_trip(backend: str, dtype: torch.dtype, folder) -> None:
    a = make_engine(backend, _model(dtype), SPEC, zero_stage=2, compute_dtype=dtype)
    for i in range(2):
        _step(a, i)
    a.save_state(folder, rank=0)
    saved = {k: v.clone() for k, v in a.full_weights(torch.float32).items()}
    expected = [_step(a, i) for i in (2, 3)], a.lr(), a.full_weights(torch.float32)

    model = _model(dtype)
    b = make_engine(backend, model, SPEC, zero_stage=2, compute_dtype=dtype)
    with torch.no_grad():  # the weights come back as the learner loads them: from the saved fp32 folder
        for name, p in b.module.named_parameters():
            p.copy_(saved[name])
    b.load_state(folder, rank=0)
    got = [_step(b, i) for i in (2, 3)], b.lr(), b.full_weights(torch.float32)
    assert got[0] == expected[0] and got[1] == expected[1]
    assert all(torch.equal(got[2][k], expected[2][k]) for k in expected[2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_engine_state_round_trips_exactly(tmp_path, dtype):
    """bf16: the fp32 masters are part of the state (the bf16 weights alone would lose their low bits)."""
    round_trip("torch", dtype, tmp_path)
    assert (tmp_path / "rank_0" / "updater.pt").is_file()


def test_engines_state_where_the_learner_expects_it(tmp_path):
    engine = TorchEngine(_model(torch.float32), SPEC, torch.float32)
    assert not engine.sharded
    engine.save_state(tmp_path, rank=3)  # each rank its own file in the shared folder
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.pt")] == ["rank_3/updater.pt"]
    with pytest.raises(FileNotFoundError):
        TorchEngine(_model(torch.float32), SPEC, torch.float32).load_state(tmp_path, rank=0)


@pytest.mark.slow  # DeepSpeed on gloo starts in its own process (~1 min here)
@pytest.mark.ray
def test_deepspeed_engine_state_round_trips_exactly(ray_cluster, tmp_path):
    ray = ray_cluster
    # max_calls=1: the worker exits after, taking DeepSpeed's process group with it
    run = ray.remote(max_calls=1, num_cpus=0)(lambda folder: (round_trip("deepspeed", torch.float32, folder), True)[1])
    assert ray.get(run.remote(tmp_path))
    assert (tmp_path / "deepspeed" / "state").is_dir()  # DeepSpeed's own format
