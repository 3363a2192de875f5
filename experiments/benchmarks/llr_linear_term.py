r"""Why is a locally linear model not robust? First-order loss increase on the test digits.

Restores the models of a finished ``experiments/llr.py`` run (``--workdir``; ``training.fit``
resumes from the final checkpoint and trains no further) and measures on the first ``--num``
test digits, per model: the clean loss ℓ(x), the first-order prediction of the worst ℓ∞ loss
increase ε‖∇ₓℓ(x)‖₁ (exact for a linear loss; Prop. 4.1 bounds the true increase by it plus
γ), the loss at the FGSM point ℓ(x + ε·sign ∇ℓ), and the fraction of digits whose first-order
loss ℓ(x) + ε‖∇ℓ‖₁ exceeds ln 2 (true-class probability below 1/2). One JSON object.

    python experiments/benchmarks/llr_linear_term.py --workdir /tmp/robustjax_llr
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import _common  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--variant", default="obfuscation")
    ap.add_argument("--num", type=int, default=1000)
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from robustjax import attacks, data, losses, models, training

    llr = _common.load_experiment("llr")
    config = _common.load_config("llr", args.variant)
    model = llr._model(config)
    train = data.subset(data.load_dataset(config.dataset, "train"), slice(0, config.num_train))
    test = data.subset(data.load_dataset(config.dataset, "test"), slice(0, args.num))
    x, y = jnp.asarray(test.images), jnp.asarray(test.labels)
    spe = len(train.labels) // config.batch_size
    key = jax.random.split(jax.random.key(config.seed), 4)[0]
    out = {}
    for i, (name, (method, steps, step_size)) in enumerate(llr._runs(config).items()):
        tx = training.make_optimizer(
            config.optimizer, learning_rate=config.learning_rate, schedule=config.schedule,
            total_steps=spe * config.num_epochs, decay_boundaries=tuple(config.decay_boundaries),
            momentum=config.momentum, weight_decay=config.weight_decay)
        state, hist = training.fit(
            model, llr._objective(config, method, steps, spe, step_size), train,
            key=jax.random.fold_in(key, i), epochs=config.num_epochs,
            batch_size=config.batch_size, tx=tx, progress=False,
            log_every=config.get("log_every", 50), workdir=os.path.join(args.workdir, name))
        f = models.make_logits_fn(model, {"params": state.params})

        @jax.jit
        def measure(x, y, f=f):
            def loss(z):
                return losses.cross_entropy(f(z), y)
            l0, vjp = jax.vjp(loss, x)
            (g,) = vjp(jnp.ones_like(l0))
            first = config.eps * jnp.sum(jnp.abs(g).reshape(x.shape[0], -1), -1)
            x_f = attacks.fgsm(f, jax.random.key(0), x, y, eps=config.eps)
            return l0, first, loss(x_f)

        l0, first, lf = (np.asarray(v) for v in measure(x, y))
        out[name] = {
            "resumed_from_step": hist.get("resumed_from"),
            "clean_loss_mean": float(l0.mean()),
            "eps_grad_l1_mean": float(first.mean()),
            "eps_grad_l1_median": float(np.median(first)),
            "fgsm_loss_mean": float(lf.mean()),
            "fgsm_minus_first_order_mean": float((lf - l0 - first).mean()),
            "first_order_loss_above_ln2": float(np.mean(l0 + first > math.log(2.0))),
        }
        print(json.dumps({name: out[name]}), flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
