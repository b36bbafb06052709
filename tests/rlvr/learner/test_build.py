"""The learner's builder: a Triton loss without a GPU gets the interpreter in the actor's environment."""

import dataclasses

import pytest

from rlvr.config import load_config
from rlvr.learner.build import learner_options
from rlvr.runtime.placement import place


def test_triton_kernel_on_cpu_sets_the_interpreter_and_keeps_the_other_variables():
    cfg = load_config(None, ["loss.kernel=triton"])
    options = place(cfg).learners[0]
    out = learner_options(cfg, options)
    assert out["runtime_env"]["env_vars"]["TRITON_INTERPRET"] == "1"
    assert out["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == options["runtime_env"]["env_vars"]["OMP_NUM_THREADS"]
    assert "TRITON_INTERPRET" not in options["runtime_env"]["env_vars"]  # the placement's dict is not changed


@pytest.mark.parametrize("overrides", [["loss.kernel=auto"], ["loss.kernel=torch"]])
def test_torch_and_auto_leave_the_environment_alone(overrides):
    cfg = load_config(None, overrides)
    options = place(cfg).learners[0]
    assert learner_options(cfg, options) == options


def test_a_gpu_learner_never_interprets():
    cfg = dataclasses.replace(load_config(None, ["loss.kernel=triton"]),
                              learner=dataclasses.replace(load_config().learner, gpus=1))
    options = {"num_gpus": 1.0}
    assert learner_options(cfg, options) == options


@pytest.mark.ray
def test_the_variable_reaches_the_actor_before_the_kernels_load(ray_cluster):
    """In a Ray actor started with these options, the kernel modules load interpreted (they would refuse
    loss.kernel = "triton" on CPU tensors otherwise). The test process itself runs with TRITON_INTERPRET=1
    (tests/conftest.py), which the local cluster's workers inherit; so a second actor given "0" the same way
    shows the runtime_env value, not the inherited one, is what the kernels see at import."""
    import ray

    @ray.remote
    class Probe:
        def interpreted(self) -> tuple[bool, str]:
            import rlvr.kernels.fused_loss  # noqa: F401  (triton and the kernels load here)
            from rlvr.kernels.dispatch import KERNELS_INTERPRETED

            env = ray.get_runtime_context().runtime_env.get("env_vars", {})
            return KERNELS_INTERPRETED, env.get("TRITON_INTERPRET", "")

    cfg = load_config(None, ["loss.kernel=triton"])
    options = learner_options(cfg, place(cfg).learners[0])
    off = options | {"runtime_env": {"env_vars": {"TRITON_INTERPRET": "0"}}}
    probes = [Probe.options(**o).remote() for o in (options, off)]
    assert ray.get([p.interpreted.remote() for p in probes], timeout=300) == [(True, "1"), (False, "0")]
