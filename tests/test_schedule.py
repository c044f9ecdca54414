"""PaperSchedule on scripted validation curves; expected drop points are written out by hand."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from alexnet2012 import paper
from alexnet2012.errors import UsageError
from alexnet2012.schedule import Drop, PaperSchedule


def run(schedule: PaperSchedule, errors: list[float], first_epoch: int = 1):
    """Feed one validation error per epoch until the schedule stops or the curve ends.

    Returns the lr each epoch was trained at and the decisions."""
    trained_at, decisions = [], []
    for epoch, err in enumerate(errors, start=first_epoch):
        trained_at.append(schedule.lr)
        decisions.append(schedule.step(epoch, err))
        assert decisions[-1].lr == schedule.lr
        if decisions[-1].stop:
            break
    return trained_at, decisions


def test_paper_defaults():
    s = PaperSchedule()
    assert (s.lr, s.factor, s.max_drops, s.max_epochs) == (0.01, 10.0, 3, 90)
    assert (s.patience, s.threshold, s.drop_epochs) == (5, 0.001, None)
    assert paper.DROP_EPOCHS_2012 == (25, 51, 79)


def test_drop_after_patience_epochs_without_improvement():
    # Improves by 1 pt an epoch up to epoch 19 (best 0.42), then flat (within 0.1 pt) at 0.42.
    curve = [0.60 - 0.01 * e for e in range(1, 20)] + [0.4205, 0.4201, 0.421, 0.42, 0.4209, 0.3]
    s = PaperSchedule()
    trained_at, decisions = run(s, curve)
    assert [d.dropped for d in decisions].index(True) == 23  # the decision after epoch 24
    assert trained_at[:24] == [0.01] * 24 and trained_at[24] == pytest.approx(0.001)
    assert s.drops == [Drop(25, 0.01, pytest.approx(0.001), 0.4209)]
    assert "no improvement > 0.1 pt" in decisions[23].reason
    assert "5 epochs at lr 0.01" in decisions[23].reason
    assert "0.01 -> 0.001 from epoch 25" in decisions[23].reason
    assert not any(d.stop for d in decisions)


def test_threshold_is_strict_and_compared_with_the_best():
    t = 1 / 64  # dyadic values keep the comparisons exact
    s = PaperSchedule(threshold=t, patience=2)
    steps = [
        (0.5, False),  # first epoch: sets the best
        (0.5 - t, False),  # gain of exactly the threshold: not an improvement (1 stalled)
        (0.5 - 2 * t, False),  # 2t below the best 0.5: improvement, best = 0.5 - 2t
        (0.5 - 2.5 * t, False),  # gain of t/2 on the best: stalled 1
        (0.5 - 3 * t, True),  # gain of exactly t on the best (not on the last epoch): stalled 2
    ]
    for epoch, (err, dropped) in enumerate(steps, start=1):
        assert s.step(epoch, err).dropped is dropped, f"epoch {epoch}"
    assert s.drops[0].epoch == 6


def test_slow_decline_adds_up_to_an_improvement():
    t = 1 / 64
    s = PaperSchedule(threshold=t, patience=3)
    # Each epoch gains t/2: every second epoch is a total gain of t/2 + t/2 = t (not > t),
    # so only every third epoch (1.5 t) improves and the rule never drops.
    decisions = [s.step(e, 0.75 - (e - 1) * t / 2) for e in range(1, 31)]
    assert not any(d.dropped or d.stop for d in decisions)


def test_three_drops_then_stop_after_plateau_at_last_rate():
    s = PaperSchedule(patience=2)
    trained_at, decisions = run(s, [0.5] * 20)
    # Each rate: one epoch sets the best, two stall -> drop; the fourth rate stalls -> stop.
    assert [d.epoch for d in s.drops] == [4, 7, 10]
    assert trained_at == pytest.approx([0.01] * 3 + [0.001] * 3 + [1e-4] * 3 + [1e-5] * 3)
    assert [d.dropped for d in decisions] == [False, False, True] * 3 + [False] * 3
    assert [d.stop for d in decisions] == [False] * 11 + [True]
    assert decisions[-1].reason == (
        "no improvement > 0.1 pt on 50.00% for 2 epochs at lr 1e-05, the last rate after 3 drops"
    )
    assert s.done
    with pytest.raises(RuntimeError):
        s.step(13, 0.5)


def test_max_drops_zero_stops_at_the_first_plateau():
    s = PaperSchedule(patience=1, max_drops=0)
    _, decisions = run(s, [0.5, 0.5, 0.5])
    assert len(decisions) == 2 and decisions[-1].stop and s.drops == []


def test_epoch_limit_stops_and_beats_a_drop_in_the_same_epoch():
    s = PaperSchedule(max_epochs=10)
    trained_at, decisions = run(s, [0.9 - 0.01 * e for e in range(1, 20)])
    assert len(decisions) == 10 and decisions[-1].stop and not decisions[-1].dropped
    assert decisions[-1].reason == "the epoch limit of 10 is reached"
    assert trained_at == [0.01] * 10
    # patience 3 would drop after epoch 4; the limit is epoch 4, so it stops instead.
    s = PaperSchedule(max_epochs=4, patience=3)
    _, decisions = run(s, [0.5] * 4)
    assert decisions[-1].stop and not decisions[-1].dropped and s.drops == []


def test_fixed_drop_epochs_replay_the_2012_run():
    s = PaperSchedule(drop_epochs=paper.DROP_EPOCHS_2012)
    # A flat curve would trigger the plateau rule many times; in fixed mode it is ignored.
    trained_at, decisions = run(s, [0.5] * 100)
    want = [0.01] * 24 + [0.001] * 26 + [1e-4] * 28 + [1e-5] * 12  # epochs 1-24, 25-50, ...
    assert len(trained_at) == 90 and trained_at == pytest.approx(want)
    assert [d.epoch for d in s.drops] == [25, 51, 79]
    assert [i + 1 for i, d in enumerate(decisions) if d.dropped] == [24, 50, 78]
    assert [d.stop for d in decisions] == [False] * 89 + [True]


def test_state_round_trip_mid_run_gives_the_same_decisions():
    rng = random.Random(0)
    curve = [0.3 + 0.5 * 0.8**e + rng.uniform(-0.004, 0.004) for e in range(60)]
    whole = PaperSchedule(patience=3, threshold=0.002, max_epochs=60)
    _, want = run(whole, curve)
    assert len(whole.drops) >= 2  # the curve exercises drops on both sides of the split

    first = PaperSchedule(patience=3, threshold=0.002, max_epochs=60)
    split = whole.drops[1].epoch - 2  # two stalled epochs before the second drop
    _, before = run(first, curve[:split])
    assert first.state_dict()["stalled"] == 2 and len(first.drops) == 1
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = PaperSchedule(patience=3, threshold=0.002, max_epochs=60)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.lr == first.lr and resumed.epoch == split
    _, after = run(resumed, curve[split:], first_epoch=split + 1)
    assert before + after == want
    assert resumed.drops == whole.drops


def test_load_rejects_another_rule_but_accepts_a_longer_limit():
    s = PaperSchedule(patience=2, max_epochs=3)
    run(s, [0.5, 0.5, 0.5])
    assert s.done and s.drops == []  # stopped by the limit before the drop could come
    with pytest.raises(UsageError, match="patience 2 \\(checkpoint\\) vs 5 \\(now\\)"):
        PaperSchedule(max_epochs=3).load_state_dict(s.state_dict())
    fixed = PaperSchedule(patience=2, drop_epochs=paper.DROP_EPOCHS_2012)
    with pytest.raises(UsageError, match="drop_epochs"):
        fixed.load_state_dict(s.state_dict())
    longer = PaperSchedule(patience=2, max_epochs=6)
    longer.load_state_dict(s.state_dict())
    assert not longer.done
    # Epoch 4 continues the stall counted before the save (epochs 2 and 3): patience 2 reached.
    assert longer.step(4, 0.5).dropped and longer.drops[0].epoch == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.0},
        {"factor": 1.0},
        {"max_drops": -1},
        {"patience": 0},
        {"threshold": -0.1},
        {"max_epochs": 0},
        {"drop_epochs": (51, 25)},
        {"drop_epochs": (25, 25)},
        {"drop_epochs": (1, 25)},
        {"drop_epochs": (25, 91)},
    ],
)
def test_invalid_options_are_value_errors(kwargs):
    with pytest.raises(ValueError, match="lr schedule"):
        PaperSchedule(**kwargs)


def test_step_checks_epoch_order_and_error_units():
    s = PaperSchedule()
    with pytest.raises(ValueError, match="expected epoch 1"):
        s.step(0, 0.5)
    with pytest.raises(ValueError, match="fraction"):
        s.step(1, 40.7)  # a percentage instead of a fraction
    with pytest.raises(ValueError, match="fraction"):
        s.step(1, float("nan"))
    s.step(1, 0.5)
    with pytest.raises(ValueError, match="expected epoch 2"):
        s.step(1, 0.5)


def test_numpy_errors_leave_a_weights_only_loadable_state():
    s = PaperSchedule(patience=1)
    s.step(1, np.float64(0.5))
    s.step(2, np.float32(0.5))  # plateau: drop with this error recorded
    buffer = io.BytesIO()
    torch.save(s.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["drops"] == [[3, 0.01, pytest.approx(0.001), 0.5]]
