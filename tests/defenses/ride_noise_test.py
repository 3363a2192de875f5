"""Statistical checks of DAE / RIDE's noise model (seed 002, Eq. 7, Alg. 1–2).

Each test uses a probe "network" whose output is a known function of its input ``z`` and
whose parameters receive a zero gradient (so Adam and the weight decay leave them at zero and
the probe never changes). The recorded per-step losses and the estimates then expose exactly
what the defender fed the network and what it fitted to:

* identity probe ``h(z) = z``: loss ``mean((z - s)²)``. With ``z, s`` independent draws from
  ``N(x⁽ᵗ⁻¹⁾, σ²)`` its expectation is ``2σ²``; with ``s = z`` it is ``0``, with a noiseless
  target or input ``σ²``.
* zero probe ``h(z) = 0``: loss ``mean(s²)``, expectation ``mean(x⁽ᵗ⁻¹⁾²) + σ²`` — it follows
  the *moving* target of checkpoint ``t``, not the input ``x̃``.
* identity probe, estimate ``mean_n h(z_n) = x⁽ᵗ⁻¹⁾ + σ·mean_n ε_n``: formed with noise, its
  deviation from the target has standard deviation ``σ/√n``.

Tolerances are derived from the sampling distributions (a few standard errors), not from one
machine's rounding.
"""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from robustjax.defenses import ReconstructionNet
from robustjax.defenses import RideConfig
from robustjax.defenses import self_supervised_single


def _probe(scale: float) -> ReconstructionNet:
    """``h(z; w) = scale · z + 0 · w`` with a scalar parameter ``w = 0`` (zero gradient)."""

    def init(key, x):
        del key, x
        return jnp.zeros(())

    def apply(params, z, key, train):
        del key, train
        return scale * z + 0.0 * params

    return ReconstructionNet(init, apply)


H, W, C = 12, 10, 1
SIGMA = 0.3


def _image(seed=0):
    return np.random.default_rng(seed).uniform(0.2, 1.0, size=(H, W, C)).astype(np.float32)


def _run(net, cfg, method="ride", seed=1, x=None):
    x = _image() if x is None else x
    fn = jax.jit(lambda k, v: self_supervised_single(net, k, v, method=method, config=cfg))
    return x, fn(jax.random.key(seed), x)


@pytest.mark.parametrize("method", ["dae", "ride"])
def test_input_and_target_are_independent_noisy_draws(method):
    # Identity probe: loss = mean over pixels of (z - s)^2 = sigma^2 (e1 - e2)^2.
    # Independent draws: E = 2 sigma^2 (s = z would give 0; one noiseless side sigma^2).
    k, t = 100, 2
    cfg = RideConfig(steps=k, num_checkpoints=t, sigma=SIGMA, mask_ratio=0.0,
                     batch_size=1, learning_rate=1e-3)
    _, tr = _run(_probe(1.0), cfg, method=method)
    losses = np.asarray(tr.losses).reshape(-1)
    # Each step's loss is sigma^2 * (2 chi^2_P / P), P = H*W: mean 2 sigma^2, sd 2 sigma^2
    # sqrt(2/P); the mean over k*t steps has sd 2 sigma^2 sqrt(2/(P k t)) (~0.4 % here).
    want = 2 * SIGMA**2
    se = want * np.sqrt(2.0 / (H * W * C * k * t))
    assert abs(losses.mean() - want) < 6 * se, (losses.mean(), want)
    # Per-step fluctuation: a single step is a chi-square of P terms, not a constant.
    np.testing.assert_allclose(losses.std(), want * np.sqrt(2.0 / (H * W * C)), rtol=0.25)


def test_masked_loss_keeps_the_two_sigma_squared_expectation():
    # The loss masks only choose which pixels enter the mean; the expectation is unchanged.
    k = 200
    cfg = RideConfig(steps=k, num_checkpoints=1, sigma=SIGMA, mask_ratio=0.5,
                     learning_rate=1e-3)
    _, tr = _run(_probe(1.0), cfg, method="dae")
    kept = H * W - round(0.5 * H * W)
    want = 2 * SIGMA**2
    se = want * np.sqrt(2.0 / (kept * C * k))
    assert abs(float(np.mean(tr.losses)) - want) < 6 * se


def test_training_follows_the_moving_target():
    # Zero probe: the estimate is 0, so RIDE's target shrinks (Eq. 9 + NMS) from checkpoint to
    # checkpoint; the loss of checkpoint t is mean(s^2) with s ~ N(x^(t-1), sigma^2), i.e.
    # mean(x^(t-1)^2) + sigma^2. Training on the fixed input x~ would give mean(x~^2) + sigma^2
    # at every checkpoint.
    k, t = 150, 4
    cfg = RideConfig(steps=k, num_checkpoints=t, sigma=SIGMA, mask_ratio=0.0, alpha=0.7,
                     nms=False, learning_rate=1e-3)
    x, tr = _run(_probe(0.0), cfg, method="ride")
    targets = np.concatenate([x[None], np.asarray(tr.targets)], axis=0)  # x^(0..T)
    # The probe's estimate is exactly 0, so x^(t) = alpha^t x.
    np.testing.assert_allclose(targets[t], cfg.alpha**t * x, rtol=1e-5)
    per_ckpt = np.asarray(tr.losses).mean(axis=1)
    for i in range(t):
        m = targets[i]  # x^(t-1) for checkpoint t = i + 1
        want = float(np.mean(m**2)) + SIGMA**2
        # Var of s^2 per pixel: 4 m^2 sigma^2 + 2 sigma^4; mean over P*k samples.
        se = np.sqrt(np.mean(4 * m**2 * SIGMA**2 + 2 * SIGMA**4) / (H * W * C * k))
        assert abs(per_ckpt[i] - want) < 6 * se, (i, per_ckpt[i], want)
    # The checkpoints really differ (a fixed target would keep them equal within noise).
    assert per_ckpt[0] - per_ckpt[-1] > 0.1
    # DAE keeps the target fixed: every checkpoint sees mean(x~^2) + sigma^2.
    _, dtr = _run(_probe(0.0), cfg, method="dae")
    d_ckpt = np.asarray(dtr.losses).mean(axis=1)
    want = float(np.mean(x**2)) + SIGMA**2
    se = np.sqrt(np.mean(4 * x**2 * SIGMA**2 + 2 * SIGMA**4) / (H * W * C * k))
    assert np.all(np.abs(d_ckpt - want) < 6 * se), (d_ckpt, want)


@pytest.mark.parametrize("n", [1, 16])
def test_estimate_is_formed_with_noise_around_the_current_target(n):
    # Half probe h(z) = z / 2: x_est^(t) = mean_n (x^(t-1) + sigma e_n) / 2, centred on HALF
    # the checkpoint's target x^(t-1), with per-pixel sd sigma / (2 sqrt(n)). A noiseless
    # estimate would have deviation 0; one formed around x~ instead of the moved target would
    # be off by (x~ - x^(t-1)) / 2 (alpha = 1/2 moves the target by a quarter per checkpoint).
    t = 3
    cfg = RideConfig(steps=2, num_checkpoints=t, sigma=SIGMA, mask_ratio=0.0, alpha=0.5,
                     batch_size=n, nms=False, learning_rate=1e-3)
    x = np.full((24, 24, 1), 0.5, np.float32)
    x[6:18, 8:14] = 1.0
    x, tr = _run(_probe(0.5), cfg, method="ride", x=x)
    targets = np.concatenate([x[None], np.asarray(tr.targets)], axis=0)
    est = np.asarray(tr.estimates)
    p = x.size
    sd = 0.5 * SIGMA / np.sqrt(n)
    for i in range(t):
        dev = (est[i] - 0.5 * targets[i]).reshape(-1)
        # Sample sd of P normal deviations: relative se ~ 1/sqrt(2P) (~3 % here).
        np.testing.assert_allclose(dev.std(), sd, rtol=6 / np.sqrt(2 * p))
        assert abs(dev.mean()) < 6 * sd / np.sqrt(p)
        # Fresh draws at every checkpoint: consecutive deviations are uncorrelated.
        if i:
            prev = (est[i - 1] - 0.5 * targets[i - 1]).reshape(-1)
            assert abs(np.corrcoef(dev, prev)[0, 1]) < 6 / np.sqrt(p)
    # The last estimate is far from what a network fed noise around x~ would return.
    off = (est[t - 1] - 0.5 * x).reshape(-1)
    assert abs(off.mean()) > 20 * sd / np.sqrt(p)
