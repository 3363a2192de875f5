"""Tests for the per-input defenders DIP / DAE / I-DIP / RIDE (seed 002, Alg. 1–2, appendix)."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from robustjax.defenses import IMAGENET_STD
from robustjax.defenses import MNIST_STD
from robustjax.defenses import PAPER_SIGMA_NORMALIZED
from robustjax.defenses import RIDE_CONFIGS
from robustjax.defenses import SIGMA_PIXEL_UNITS
from robustjax.defenses import ride_label
from robustjax.defenses import sigma_in_pixel_units
from robustjax.defenses import ReconstructionNet
from robustjax.defenses import RideConfig
from robustjax.defenses import random_loss_mask
from robustjax.defenses import ride
from robustjax.defenses import ride_interpolate
from robustjax.defenses import self_supervised_single
from robustjax.defenses import self_supervised_trace
from robustjax.models._ride import make_reconstruction_net
from robustjax.models._ride import ride_fcn

TINY = make_reconstruction_net(ride_fcn("tiny"))
SMALL = RideConfig(steps=3, num_checkpoints=3, learning_rate=1e-2, mask_ratio=0.5)


def _imgs(n=3, h=6, w=6, c=1, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, h, w, c)).astype(np.float32)


def _pixel_net():
    """A 'network' whose parameters are an image: h(z; u) = u for every input z."""

    def init(key, x):
        del key
        return jnp.zeros_like(x)

    def apply(params, z, key, train):
        del key, train
        return jnp.broadcast_to(params, z.shape)

    return ReconstructionNet(init, apply)


def test_paper_defaults():
    cfg = RideConfig()
    # sigma: the paper's 0.5 on ImageNet-normalized inputs, in [0, 1] pixel units.
    assert (cfg.steps, cfg.num_checkpoints, cfg.alpha, cfg.sigma, cfg.batch_size) == (
        2000, 5, 0.9, SIGMA_PIXEL_UNITS, 1)
    assert (cfg.learning_rate, cfg.weight_decay, cfg.mask_ratio) == (1e-4, 1e-4, 0.9)
    assert cfg.nms and cfg.dropout_at_eval and not cfg.decoupled_weight_decay
    assert RIDE_CONFIGS["mnist"] == cfg
    assert cfg.chunk_size == 8  # execution only


def test_sigma_units_both_readings():
    # 0.5 normalized-std units = 0.5 * mean(0.229, 0.224, 0.225) in [0, 1] pixels.
    assert PAPER_SIGMA_NORMALIZED == 0.5
    np.testing.assert_allclose(sigma_in_pixel_units(0.5), 0.5 * np.mean(IMAGENET_STD))
    np.testing.assert_allclose(sigma_in_pixel_units(0.5), 0.113, atol=5e-4)
    np.testing.assert_allclose(sigma_in_pixel_units(0.5, MNIST_STD), 0.5 * 0.3081)
    assert SIGMA_PIXEL_UNITS == 0.113
    assert RIDE_CONFIGS["literal_sigma"] == RideConfig(sigma=0.5)
    # Normalizing, adding N(0, s^2) noise and un-normalizing is N(0, (s*std)^2) in pixels.
    rng = np.random.default_rng(0)
    noise = 0.5 * rng.standard_normal(200_000) * 0.3081
    np.testing.assert_allclose(noise.std(), sigma_in_pixel_units(0.5, MNIST_STD), rtol=0.01)


def test_ride_label_marks_every_deviation():
    assert ride_label(RideConfig()) == "RIDE"
    small = RideConfig(steps=50, num_checkpoints=4, learning_rate=1e-2, sigma=0.2)
    assert ride_label(small) == "RIDE-small (K=50, T=4, lr=0.01, σ=0.2)"
    assert ride_label(small._replace(mask_ratio=0.5)).endswith(", p=0.5)")
    assert ride_label(RideConfig(sigma=0.5)) == "RIDE (σ=0.5)"
    assert ride_label(RideConfig(num_checkpoints=4)).startswith("RIDE-small (K=2000, T=4,")


def _single(method, cfg):
    return jax.jit(lambda k, v: self_supervised_single(TINY, k, v, method=method,
                                                       config=cfg).estimate)


def test_ride_alpha_one_reduces_to_dae():
    # Per-image identities, checked on the single-image program (cheaper to compile than the
    # batched one; batch == per-image runs is tested below) for two images.
    x = _imgs(n=2)
    keys = jax.random.split(jax.random.key(0), 2)
    ride1 = _single("ride", SMALL._replace(alpha=1.0, nms=False))
    dae_ = _single("dae", SMALL)
    dae9 = _single("dae", SMALL._replace(steps=9, num_checkpoints=1))
    ride_ = _single("ride", SMALL)
    for k, v in zip(keys, x):
        d = np.asarray(dae_(k, v))
        np.testing.assert_allclose(ride1(k, v), d, atol=1e-6)
        # DAE with T checkpoints of K steps is one DAE run of K·T steps.
        np.testing.assert_allclose(dae9(k, v), d, atol=1e-6)
        # ... and with α < 1 RIDE really moves its target, so the outputs differ.
        assert np.abs(np.asarray(ride_(k, v)) - d).max() > 1e-4


def test_batch_equals_per_image_runs_and_is_randomized():
    x = _imgs(n=3, c=2)
    key = jax.random.key(1)
    run = jax.jit(lambda k, v: self_supervised_trace(TINY, k, v, config=SMALL))  # one compile
    batched = run(key, x)
    single = jax.jit(lambda k, v: self_supervised_single(TINY, k, v, config=SMALL))
    keys = jax.random.split(key, 3)
    for i in range(3):
        one = single(keys[i], x[i])
        for a, b in zip(batched, one):
            np.testing.assert_allclose(a[i], b, atol=1e-5)
    # Chunking is execution only: chunks of 2 (two programs: a chunk and a remainder of 1) give
    # what one program of all 3 gives (the default chunk_size=8 > 3 above).
    alt = jax.jit(lambda k, v: self_supervised_trace(
        TINY, k, v, config=SMALL._replace(chunk_size=2)))(key, x)
    for a, b in zip(batched, alt):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert batched.estimate.shape == x.shape
    assert batched.estimates.shape == (3, 3) + x.shape[1:]
    assert batched.targets.shape == (3, 3) + x.shape[1:]
    assert batched.losses.shape == (3, 3, 3)
    np.testing.assert_allclose(batched.estimate, batched.estimates[:, -1])
    # Same key -> same output; another key -> another network and output (randomized defense).
    again = run(key, x)
    np.testing.assert_array_equal(again.estimate, batched.estimate)
    other = run(jax.random.key(2), x)
    assert np.abs(np.asarray(other.estimate) - np.asarray(batched.estimate)).max() > 1e-4


def test_ride_targets_follow_eq9():
    # targets[t] = ride_interpolate(targets[t-1], estimates[t]) with targets[-1] = x.
    x = _imgs(n=1, c=3)[0]
    tr = jax.jit(lambda k, v: self_supervised_single(TINY, k, v, config=SMALL))(
        jax.random.key(3), x)
    prev = x
    for t in range(3):
        want = ride_interpolate(prev, tr.estimates[t], alpha=SMALL.alpha, nms=True)
        np.testing.assert_allclose(tr.targets[t], want, atol=1e-6)
        prev = tr.targets[t]
    dtr = jax.jit(lambda k, v: self_supervised_single(TINY, k, v, method="dae", config=SMALL))(
        jax.random.key(3), x)
    np.testing.assert_allclose(dtr.targets, np.broadcast_to(x, dtr.targets.shape))


def test_nms_substitutes_exactly_the_close_pixels():
    h, w, c = 4, 4, 3
    target = np.zeros((h, w, c), np.float32)
    # Pixel i has l1 distance (i + 1) / 10 spread over its channels; median = 0.85.
    dist = (np.arange(h * w) + 1).reshape(h, w) / 10.0
    estimate = np.repeat((dist / c)[..., None], c, axis=-1).astype(np.float32)
    estimate[..., 1] *= -1.0  # signs must not matter (l1 distance)
    alpha = 0.9
    got = np.asarray(jax.jit(lambda a, b: ride_interpolate(a, b, alpha=alpha))(target, estimate))
    close = dist < np.median(dist)
    assert close.sum() == 8
    np.testing.assert_allclose(got[close], estimate[close], atol=0)
    np.testing.assert_allclose(got[~close], (1 - alpha) * estimate[~close], atol=1e-7)
    plain = ride_interpolate(target, estimate, alpha=alpha, nms=False)
    np.testing.assert_allclose(plain, (1 - alpha) * estimate, atol=1e-7)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.9])
def test_random_loss_mask_excludes_exact_fraction(ratio):
    masks = jax.vmap(lambda k: random_loss_mask(k, (5, 8), ratio=ratio))(
        jax.random.split(jax.random.key(4), 6))
    kept = np.asarray(masks).reshape(6, -1).sum(-1)
    np.testing.assert_array_equal(kept, 40 - round(ratio * 40))
    if 0 < ratio:
        assert len({np.asarray(m).tobytes() for m in masks}) > 1


def test_masked_loss_updates_only_unmasked_pixels():
    # With h(z; u) = u, one DIP step of Adam (no weight decay) moves exactly the pixels that
    # entered the loss, all channels of a pixel together.
    x = 0.9 * _imgs(n=1, h=6, w=5, c=3, seed=5)[0] + 0.1  # in [0.1, 1]: every pixel nonzero
    cfg = RideConfig(steps=1, num_checkpoints=1, learning_rate=1e-2, weight_decay=0.0,
                     mask_ratio=0.6)
    tr = self_supervised_single(_pixel_net(), jax.random.key(6), x, method="dip", config=cfg)
    moved = np.abs(np.asarray(tr.estimate)) > 1e-6
    assert np.all(moved.all(-1) == moved.any(-1))
    assert moved.all(-1).sum() == 30 - round(0.6 * 30)
    # The initial loss is the mean over kept pixels and channels of (0 - x)^2.
    keep = moved.all(-1)
    np.testing.assert_allclose(tr.losses[0, 0], np.mean(x[keep] ** 2), rtol=1e-5)
    # Without masking every pixel moves.
    tr0 = self_supervised_single(_pixel_net(), jax.random.key(6), x, method="dip",
                                 config=cfg._replace(mask_ratio=0.0))
    assert np.all(np.abs(np.asarray(tr0.estimate)) > 1e-6)


def test_weight_decay_modes():
    # Coupled (Adam + L2 in the gradient, the paper's PyTorch Adam) and decoupled (AdamW)
    # weight decay are different optimizers: with a large decay their outputs differ.
    x = _imgs(n=1, seed=7)[0]
    cfg = RideConfig(steps=5, num_checkpoints=1, learning_rate=1e-2, weight_decay=0.5,
                     mask_ratio=0.0)
    a = self_supervised_single(TINY, jax.random.key(8), x, method="dae", config=cfg)
    b = self_supervised_single(TINY, jax.random.key(8), x, method="dae",
                               config=cfg._replace(decoupled_weight_decay=True))
    assert np.abs(np.asarray(a.estimate) - np.asarray(b.estimate)).max() > 1e-6


@pytest.mark.parametrize("method", ["dip", "dae", "idip", "ride"])
def test_reconstruction_loss_decreases(method):
    x = np.full((8, 8, 1), 0.25, np.float32)
    x[2:6, 3:5] = 0.75
    cfg = RideConfig(steps=40, num_checkpoints=2, learning_rate=1e-2, sigma=0.1,
                     mask_ratio=0.0, dropout_at_eval=False)
    net = make_reconstruction_net(ride_fcn("mnist", dropout=False))
    tr = jax.jit(lambda k, v: self_supervised_single(net, k, v, method=method, config=cfg))(
        jax.random.key(9), x)
    losses = np.asarray(tr.losses).reshape(-1)
    assert losses[-10:].mean() < 0.6 * losses[:10].mean()
    err = np.abs(np.asarray(tr.estimates) - x).mean(axis=(1, 2, 3))
    assert err[-1] < np.abs(np.mean(x) - x).mean()  # better than the best constant image


def test_rejects_bad_arguments():
    x = _imgs()
    with pytest.raises(ValueError, match="method"):
        self_supervised_trace(TINY, jax.random.key(0), x, method="dncnn", config=SMALL)
    with pytest.raises(ValueError, match="alpha"):
        ride(TINY, jax.random.key(0), x, config=SMALL._replace(alpha=1.5))
    with pytest.raises(ValueError, match="mask_ratio"):
        ride(TINY, jax.random.key(0), x, config=SMALL._replace(mask_ratio=1.0))
    with pytest.raises(ValueError, match="steps"):
        ride(TINY, jax.random.key(0), x, config=SMALL._replace(steps=0))
    with pytest.raises(ValueError, match="x"):
        ride(TINY, jax.random.key(0), x[0], config=SMALL)
    with pytest.raises(ValueError, match="key"):
        ride(TINY, 0, x, config=SMALL)
    with pytest.raises(ValueError, match="chunk_size"):
        ride(TINY, jax.random.key(0), x, config=SMALL._replace(chunk_size=0))
