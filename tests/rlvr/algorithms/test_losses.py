"""The objective table, KL estimators, mismatch correction and value loss against hand-computed values."""

import math

import pytest
import torch

from rlvr.algorithms.losses import (
    LossInputs,
    LossStats,
    aggregate,
    compute_loss,
    kl_estimate,
    mismatch_weights,
    value_loss,
)
from rlvr.config import LossConfig

CFG = LossConfig(clip_low=0.2, clip_high=0.2)


def one_token(ratio: float, adv: float, cfg=CFG, policy="ppo_clip", **kw):
    """loss and d loss / d log pi for a single token with pi/pi_old = ratio."""
    lp = torch.tensor([[math.log(ratio)]], dtype=torch.float64, requires_grad=True)
    x = LossInputs(lp, torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64),
                   torch.tensor([[adv]], dtype=torch.float64), torch.tensor([[True]]), 1.0, **kw)
    loss, stats = compute_loss(LossConfig(**{**CFG.__dict__, "policy": policy} | kw.pop("over", {})), x)
    loss.backward()
    return float(loss.detach()), float(lp.grad), stats


# (ratio, advantage) -> (loss, gradient wrt log pi) for PPO-clip with eps 0.2: gradient -A r inside, 0 when clipped
PPO = [
    ((1.0, 1.0), (-1.0, -1.0)),
    ((1.5, 1.0), (-1.2, 0.0)),  # A > 0 above 1.2: clipped
    ((0.5, 1.0), (-0.5, -0.5)),  # A > 0 below: not clipped (pessimistic min)
    ((0.5, -1.0), (0.8, 0.0)),  # A < 0 below 0.8: clipped
    ((1.5, -1.0), (1.5, 1.5)),
]


@pytest.mark.parametrize("case,expected", PPO)
def test_ppo_clip(case, expected):
    loss, grad, _ = one_token(*case)
    assert (loss, grad) == pytest.approx(expected)


def test_dual_clip_caps_negative_advantages():
    cfg = LossConfig(dual_clip=3.0)
    lp = torch.tensor([[math.log(5.0)]], requires_grad=True)
    x = LossInputs(lp, torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([[-1.0]]), torch.tensor([[True]]), 1.0)
    loss, stats = compute_loss(cfg, x)
    loss.backward()
    assert float(loss) == pytest.approx(3.0) and float(lp.grad) == 0.0 and stats.sums["clip_frac/dual"] == 1


@pytest.mark.parametrize("case,expected", [
    ((1.5, 1.0), (-1.2, -1.2)),  # GPPO keeps a bounded gradient where PPO drops it: value clip(r) A, grad clip(r) A
    ((0.5, -1.0), (0.8, 0.8)),
    ((1.0, 1.0), (-1.0, -1.0)),
    ((1.5, -1.0), (1.5, 1.5)),
])
def test_gppo(case, expected):
    loss, grad, _ = one_token(*case, policy="gppo")
    assert (loss, grad) == pytest.approx(expected)


@pytest.mark.parametrize("ratio,adv,weight", [(1.5, 1.0, 1.2), (0.5, -1.0, 0.8), (1.1, 2.0, 1.1)])
def test_cispo_gradient_is_the_clipped_weight_times_the_advantage(ratio, adv, weight):
    loss, grad, _ = one_token(ratio, adv, policy="cispo")
    assert grad == pytest.approx(-weight * adv)  # never 0: no token's gradient is dropped
    assert loss == pytest.approx(-weight * adv * math.log(ratio))


def test_gspo_shares_one_sequence_ratio():
    # two tokens with log-ratios log 2 and 0: s = exp(mean) = sqrt 2 > 1.2, A > 0: clipped for both tokens
    lp = torch.tensor([[math.log(2.0), 0.0], [0.1, -0.1]], requires_grad=True)
    x = LossInputs(lp, torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool), 2.0)
    cfg = LossConfig(policy="gspo", aggregation="seq-mean-token-mean")
    loss, stats = compute_loss(cfg, x)
    loss.backward()
    # sequence 0 clipped at 1.2 (no gradient); sequence 1: s = exp(0) = 1, l_t = -s_t, gradient -s / (2 tokens * 2 seqs)
    assert float(loss) == pytest.approx((-1.2 + -1.0) / 2)
    assert lp.grad[0].tolist() == [0.0, 0.0]
    assert lp.grad[1].tolist() == pytest.approx([-0.25, -0.25])
    assert stats.sums["clip_frac/high"] == 2


def test_kl_estimators_values_and_gradients():
    lp = torch.tensor([-1.0, -2.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-1.5, -1.0], dtype=torch.float64)
    d = (ref - lp).detach()
    expected = {"k1": -d, "k2": 0.5 * d**2, "k3": d.exp() - 1 - d, "k3+": d.exp() - 1 - d}
    grads = {"k1": torch.ones(2), "k2": -d, "k3": 1 - d.exp(), "k3+": -d}  # k3+: k3 value, k2 gradient
    for name in expected:
        lp.grad = None
        value = kl_estimate(lp, ref, name)
        value.sum().backward()
        assert torch.allclose(value, expected[name]), name
        assert torch.allclose(lp.grad, grads[name].double()), name


def test_expected_kl_gradients_k1_zero_k2_reverse_k3_forward():
    """E_pi[grad of k] over the exact distribution: k1 -> 0, k2 -> grad KL(pi||ref), k3 -> grad KL(ref||pi)."""
    logits = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)
    ref = torch.log_softmax(torch.tensor([0.0, 0.4, -0.3], dtype=torch.float64), 0)

    def expected_grad(name):
        logits.grad = None
        logp = torch.log_softmax(logits, 0)
        # the loss is differentiated with the sampling distribution held fixed
        (logp.detach().exp() * kl_estimate(logp, ref, name)).sum().backward()
        return logits.grad.clone()

    def true_grad(direction):
        logits.grad = None
        logp = torch.log_softmax(logits, 0)
        kl = (logp.exp() * (logp - ref)).sum() if direction == "reverse" else (ref.exp() * (ref - logp)).sum()
        kl.backward()
        return logits.grad.clone()

    assert torch.allclose(expected_grad("k1"), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(expected_grad("k2"), true_grad("reverse"))
    assert torch.allclose(expected_grad("k3"), true_grad("forward"))
    assert torch.allclose(expected_grad("k3+"), true_grad("reverse"))


def test_kl_term_and_entropy_bonus_enter_the_loss():
    lp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ent = torch.tensor([[0.5, 1.5]], requires_grad=True)
    x = LossInputs(lp, lp.detach(), lp.detach(), torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), 2.0,
                   ref_logprobs_B_T=torch.tensor([[-1.0, -1.0]]), entropy_B_T=ent)
    loss, stats = compute_loss(LossConfig(kl_coef=0.1, kl_estimator="k2"), x, entropy_coef=0.01)
    # pg 0 (A = 0); k2 = [0, 0.5] -> mean 0.25; entropy mean 1.0
    assert float(loss) == pytest.approx(0.1 * 0.25 - 0.01 * 1.0)
    assert stats.sums["kl"] == pytest.approx(0.5) and stats.sums["entropy"] == pytest.approx(2.0)


def test_mismatch_corrections():
    old = torch.log(torch.tensor([[1.0, 1.0, 1.0]]))
    sampler = torch.log(torch.tensor([[1.0, 0.25, 2.0]]))  # w = old / sampler = [1, 4, 0.5]
    x = LossInputs(old, old, sampler, torch.ones(1, 3), torch.ones(1, 3, dtype=torch.bool), 3.0)
    cfg = LossConfig(is_cap=2.0, is_low=0.6, is_high=2.0)
    w, flags = mismatch_weights(x, cfg, "tis")
    assert w[0].tolist() == pytest.approx([1.0, 2.0, 0.5]) and flags["is/truncated_frac"].tolist() == [[False, True, False]]
    w, flags = mismatch_weights(x, cfg, "mis")  # IcePop: tokens outside [0.6, 2] masked
    assert w.tolist() == [[1.0, 0.0, 0.0]]
    w, _ = mismatch_weights(x, cfg, "tis_seq")  # product 2 -> capped at 2 for every token
    assert w[0].tolist() == pytest.approx([2.0, 2.0, 2.0])
    w, _ = mismatch_weights(x, cfg, "mis_seq")  # geometric mean 2^(1/3) in range: kept
    assert w.tolist() == [[1.0, 1.0, 1.0]]
    assert mismatch_weights(x, cfg, "none")[0].tolist() == [[1.0, 1.0, 1.0]]


def test_extreme_log_ratio_stays_finite():
    """Defect: an unclamped log-ratio overflows exp() and masked padding turns 0 * inf into NaN."""
    lp = torch.tensor([[-0.1, -0.1]], requires_grad=True)
    old = torch.tensor([[-200.0, -1e4]])  # second token is padding with a garbage value
    x = LossInputs(lp, old, old, torch.tensor([[-1.0, -1.0]]), torch.tensor([[True, False]]), 1.0)
    for policy in ("ppo_clip", "cispo", "gppo"):
        lp.grad = None
        loss, stats = compute_loss(LossConfig(policy=policy), x, mismatch="tis")
        loss.backward()
        assert math.isfinite(float(loss)) and torch.isfinite(lp.grad).all(), policy
        assert all(math.isfinite(v) for v in stats.result().values()), policy


def test_sum_norm_divides_by_one_constant():
    """Defect: Dr. GRPO's divisor was the micro-batch's longest completion, varying per batch."""
    per_token = torch.ones(2, 5)
    short_mask = torch.tensor([[True, True, False, False, False], [True, False, False, False, False]])
    a = aggregate(per_token, short_mask, "seq-mean-token-sum-norm", 2.0, norm_length=16)
    b = aggregate(per_token[:, :2], short_mask[:, :2], "seq-mean-token-sum-norm", 2.0, norm_length=16)
    assert float(a) == float(b) == pytest.approx((2 / 16 + 1 / 16) / 2)


def test_stats_add_up_across_micro_batches():
    s1, s2 = LossStats({"entropy": 2.0}, {"loss": 0.25}, {"ratio/max": 1.5}, 4), LossStats({"entropy": 4.0}, {"loss": 0.5}, {"ratio/max": 1.2}, 4)
    total = LossStats()
    total.add(s1), total.add(s2)
    out = total.result(optimizer_steps=1)
    assert out == {"entropy": 0.75, "loss": 0.75, "ratio/max": 1.5}


def test_value_loss_clipped_hand_computed():
    values = torch.tensor([[1.0, 0.0]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[2.0, 1.0]])
    loss, stats = value_loss(values, old, returns, torch.tensor([[True, True]]), clip=0.5, normalizer=2.0)
    # token 0: unclipped (1-2)^2 = 1, clipped (0.5-2)^2 = 2.25 -> 2.25 (no gradient); token 1: (0-1)^2 = 1
    assert float(loss) == pytest.approx(0.5 * (2.25 + 1.0) / 2)
    loss.backward()
    assert values.grad[0].tolist() == pytest.approx([0.0, -0.5])
    assert stats.sums["critic/clip_frac"] == 1
