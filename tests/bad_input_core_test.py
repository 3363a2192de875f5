"""Bad input to the core packages (linearity, defenses, spatial, certify, implicit, the LLR
evaluation protocol and training objectives): every case ends in a ValueError (or TypeError) that
names the argument, eagerly and under ``jax.jit`` in the checked mode (``robustjax.checked``);
none returns output silently. Swept hyperparameters (the TV weight, ε, λ, μ) accept traced values,
so ``jax.vmap`` over them works, and negative or NaN ones still raise.

The attacks, losses, reports and ``fit`` have their own probe in ``tests/bad_input_probe_test.py``.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import robustjax
from robustjax import certify, defenses, evaluation, implicit, linearity, losses, spatial
from robustjax.evaluation import _protocols
from robustjax.training import _llr

@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """The probe compiles many small programs once each: XLA's optimisation passes are most of
    that time and change nothing the probe checks."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


N, H, W, C, K, D = 3, 4, 4, 1, 4, 2
_W = jax.random.normal(jax.random.key(0), (H * W * C, K)) * 0.3
_G = jax.random.normal(jax.random.key(10), (D, H * W * C))


def logits_fn(x):
    return jnp.reshape(x, (x.shape[0], -1)) @ _W


def loss_of(y):
    return lambda x: losses.cross_entropy(logits_fn(x), y)


X = jax.random.uniform(jax.random.key(1), (N, H, W, C), minval=0.1, maxval=0.9)
Y = jnp.array([0, 3, 1], jnp.int32)
KEY = jax.random.key(2)
DELTA = 0.01 * jnp.ones_like(X)


def generator_fn(z):  # z [M, d] -> [M, H, W, C] in (0, 1)
    return jax.nn.sigmoid(z @ _G).reshape((-1, H, W, C))


def decoder_fn(z):  # z [K, M, d] -> [K, M, H, W, C]
    return jax.nn.sigmoid(z @ _G).reshape(z.shape[:2] + (H, W, C))


def _pixel_net():
    def init(key, x):
        del key
        return {"u": jnp.zeros_like(x)}

    def apply(p, z, key, train):
        del key, train
        return jnp.broadcast_to(p["u"], z.shape) + 0.0 * z

    return defenses.ReconstructionNet(init, apply)


NET = _pixel_net()
RIDE_CFG = defenses.RideConfig(steps=1, num_checkpoints=1, mask_ratio=0.0, chunk_size=None)
DGAN = dict(latent_dim=D, restarts=1, steps=2, learning_rate=1.0, backward_steps=1,
            cg_maxiter=2)
ABS = dict(num_classes=K, latent_dim=D, num_samples=4, steps=2, backward_steps=1, cg_maxiter=2)
LB = dict(shape=(H, W), eps=0.5, steps=1, x_steps=1, num_points=2)
LLR = dict(eps=0.1, steps=1, step_size=0.05)


# ------------------------------------------------------------------------------------------
# Functions of a batch of images x [N, H, W, C] (and labels y [N] where they take them).

IMAGE_FNS = {
    "linearity.linearity_gap": lambda x, y: linearity.linearity_gap(loss_of(y), x, DELTA),
    "linearity.linearity_terms": lambda x, y: linearity.linearity_terms(loss_of(y), x,
                                                                        DELTA).loss_x,
    "linearity.maximize_linearity_gap": lambda x, y: linearity.maximize_linearity_gap(
        loss_of(y), KEY, x, **LLR).delta,
    "linearity.local_linearity": lambda x, y: linearity.local_linearity(
        loss_of(y), KEY, x, **LLR).gamma,
    "linearity.llr_penalty": lambda x, y: linearity.llr_penalty(loss_of(y), KEY, x, **LLR),
    "linearity.ggn_quadratic_form": lambda x, y: linearity.ggn_quadratic_form(
        logits_fn, x, DELTA),
    "linearity.quadratic_model_error": lambda x, y: linearity.quadratic_model_error(
        logits_fn, x, y, DELTA),
    "linearity.cross_entropy_ggn_bound": lambda x, y: linearity.cross_entropy_ggn_bound(
        logits_fn, x, y, DELTA).rhs,
    "defenses.median_filter": lambda x, y: defenses.median_filter(x, size=3),
    "defenses.tv_denoise": lambda x, y: defenses.tv_denoise(x, weight=0.1, steps=2),
    "defenses.tv_denoise_bregman": lambda x, y: defenses.tv_denoise(
        x, weight=0.1, steps=2, method="bregman"),
    "defenses.rof_energy": lambda x, y: defenses.rof_energy(X, x, weight=0.1),
    "defenses.image_gradient": lambda x, y: defenses.image_gradient(x),
    "defenses.defensegan_reconstruct": lambda x, y: defenses.defensegan_reconstruct(
        generator_fn, KEY, x, **DGAN),
    "defenses.defensegan_logits": lambda x, y: defenses.defensegan_logits(
        logits_fn, generator_fn, KEY, x, **DGAN),
    "defenses.make_defensegan_logits_fn": lambda x, y: defenses.make_defensegan_logits_fn(
        logits_fn, generator_fn, KEY, **DGAN)(x),
    "defenses.abs_logits": lambda x, y: defenses.abs_logits(decoder_fn, KEY, x, **ABS),
    "defenses.make_abs_logits_fn": lambda x, y: defenses.make_abs_logits_fn(
        decoder_fn, KEY, **ABS)(x),
    "defenses.ride": lambda x, y: defenses.ride(NET, KEY, x, config=RIDE_CFG),
    "defenses.dip": lambda x, y: defenses.dip(NET, KEY, x, config=RIDE_CFG),
    "defenses.dae": lambda x, y: defenses.dae(NET, KEY, x, config=RIDE_CFG),
    "defenses.idip": lambda x, y: defenses.idip(NET, KEY, x, config=RIDE_CFG),
    "defenses.defensegan_reconstruct_with_latent": lambda x, y: (
        defenses.defensegan_reconstruct_with_latent(generator_fn, KEY, x, **DGAN).z),
    "defenses.abs_logits_with_latent": lambda x, y: defenses.abs_logits_with_latent(
        decoder_fn, KEY, x, **ABS).z,
    "linearity.squared_error_ggn_bound": lambda x, y: linearity.squared_error_ggn_bound(
        logits_fn, x, jnp.zeros((x.shape[0], K)), DELTA).rhs,
    "defenses.self_supervised_trace": lambda x, y: defenses.self_supervised_trace(
        NET, KEY, x, method="dae", config=RIDE_CFG).estimate,
    "spatial.warp": lambda x, y: spatial.warp(x, jnp.zeros(x.shape[:3] + (2,))),
    "evaluation.random_targeted_success": lambda x, y: _protocols.random_targeted_success(
        logits_fn, KEY, x, y, eps=0.1, steps=1, restarts=1).success,
    "objectives.llr_objective": lambda x, y: _objective("llr", x, y),
    "objectives.trades_objective": lambda x, y: _objective("trades", x, y),
    "objectives.adv_k_objective": lambda x, y: _objective("adv", x, y),
}
LABEL_FNS = ("linearity.quadratic_model_error", "linearity.cross_entropy_ggn_bound",
             "evaluation.random_targeted_success", "objectives.llr_objective",
             "objectives.trades_objective", "objectives.adv_k_objective")


class _State:
    """The fields of a TrainState the objectives read (a linear model, no batch norm)."""

    def __init__(self):
        self.step = 0
        self.batch_stats = {}
        self.apply_fn = lambda v, x, train=False, rngs=None: (
            jnp.reshape(x, (x.shape[0], -1)) @ v["params"]["w"])


_OBJECTIVES = {
    "llr": _llr.llr_objective(eps=0.1, steps=1, step_size=0.05),
    "trades": _llr.trades_objective(beta=1.0, eps=0.1, steps=1, step_size=0.05),
    "adv": _llr.adv_k_objective(steps=1, eps=0.1, step_size=0.05),
}


def _objective(name, x, y):
    return _OBJECTIVES[name]({"w": _W}, _State(), {"image": x, "label": y}, KEY)[0]


# Wrappers whose checks are their sibling's (same validation code, already compiled in the
# checked mode above them): eager cases only, to keep the probe fast.
SAME_CHECKS_AS = {
    "defenses.dip": "defenses.ride",
    "defenses.dae": "defenses.ride",
    "defenses.idip": "defenses.ride",
    "defenses.defensegan_reconstruct_with_latent": "defenses.defensegan_reconstruct",
    "defenses.abs_logits_with_latent": "defenses.abs_logits",
    "linearity.squared_error_ggn_bound": "linearity.cross_entropy_ggn_bound",
    "defenses.self_supervised_trace": "defenses.ride",
    "defenses.defensegan_logits": "defenses.defensegan_reconstruct",
    "defenses.make_defensegan_logits_fn": "defenses.defensegan_reconstruct",
    "defenses.make_abs_logits_fn": "defenses.abs_logits",
    "defenses.tv_denoise_bregman": "defenses.tv_denoise",
    "linearity.maximize_linearity_gap": "linearity.local_linearity",
    "linearity.llr_penalty": "linearity.local_linearity",
}

# (case, x, y, argument the message must name, a value error that only the checked mode sees
# under jit)
DATA_CASES = [
    ("nan", X.at[0, 0, 0, 0].set(jnp.nan), Y, "x", True),
    ("pixels_0_255", X * 255.0, Y, "x", True),
    ("nchw", jnp.transpose(jnp.concatenate([X, X, X], -1), (0, 3, 1, 2)), Y, "x", False),
    ("empty", X[:0], Y[:0], "x", False),
]
LABEL_CASES = [
    ("label_too_large", X, Y.at[2].set(K), "y", True),
    ("negative_label", X, Y.at[0].set(-1), "y", True),
    ("float_labels", X, Y.astype(jnp.float32), "y", False),
]


def _raises_naming(fn, name):
    with pytest.raises((ValueError, TypeError), match=re.escape(f"`{name}`")):
        jax.block_until_ready(fn())


_CHECKED: dict = {}


def checked(key, f):
    """``robustjax.checked(jax.jit(f))``, built once per function: the bad inputs of a function
    share shapes and dtypes, so they share one compilation."""
    if key not in _CHECKED:
        _CHECKED[key] = robustjax.checked(jax.jit(f))
    return _CHECKED[key]


def _arg_name(fn, name):
    """The objectives name their batch entries: ``batch['image']`` / ``batch['label']``."""
    if fn.startswith("objectives."):
        return {"x": "batch['image']", "y": "batch['label']"}[name]
    return name


@pytest.mark.parametrize("case,x,y,name,value", DATA_CASES, ids=[c[0] for c in DATA_CASES])
@pytest.mark.parametrize("fn", sorted(IMAGE_FNS))
def test_image_functions_refuse_bad_images(fn, case, x, y, name, value):
    f, name = IMAGE_FNS[fn], _arg_name(fn, name)
    _raises_naming(lambda: f(x, y), name)
    if value and fn not in SAME_CHECKS_AS:
        _raises_naming(lambda: checked(fn, f)(x, y), name)


@pytest.mark.parametrize("case,x,y,name,value", LABEL_CASES, ids=[c[0] for c in LABEL_CASES])
@pytest.mark.parametrize("fn", sorted(LABEL_FNS))
def test_label_functions_refuse_bad_labels(fn, case, x, y, name, value):
    f, name = IMAGE_FNS[fn], _arg_name(fn, name)
    _raises_naming(lambda: f(x, y), name)
    if value:
        _raises_naming(lambda: checked(fn, f)(x, y), name)


def test_checked_mode_passes_good_input_and_plain_jit_skips_value_checks():
    f = IMAGE_FNS["linearity.cross_entropy_ggn_bound"]
    got = checked("linearity.cross_entropy_ggn_bound", f)(X, Y)
    np.testing.assert_allclose(np.asarray(got), np.asarray(jax.jit(f)(X, Y)), rtol=1e-5,
                               atol=1e-6)
    # Unchecked, a jitted function runs on bad values (the checks compile away).
    assert jax.jit(IMAGE_FNS["defenses.median_filter"])(X * 255.0, Y).shape == X.shape


# ------------------------------------------------------------------------------------------
# Single-example functions validate their own rank (they are vmapped over a batch).

def test_single_example_functions_refuse_a_batch_and_bad_images():
    single = {
        "self_supervised_single": lambda x: defenses.self_supervised_single(
            NET, KEY, x, method="ride", config=RIDE_CFG).estimate,
        "ride_interpolate": lambda x: defenses.ride_interpolate(x, x, alpha=0.9),
    }
    for f in single.values():
        _raises_naming(lambda: f(X), "x")                      # a batch, not one image
        _raises_naming(lambda: f(X[0].at[0, 0, 0].set(jnp.nan)), "x")
        _raises_naming(lambda: f(jnp.transpose(jnp.concatenate([X[0]] * 3, -1),
                                               (2, 0, 1))), "x")  # CHW
    _raises_naming(lambda: single["self_supervised_single"](X[0] * 255.0), "x")
    _raises_naming(lambda: robustjax.checked(jax.jit(single["self_supervised_single"]))(
        X[0] * 255.0), "x")
    _raises_naming(lambda: robustjax.checked(jax.jit(single["ride_interpolate"]))(
        X[0].at[0, 0, 0].set(jnp.nan)), "x")


# ------------------------------------------------------------------------------------------
# Flattened-image analysis (spatial, certify), implicit differentiation, host-side functions.

XF = jnp.linspace(-0.9, 0.9, H * W)  # the flattened [d] image of the analysis, in (-1, 1)
RF = 0.1 * jnp.ones(H * W)
VK = jax.random.normal(jax.random.key(4), (K, H * W))
W1 = jax.random.normal(jax.random.key(5), (5, H * W))
V1 = jax.random.normal(jax.random.key(6), (K, 5))


@pytest.mark.parametrize("fn", ["warp_diagonal", "warp_jacobian_diag", "adversarial_loss",
                                "adversarial_loss_midpoint", "adversarial_loss_linear"])
def test_flattened_image_functions(fn):
    score = lambda z: jnp.sum(z ** 2)  # noqa: E731
    f = {
        "warp_diagonal": lambda x, r: spatial.warp_diagonal(x, r, shape=(H, W)),
        "warp_jacobian_diag": lambda x, r: spatial.warp_jacobian_diag(x, r, shape=(H, W)),
        "adversarial_loss": lambda x, r: spatial.adversarial_loss(score, x, r, shape=(H, W)),
        "adversarial_loss_midpoint": lambda x, r: spatial.adversarial_loss_midpoint(
            score, x, r, shape=(H, W), num_points=2),
        "adversarial_loss_linear": lambda x, r: spatial.adversarial_loss_linear(score, x, r),
    }[fn]
    for x, r, name in ((XF.at[3].set(jnp.nan), RF, "x"), (XF * 255.0, RF, "x"),
                       (XF, RF.at[0].set(jnp.nan), "r")):
        _raises_naming(lambda: f(x, r), name)
        _raises_naming(lambda: checked(fn, f)(x, r), name)
    _raises_naming(lambda: f(XF[None], RF), "x")  # not a flattened [d] image


def test_flow_functions():
    flow = jnp.zeros((N, H, W, 2))
    _raises_naming(lambda: spatial.flow_loss(flow.at[0, 0, 0, 0].set(jnp.nan)), "flow")
    _raises_naming(lambda: spatial.flow_loss(jnp.transpose(flow, (0, 3, 1, 2))), "flow")
    _raises_naming(lambda: robustjax.checked(jax.jit(spatial.flow_loss))(
        flow.at[0, 0, 0, 0].set(jnp.inf)), "flow")
    _raises_naming(lambda: spatial.warp(X, flow.at[0, 0, 0, 0].set(jnp.nan)), "flow")
    _raises_naming(lambda: spatial.flow_loss(flow, smoothing=-1.0), "smoothing")


LOWER_BOUNDS = {
    "linear_lower_bound": lambda v, y, eps: certify.linear_lower_bound(
        v, y=y, **dict(LB, eps=eps)).loss,
    "one_hidden_lower_bound": lambda v, y, eps: certify.one_hidden_lower_bound(
        W1, v, y=y, **dict(LB, eps=eps)).loss,
}


@pytest.mark.parametrize("fn", sorted(LOWER_BOUNDS))
def test_lower_bounds_refuse_bad_weights_classes_and_eps(fn):
    f = LOWER_BOUNDS[fn]
    v = VK if fn == "linear_lower_bound" else V1
    cases = [(v.at[0, 0].set(jnp.nan), 0, 0.5, "v"), (v, K, 0.5, "y"), (v, -1, 0.5, "y"),
             (v, 0, -0.5, "eps"), (v, 0, float("nan"), "eps")]
    for vv, y, eps, name in cases:
        _raises_naming(lambda: f(vv, y, eps), name)
        if fn == "linear_lower_bound":  # one_hidden_lower_bound shares these checks
            _raises_naming(lambda: checked(fn, f)(vv, jnp.int32(y), jnp.float32(eps)), name)
    _raises_naming(lambda: f(v, 0.5, 0.5), "y")          # a float class
    _raises_naming(lambda: f(v, None, 0.5), "y")         # K classes need the true class


def test_upper_bounds_refuse_bad_weights_and_eps():
    w, v, lam = W1, V1[0], jnp.ones(H * W)
    bad = v.at[0].set(jnp.nan)
    for f in (lambda w, v, e: certify.frobenius_bound(w, v, eps=e),
              lambda w, v, e: certify.spectral_bound(w, v, eps=e),
              lambda w, v, e: certify.box_bound(w, v, lam, eps=e),
              lambda w, v, e: certify.ellipsoid_bound(w, v, 1.0, eps=e)):
        _raises_naming(lambda: f(w, bad, 0.1), "v")
        _raises_naming(lambda: f(w.at[0, 0].set(jnp.inf), v, 0.1), "w")
        _raises_naming(lambda: f(w, v, -0.1), "eps")
        _raises_naming(lambda: robustjax.checked(f)(w, v, jnp.float32(-0.1)), "eps")
    _raises_naming(lambda: certify.linear_upper_bound(bad, lam, eps=0.1), "v")
    p = certify.sdp_matrix(w, v, lam)
    _raises_naming(lambda: certify.sdp_matrix(w, bad, lam), "v")
    _raises_naming(lambda: certify.sdp_dual_bound(p.at[0, 1].set(jnp.nan), jnp.ones(p.shape[0])),
                   "p")
    _raises_naming(lambda: certify.optimize_dual(p.at[0, 1].set(jnp.nan), steps=1), "p")
    _raises_naming(lambda: certify.optimize_dual_bm(p.at[0, 1].set(jnp.nan), KEY, steps=1), "p")
    _raises_naming(lambda: certify.pairwise_sdp_matrices(w, V1.at[0, 0].set(jnp.nan), lam), "v")
    # Host-side (cvxpy): bad classes and weights raise before any solve, traced input is refused.
    _raises_naming(lambda: certify.multiclass_sdp_bound(w, V1, lam, K), "y")
    _raises_naming(lambda: certify.multiclass_sdp_bound(w, V1.at[0, 0].set(jnp.nan), lam, 0), "v")
    _raises_naming(lambda: jax.jit(lambda vv: certify.multiclass_sdp_bound(w, vv, lam, 0)[0])(V1),
                   "v")


def test_implicit_refuses_bad_input_and_hyperparameters():
    def inner(z, x):
        return jnp.sum((z - x) ** 2)

    x = jnp.ones(D)
    proj = lambda x: implicit.latent_projection(inner, jnp.zeros(D), x, steps=2)  # noqa: E731
    _raises_naming(lambda: proj(x.at[0].set(jnp.nan)), "x")
    _raises_naming(lambda: robustjax.checked(jax.jit(proj))(x.at[0].set(jnp.nan)), "x")
    _raises_naming(lambda: implicit.latent_projection(inner, jnp.zeros(D), x, steps=2,
                                                      learning_rate=-1.0), "learning_rate")
    _raises_naming(lambda: implicit.latent_projection(inner, jnp.zeros(D), x, steps=2,
                                                      learning_rate=float("nan")),
                   "learning_rate")
    _raises_naming(lambda: implicit.latent_projection(inner, jnp.zeros(D), x, steps=0), "steps")
    _raises_naming(lambda: implicit.hessian_spectral_norm(
        inner, jnp.zeros(D).at[0].set(jnp.nan), x, key=KEY), "z")
    _raises_naming(lambda: implicit.solve_neumann(lambda u: u, x, learning_rate=-0.1),
                   "learning_rate")
    _raises_naming(lambda: implicit.check_backward_learning_rate(-1.0, 1.0),
                   "backward_learning_rate")


def test_host_side_protocol_refuses_bad_and_traced_input():
    f = lambda x, y: _protocols.random_targeted_success_rate(  # noqa: E731
        logits_fn, KEY, x, y, eps=0.1, steps=1, restarts=1)
    for _, x, y, name, _ in DATA_CASES + LABEL_CASES:
        _raises_naming(lambda: f(x, y), name)
    _raises_naming(lambda: jax.jit(lambda x: f(x, Y).success_rate)(X), "x")
    _raises_naming(lambda: evaluation.random_targeted_success_rate(
        logits_fn, KEY, X, Y, eps=-0.1), "eps")
    _raises_naming(lambda: evaluation.llr_evaluation_attacks(logits_fn, eps=-0.1), "eps")
    _raises_naming(lambda: evaluation.llr_evaluation_attacks(logits_fn, eps=float("nan")), "eps")


# ------------------------------------------------------------------------------------------
# Hyperparameters: negative / NaN refused (eagerly and traced); swept ones vmap.

def _penalty(lam, mu):
    return linearity.llr_penalty(loss_of(Y), KEY, X, lambda_=lam, mu=mu, **LLR)


HYPER = {
    "eps": lambda v: linearity.local_linearity(loss_of(Y), KEY, X, **dict(LLR, eps=v)).gamma,
    "lambda_": lambda v: _penalty(v, 1.0),
    "mu": lambda v: _penalty(1.0, v),
    "gamma": lambda v: linearity.cross_entropy_ggn_bound(logits_fn, X, Y, DELTA, gamma=v).rhs,
    "weight": lambda v: defenses.tv_denoise(X, weight=v, steps=2),
    "penalty": lambda v: defenses.tv_denoise(X, weight=0.1, steps=2, method="bregman",
                                             penalty=v),
    "rof_weight": lambda v: defenses.rof_energy(X, X, weight=v),
}


@pytest.mark.parametrize("value", [-0.5, float("nan")], ids=["negative", "nan"])
@pytest.mark.parametrize("hp", sorted(HYPER))
def test_hyperparameters_refuse_negative_and_nan(hp, value):
    name = "weight" if hp == "rof_weight" else hp
    f = HYPER[hp]
    _raises_naming(lambda: f(value), name)
    _raises_naming(lambda: f(jnp.float32(value)), name)
    if hp in ("lambda_", "mu"):  # one compiled penalty for both
        v, one = jnp.float32(value), jnp.float32(1.0)
        args = (v, one) if hp == "lambda_" else (one, v)
        _raises_naming(lambda: checked("llr_penalty", _penalty)(*args), name)
    else:
        _raises_naming(lambda: checked(hp, f)(jnp.float32(value)), name)


@pytest.mark.parametrize("name,call", [
    ("step_size", lambda: linearity.local_linearity(loss_of(Y), KEY, X, **dict(
        LLR, step_size=-0.1))),
    ("steps", lambda: linearity.local_linearity(loss_of(Y), KEY, X, **dict(LLR, steps=0))),
    ("restarts", lambda: linearity.local_linearity(loss_of(Y), KEY, X, restarts=0, **LLR)),
    ("step_rule", lambda: linearity.local_linearity(loss_of(Y), KEY, X, step_rule="lbfgs",
                                                    **LLR)),
    ("unroll", lambda: linearity.local_linearity(loss_of(Y), KEY, X, unroll=0, **LLR)),
    ("box", lambda: linearity.local_linearity(loss_of(Y), KEY, X, box=(1.0, 0.0), **LLR)),
    ("steps", lambda: defenses.tv_denoise(X, steps=0)),
    ("size", lambda: defenses.median_filter(X, size=2)),
    ("learning_rate", lambda: defenses.defensegan_reconstruct(
        generator_fn, KEY, X, **dict(DGAN, learning_rate=-1.0))),
    ("restarts", lambda: defenses.defensegan_reconstruct(
        generator_fn, KEY, X, **dict(DGAN, restarts=0))),
    ("learning_rate", lambda: defenses.abs_logits(decoder_fn, KEY, X,
                                                  **dict(ABS, learning_rate=float("nan")))),
    ("config.sigma", lambda: defenses.ride(NET, KEY, X, config=RIDE_CFG._replace(sigma=-1.0))),
    ("config.steps", lambda: defenses.ride(NET, KEY, X, config=RIDE_CFG._replace(steps=0))),
    ("eps", lambda: _llr.llr_objective(eps=-0.1, steps=1, step_size=0.1)),
    ("lambda_", lambda: _llr.llr_objective(eps=0.1, lambda_=float("nan"), steps=1,
                                           step_size=0.1)),
    ("beta", lambda: _llr.trades_objective(beta=-1.0, eps=0.1, steps=1, step_size=0.1)),
    ("steps", lambda: _llr.adv_k_objective(steps=0, eps=0.1, step_size=0.1)),
    ("step_rule", lambda: _llr.adv_k_objective(steps=1, eps=0.1, step_size=0.1,
                                               step_rule="lbfgs")),
])
def test_static_hyperparameters(name, call):
    _raises_naming(call, name)


def test_vmap_over_the_tv_weight_matches_separate_calls():
    weights = jnp.asarray([0.05, 0.2, 0.5])
    for method in ("chambolle", "bregman"):
        f = lambda w, m=method: defenses.tv_denoise(X, weight=w, steps=3, method=m)  # noqa: E731
        swept = jax.jit(jax.vmap(f))(weights)
        np.testing.assert_allclose(np.asarray(swept[1]), np.asarray(f(0.2)), atol=1e-5)
        if method == "bregman":  # a traced negative weight in the sweep: the checked mode
            _raises_naming(lambda: robustjax.checked(jax.vmap(f))(weights.at[1].set(-0.2)),
                           "weight")
    energies = jax.jit(jax.vmap(lambda w: defenses.rof_energy(X, X * 0.5, weight=w)))(weights)
    assert energies.shape == (3, N) and bool(jnp.all(jnp.diff(energies, axis=0) > 0))


def test_vmap_over_eps_lambda_and_mu():
    def penalty(eps, lam, mu):
        return linearity.llr_penalty(loss_of(Y), KEY, X, **dict(LLR, eps=eps), lambda_=lam,
                                     mu=mu)

    out = jax.jit(jax.vmap(penalty))(jnp.asarray([0.0, 0.1, 0.1]), jnp.asarray([1.0, 1.0, 0.0]),
                                     jnp.asarray([0.0, 1.0, 0.0]))
    assert out.shape == (3, N)
    np.testing.assert_allclose(np.asarray(out[0]), 0.0, atol=1e-6)  # ε = 0: γ = 0
    np.testing.assert_allclose(np.asarray(out[2]), 0.0, atol=1e-7)  # λ = μ = 0
    assert bool(jnp.all(out[1] > 0.0))
    # Per-example ε [N] is accepted too (the traced path), and a negative entry is refused.
    eps = jnp.asarray([0.0, 0.05, 0.1])
    assert jax.eval_shape(HYPER["eps"], eps).shape == (N,)
    _raises_naming(lambda: linearity.local_linearity(
        loss_of(Y), KEY, X, **dict(LLR, eps=eps.at[1].set(-0.1))), "eps")


def test_step_rules_are_the_attacks_and_optax_transforms_are_accepted():
    from robustjax import attacks

    assert linearity.STEP_RULES is attacks.STEP_RULES
    for rule in (*attacks.STEP_RULES, None, optax.scale_by_adam()):
        out = jax.eval_shape(lambda x, r=rule: linearity.local_linearity(
            loss_of(Y), KEY, x, step_rule=r, **LLR), X)
        assert out.gamma.shape == (N,)
