"""The shared training loop: seeded batches, every row seen, held-out figures, best epoch kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lookalike.core.errors import InvalidInput
from lookalike.training.loop import Batch, LoopResult, Passes, run_epochs


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(50, 4, generator=gen)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    return x, y


def _train(seed: int, **kw: object) -> tuple[torch.nn.Linear, list[Batch], LoopResult]:
    torch.manual_seed(0)
    x, y = _problem()
    lin = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.05)
    batches: list[Batch] = []

    def loss_of(batch: Batch) -> torch.Tensor:
        batches.append(batch)
        return torch.nn.functional.mse_loss(lin(x[batch.rows]), y[batch.rows])

    schedule = Passes(epochs=3, batch_size=16, seed=seed)
    result = run_epochs(loss_of, schedule, rows=50, modules=[lin], optimizer=opt, **kw)  # type: ignore[arg-type]
    return lin, batches, result


def test_a_seed_fixes_the_batches_and_the_weights() -> None:
    a, batches_a, res_a = _train(1, views=2)
    b, batches_b, res_b = _train(1, views=2)
    c, batches_c, _ = _train(2, views=2)
    assert torch.equal(a.weight, b.weight) and res_a.final_loss == res_b.final_loss
    assert all(torch.equal(p.rows, q.rows) for p, q in zip(batches_a, batches_b, strict=True))
    assert not torch.equal(batches_a[0].rows, batches_c[0].rows)
    assert all(b.views is not None and set(b.views.tolist()) <= {0, 1} for b in batches_a)
    # drop_last (the default, for InfoNCE): 50 rows in 16s are 3 full batches per epoch
    assert [len(b.rows) for b in batches_a] == [16] * 9


def test_without_drop_last_every_row_is_seen_each_epoch() -> None:
    _, batches, result = _train(0, drop_last=False)
    per_epoch = [batches[i : i + 4] for i in range(0, 12, 4)]
    for epoch in per_epoch:
        assert sorted(torch.cat([b.rows for b in epoch]).tolist()) == list(range(50))
    assert all(b.views is None for b in batches)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_keep_best_restores_the_best_epochs_weights() -> None:
    x, y = _problem(1)  # held-out rows
    snapshots: list[np.ndarray] = []
    holder: dict[str, torch.nn.Linear] = {}

    def evaluate() -> dict[str, float]:
        lin = holder["lin"]
        snapshots.append(lin.weight.detach().numpy().copy())
        with torch.no_grad():
            held_loss = float(torch.nn.functional.mse_loss(lin(x), y))
        # Held-out figure (higher is better) that peaks at epoch 2: the real loss, then a
        # penalty after epoch 2 standing in for overfitting.
        return {"score": -held_loss - (100.0 if len(snapshots) > 2 else 0.0)}

    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 1)
    holder["lin"] = lin
    xs, ys = _problem()
    opt = torch.optim.SGD(lin.parameters(), lr=0.05)
    result = run_epochs(
        lambda b: torch.nn.functional.mse_loss(lin(xs[b.rows]), ys[b.rows]),
        Passes(epochs=4, batch_size=16, seed=0),
        rows=50,
        modules=[lin],
        optimizer=opt,
        evaluate=evaluate,
        keep_best="score",
    )
    assert result.best_epoch == 2
    np.testing.assert_array_equal(lin.weight.detach().numpy(), snapshots[1])
    assert not np.array_equal(snapshots[1], snapshots[3])
    assert [h["score"] for h in result.history][1] == max(h["score"] for h in result.history)


def test_keep_best_needs_an_evaluation() -> None:
    with pytest.raises(InvalidInput, match="keep_best needs an evaluate"):
        _train(0, keep_best="score")


def test_the_head_trainer_keeps_its_best_epoch_on_held_out_pairs() -> None:
    from lookalike.core.metrics import rank_metrics
    from lookalike.training.head import TrainConfig, train_head

    rng = np.random.default_rng(3)
    items = rng.normal(size=(120, 24)).astype(np.float32)
    shopper = items + 0.8 * rng.normal(size=items.shape).astype(np.float32)
    fit, held = slice(0, 96), slice(96, 120)

    def monitor(head):  # type: ignore[no-untyped-def]
        q = head.apply(shopper[held], "query")
        g = head.apply(items[held], "catalog")
        recall, mean_ap, _ = rank_metrics(q, g, np.arange(24))
        return {"r1": recall["@1"], "map": mean_ap}

    cfg = TrainConfig(dim=8, epochs=6, batch_size=32)
    result = train_head([shopper[fit]], items[fit], cfg, monitor=monitor, keep_best="map")
    maps = [h["map"] for h in result.history]
    assert len(maps) == 6 and result.best_epoch == 1 + int(np.argmax(maps))
    assert monitor(result.head)["map"] == max(maps)  # the returned head is the best epoch's
    with pytest.raises(InvalidInput, match="'r5' is not a figure"):
        train_head([shopper[fit]], items[fit], cfg, monitor=monitor, keep_best="r5")
