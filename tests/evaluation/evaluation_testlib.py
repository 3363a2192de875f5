"""Small models and attacks shared by the evaluation tests (no dependency on robustjax.attacks)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

SHAPE = (4, 4, 1)
D = int(np.prod(SHAPE))


def linear_logits_fn(w, b):
    """``x [N, 4, 4, 1] -> x.reshape(N, D) @ w + b``."""
    def logits_fn(x):
        return jnp.reshape(x, (x.shape[0], -1)) @ w + b
    return logits_fn


def random_data(seed, n, k=3):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, *SHAPE)).astype(np.float32)
    y = rng.integers(0, k, n).astype(np.int32)
    return x, y


def random_linear(seed, k=3):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(D, k)).astype(np.float32)
    b = rng.normal(size=(k,)).astype(np.float32) * 0.1
    return jnp.asarray(w), jnp.asarray(b)


@functools.lru_cache(maxsize=None)
def trained_linear(seed=0, n=96, k=3, steps=200):
    """Data labelled by a linear teacher, and a linear student trained by Adam on it."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, *SHAPE)).astype(np.float32)
    wt = rng.normal(size=(D, k)).astype(np.float32)
    scores = x.reshape(n, -1) @ wt
    y = np.argmax(scores - scores.mean(0), -1).astype(np.int32)
    opt = optax.adam(0.05)
    params = (jnp.zeros((D, k)), jnp.zeros((k,)))

    def loss(p):
        logits = linear_logits_fn(*p)(jnp.asarray(x))
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), None, steps))(params)
    return x, y, params


def _ce(logits_fn, x, y):
    logits = logits_fn(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def fgsm(logits_fn, eps):
    """FGSM bound to a model: ``(key, x, y) -> clip(x + eps sign(grad CE), 0, 1)``."""
    def attack(key, x, y):
        del key
        g = jax.grad(lambda v: _ce(logits_fn, v, y).sum())(x)
        return jnp.clip(x + eps * jnp.sign(g), 0.0, 1.0)
    return attack


def pgd(logits_fn, eps, steps=5, alpha=None, random_start=False):
    """ℓ∞ PGD with sign steps; optional uniform random start (uses the key)."""
    alpha = 2.5 * eps / steps if alpha is None else alpha

    def attack(key, x, y):
        x0 = x
        if random_start:
            x = jnp.clip(x + jax.random.uniform(key, x.shape, minval=-eps, maxval=eps), 0, 1)

        def body(_, xc):
            g = jax.grad(lambda v: _ce(logits_fn, v, y).sum())(xc)
            xc = xc + alpha * jnp.sign(g)
            return jnp.clip(jnp.clip(xc, x0 - eps, x0 + eps), 0.0, 1.0)
        return jax.lax.fori_loop(0, steps, body, x)
    return attack


def noop(key, x, y):
    del key, y
    return x


def constant_attack(x_star):
    """Maps every input to the fixed image ``x_star [H, W, C]``."""
    def attack(key, x, y):
        del key, y
        return jnp.broadcast_to(jnp.asarray(x_star, x.dtype), x.shape)
    return attack


def noise_attack(eps):
    """Uniform noise in the ℓ∞ ball (uses the key)."""
    def attack(key, x, y):
        del y
        return jnp.clip(x + jax.random.uniform(key, x.shape, minval=-eps, maxval=eps), 0, 1)
    return attack


def predict(logits_fn, x):
    return np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1))


# ---------------------------------------------------------------- NumPy references (linear model)
def np_logits(w, b, x):
    return x.reshape(x.shape[0], -1).astype(np.float64) @ np.asarray(w, np.float64) + np.asarray(b)


def np_ce_grad(w, b, x, y):
    """d/dx of sum_n CE(W x_n + b, y_n) = (softmax − onehot) Wᵀ, reshaped like x."""
    z = np_logits(w, b, x)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return (p @ np.asarray(w, np.float64).T).reshape(x.shape)


def np_fgsm(w, b, x, y, eps):
    return np.clip(x + eps * np.sign(np_ce_grad(w, b, x, y)), 0.0, 1.0).astype(np.float32)


def np_pgd(w, b, x, y, eps, steps=5, alpha=None):
    alpha = 2.5 * eps / steps if alpha is None else alpha
    xc = x.astype(np.float64)
    for _ in range(steps):
        xc = xc + alpha * np.sign(np_ce_grad(w, b, xc, y))
        xc = np.clip(np.clip(xc, x - eps, x + eps), 0.0, 1.0)
    return xc.astype(np.float32)
