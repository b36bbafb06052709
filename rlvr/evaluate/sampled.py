"""Sampled evaluation: n completions per held-out prompt, scored by the training rewards, summarised as pass@k.

    evaluator = SampledEval(workers, reward_service, samples, SamplingSpec(n=16, max_tokens=512),
                            Correctness("math"), ks=(1, 4, 16))
    records, metrics = evaluator.run()   # one record per sample; metrics as in rlvr/evaluate/metrics.py

Serves both `rlvr eval` (rlvr/evaluate/command.py) and `eval.every` inside training. Which samples count
as correct is `rlvr/scoring/correctness.py`'s rule, as everywhere; a correctness term that failed (timeout,
error, crash) counts as wrong and is counted in `failed`. Scoring leaves the reward shapers' state
alone (`update_state=False`): held-out samples must not move what training sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlvr.evaluate.metrics import summarize
from rlvr.rewards.extract import final_answer
from rlvr.rollout.sampling import generate_and_score
from rlvr.rollout.worker import SamplingSpec
from rlvr.scoring.correctness import Correctness
from rlvr.types import Sample, ScoredRollout


def vote_key(completion: str) -> str | None:
    """The answer a sample votes for in maj@n: its marked final answer, else its last number, else none."""
    from rlvr.rewards.gsm8k import last_number

    marked = final_answer(completion)
    if marked is not None:
        return " ".join(marked.split())
    number = last_number(completion)
    return None if number is None else str(number)


class SampledEval:
    """Generate `spec.n` samples of every prompt on the engines, score them, and compute the metrics."""

    def __init__(self, workers, reward_service, samples: Sequence[Sample], spec: SamplingSpec,
                 correctness: Correctness, ks: Sequence[int]) -> None:
        if any(not 1 <= k <= spec.n for k in ks):
            raise ValueError(f"every k must lie in 1..n (k = {list(ks)}, n = {spec.n})")
        self.workers, self.reward_service, self.samples = workers, reward_service, list(samples)
        self.spec, self.correctness, self.ks = spec, correctness, tuple(ks)

    def run(self) -> tuple[list[dict[str, Any]], dict[str, float]]:
        scored_PN, _ = generate_and_score(self.workers, self.reward_service, self.samples, self.spec,
                                          update_state=False)
        records = [self._record(index, s) for group in scored_PN for index, s in enumerate(group)]
        metrics = summarize(
            [[self.correctness.is_correct(s) for s in group] for group in scored_PN],
            [[s.rollout.num_tokens for s in group] for group in scored_PN],
            [[s.rollout.finish_reason == "stop" for s in group] for group in scored_PN],
            [[vote_key(s.rollout.completion) for s in group] for group in scored_PN],
            self.ks,
            self.spec.max_tokens,
        )
        metrics["failed"] = float(sum(r["status"] != "ok" for r in records))
        return records, metrics

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        """The metrics only, keyed for metrics.jsonl (`eval/pass@1`, ...)."""
        return {prefix + k: v for k, v in self.run()[1].items()}

    def _record(self, index: int, scored: ScoredRollout) -> dict[str, Any]:
        term = scored.terms[self.correctness.label]
        r = scored.rollout
        return {
            "id": r.sample.id,
            "index": index,
            "correct": self.correctness.is_correct(scored),
            "score": term.value if term.status == "ok" else None,
            "status": term.status,
            "reward": scored.reward if scored.ok else None,
            "num_tokens": r.num_tokens,
            "finish_reason": r.finish_reason,
            "answer": r.sample.answer,
            "vote": vote_key(r.completion),
            "response": r.completion,
        }
