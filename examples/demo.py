"""Train a small LSTM on a synthetic memory task on CPU (``make demo``).

Each sequence shows one of six symbols at a random step among its first eight, then noise, and is
right-padded to a fixed length (a mask marks the real steps). The model must report the symbol at
the last real step: chance is 1 in 6.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import jrnn

CLASSES, NOISE, STEPS, UNITS = 6, 4, 40, 32
BATCH, TRAIN, TEST, EPOCHS = 64, 4096, 1024, 10


def make_data(rng: np.random.Generator, n: int):
    x = np.zeros((n, STEPS, CLASSES + NOISE), np.float32)
    x[:, :, CLASSES:] = 0.5 * rng.normal(size=(n, STEPS, NOISE))
    labels = rng.integers(0, CLASSES, n)
    where = rng.integers(0, 8, n)
    x[np.arange(n), where, labels] = 1.0
    lengths = rng.integers(STEPS // 2, STEPS + 1, n)
    mask = np.arange(STEPS)[None, :] < lengths[:, None]
    x[~mask] = 0.0
    return jnp.asarray(x), jnp.asarray(mask), jnp.asarray(labels)


cell = jrnn.cells.lstm(UNITS)


def init(key):
    k_cell, k_head = jax.random.split(key)
    head = jrnn.initializers.glorot_uniform(k_head, (UNITS, CLASSES))
    return {"lstm": cell.init_params(k_cell, CLASSES + NOISE), "head": head, "head_bias": jnp.zeros(CLASSES)}


def logits_fn(params, x, mask):
    ys, _ = jrnn.run(cell.step, params["lstm"], cell.init_state((x.shape[0],)), x, mask=mask)
    return ys[:, -1] @ params["head"] + params["head_bias"][None, :]  # masked steps repeat the last output


def loss_fn(params, x, mask, labels):
    logits = logits_fn(params, x, mask)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits


optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(5e-3))


@jax.jit
def train_step(params, opt_state, x, mask, labels):
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, mask, labels)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return optax.apply_updates(params, updates), opt_state, loss, accuracy


@jax.jit
def evaluate(params, x, mask, labels):
    return jnp.mean(jnp.argmax(logits_fn(params, x, mask), -1) == labels)


def main():
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    x, mask, labels = make_data(rng, TRAIN)
    x_test, mask_test, labels_test = make_data(rng, TEST)
    params = init(jax.random.key(0))
    opt_state = optimizer.init(params)
    print(f"jrnn {jrnn.__version__} LSTM({UNITS}) on a {CLASSES}-way memory task, chance = {1 / CLASSES:.0%}")
    for epoch in range(1, EPOCHS + 1):
        order = rng.permutation(TRAIN)
        losses, accs = [], []
        bar = tqdm(range(TRAIN // BATCH), desc=f"epoch {epoch}/{EPOCHS}", leave=False)
        for b in bar:
            idx = order[b * BATCH : (b + 1) * BATCH]
            params, opt_state, loss, acc = train_step(params, opt_state, x[idx], mask[idx], labels[idx])
            losses.append(float(loss))
            accs.append(float(acc))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
        test_acc = float(evaluate(params, x_test, mask_test, labels_test))
        print(f"epoch {epoch}: loss {np.mean(losses):.4f}  train acc {np.mean(accs):.3f}  test acc {test_acc:.3f}")
    print(f"final test accuracy {test_acc:.3f} (chance {1 / CLASSES:.2f}) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
