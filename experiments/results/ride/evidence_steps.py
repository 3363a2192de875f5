"""Evidence run for the RIDE reproduction: RIDE's clean-digit accuracy against its step budget.

Why does RIDE-small stay below 90 % under BPDA? Its ceiling is its accuracy on CLEAN digits
(the attack can only lower it). This script retrains the repro's classifier (same config, same
key, so the same weights) and measures, on the first clean test digits, the accuracy of the
plainly trained classifier on RIDE reconstructions for a growing step budget, ending with the
paper's RIDE (K = 2000, T = 5, lr 1e-4, σ = 0.113, p = 0.9) on a few digits.

    python experiments/results/ride/evidence_steps.py --out experiments/results/ride/evidence_steps.json
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))

import _common  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--workdir", default="/tmp/ride_evidence")
    ap.add_argument("--n_small", type=int, default=32)
    ap.add_argument("--n_paper", type=int, default=8)
    args = ap.parse_args()

    import jax
    import numpy as np

    from robustjax import data, defenses, models, training
    from robustjax.evaluation import format_accuracy

    exp = _common.load_experiment("ride")
    cfg = _common.load_config("ride", "repro")
    key = jax.random.key(cfg.seed)
    k_train = jax.random.split(key, 6)[0]
    train = data.load_dataset(cfg.dataset, "train", limit=cfg.num_train)
    test = data.load_dataset(cfg.dataset, "test", limit=max(args.n_small, args.n_paper))
    model = exp._classifier(cfg)
    state, _ = training.fit(model, training.standard_objective(), train, key=k_train,
                            epochs=cfg.epochs, batch_size=cfg.batch_size,
                            optimizer=cfg.optimizer, learning_rate=cfg.learning_rate,
                            schedule=cfg.schedule, weight_decay=cfg.weight_decay,
                            workdir=os.path.join(args.workdir, "classifier"), progress=False)
    logits_fn = models.make_logits_fn(model, {"params": state.params})
    x, y = np.asarray(test.images), np.asarray(test.labels)
    net = models.make_reconstruction_net(models.ride_fcn("mnist"))
    small = dict(learning_rate=3e-3, sigma=0.2, mask_ratio=0.5)
    runs = [
        ("small", defenses.RideConfig(steps=25, num_checkpoints=4, **small), args.n_small),
        ("small", defenses.RideConfig(steps=100, num_checkpoints=4, **small), args.n_small),
        ("paper", defenses.RideConfig(), args.n_paper),
    ]
    out = {"classifier_clean": {}, "runs": []}
    for _, rc, n in runs:
        c = np.argmax(np.asarray(logits_fn(x[:n])), -1) == y[:n]
        out["classifier_clean"][str(n)] = format_accuracy(int(c.sum()), n)
        fn = jax.jit(lambda k, v, rc=rc: defenses.self_supervised_trace(net, k, v,
                                                                        config=rc).estimates)
        t0 = time.perf_counter()
        est = np.asarray(fn(jax.random.key(11), x[:n]))
        dt = time.perf_counter() - t0
        accs = []
        for t in range(rc.num_checkpoints):
            ct = np.argmax(np.asarray(logits_fn(est[:, t])), -1) == y[:n]
            accs.append(format_accuracy(int(ct.sum()), n))
        l1 = [float(255 * np.mean(np.abs(est[:, t] - x[:n]))) for t in range(rc.num_checkpoints)]
        row = {"label": defenses.ride_label(rc), "digits": n,
               "iterations": [rc.steps * (t + 1) for t in range(rc.num_checkpoints)],
               "accuracy_per_checkpoint": accs, "dist2gt_mean_abs_255": l1,
               "classifier_on_same_digits": format_accuracy(int(c.sum()), n),
               "seconds_incl_compile": dt}
        out["runs"].append(row)
        print(json.dumps(row), flush=True)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
