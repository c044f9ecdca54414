"""P §5's lr schedule (a plateau rule or fixed drop epochs), and a recipe's fixed events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alexnet2012 import paper
from alexnet2012.errors import UsageError


@dataclass(frozen=True)
class Drop:
    """``epoch``: the first at ``new_lr``; ``val_error``: that of epoch ``epoch - 1``."""

    epoch: int
    old_lr: float
    new_lr: float
    val_error: float


@dataclass(frozen=True)
class Decision:
    """After an epoch: train the next one at ``lr``, unless ``stop``; ``lrs``: each param group's
    rate by name (None: ``lr`` x the group's ``lr_scale``); ``colour_noise``: lighting noise on."""

    lr: float
    dropped: bool
    stop: bool
    reason: str
    colour_noise: bool = True
    lrs: Mapping[str, float] | None = None

    def lr_for(self, group: Mapping[str, Any]) -> float:
        """The next epoch's rate of an optimizer param group (see ``optim.layer_groups``)."""
        if self.lrs is not None:
            return self.lrs[group["name"]]
        return self.lr * group.get("lr_scale", 1.0)


class PaperSchedule:
    """:meth:`step` after each epoch (top-1 error as a fraction) decides the next rate. A plateau:
    ``patience`` epochs not beating the rate's best by over ``threshold`` (defaults of ours: the
    paper has none). ``drop_epochs``: the first epochs at each lower rate, instead."""

    colour_noise = True

    def __init__(
        self,
        lr: float = paper.LEARNING_RATE,
        factor: float = paper.LR_FACTOR,
        max_drops: int = paper.LR_DROPS,
        patience: int = 5,
        threshold: float = 0.001,
        max_epochs: int = paper.EPOCHS,
        drop_epochs: Sequence[int] | None = None,
    ) -> None:
        checks = [
            (lr > 0, f"lr must be > 0, got {lr}"),
            (factor > 1, f"factor must be > 1, got {factor}"),
            (max_drops >= 0, f"max_drops must be >= 0, got {max_drops}"),
            (patience >= 1, f"patience must be >= 1, got {patience}"),
            (threshold >= 0, f"threshold must be >= 0, got {threshold}"),
            (max_epochs >= 1, f"max_epochs must be >= 1, got {max_epochs}"),
        ]
        if drop_epochs is not None:
            drop_epochs = tuple(int(e) for e in drop_epochs)
            increasing = all(a < b for a, b in zip(drop_epochs, drop_epochs[1:]))
            in_range = all(2 <= e <= max_epochs for e in drop_epochs)
            rule = "drop_epochs must increase strictly and lie in 2..max_epochs"
            checks.append(
                (increasing and in_range, f"{rule} ({max_epochs}), got {list(drop_epochs)}")
            )
        for ok, message in checks:
            if not ok:
                raise ValueError(f"lr schedule: {message}")
        self.initial_lr, self.factor, self.max_drops = float(lr), float(factor), int(max_drops)
        self.patience, self.threshold = int(patience), float(threshold)
        self.max_epochs, self.drop_epochs = int(max_epochs), drop_epochs
        self.epoch = 0  # last epoch passed to step()
        self.drops: list[Drop] = []
        self._best: float | None = None  # best val error at the current rate
        self._stalled = 0  # epochs since the last improvement at the current rate
        self._plateau_stop = False

    @property
    def lr(self) -> float:
        """The rate for the next epoch."""
        return self.drops[-1].new_lr if self.drops else self.initial_lr

    @property
    def done(self) -> bool:
        """Whether a step said stop."""
        return self._plateau_stop or self.epoch >= self.max_epochs

    def step(self, epoch: int, val_error: float) -> Decision:
        """Record epoch ``epoch``'s validation error; decide the next epoch's rate."""
        _epoch_checks(self, epoch, val_error)
        val_error = float(val_error)  # a numpy scalar in the state would break weights_only
        self.epoch = epoch
        lr = self.lr
        if epoch >= self.max_epochs:
            return Decision(lr, False, True, epoch_limit(self.max_epochs))
        if self.drop_epochs is not None:
            if epoch + 1 in self.drop_epochs:
                return self._drop(val_error, "fixed schedule")
            return Decision(lr, False, False, f"fixed schedule: keep lr {lr:g}")
        if self._best is None or val_error < self._best - self.threshold:
            self._best, self._stalled = val_error, 0
            best = f"val error {100 * val_error:.2f}% is the best at lr {lr:g}"
            return Decision(lr, False, False, f"{best}: keep lr {lr:g}")
        self._stalled += 1
        stalled = (
            f"no improvement > {100 * self.threshold:g} pt on {100 * self._best:.2f}% for "
            f"{self._stalled} epoch{'s' if self._stalled > 1 else ''} at lr {lr:g}"
        )
        if self._stalled < self.patience:
            return Decision(
                lr, False, False, f"{stalled} (patience {self.patience}): keep lr {lr:g}"
            )
        if len(self.drops) >= self.max_drops:
            self._plateau_stop = True
            return Decision(
                lr, False, True, f"{stalled}, the last rate after {len(self.drops)} drops"
            )
        return self._drop(val_error, stalled)

    def _drop(self, val_error: float, why: str) -> Decision:
        old = self.lr
        self.drops.append(Drop(self.epoch + 1, old, old / self.factor, val_error))
        self._best, self._stalled = None, 0
        return Decision(
            self.lr, True, False, f"{why}: lr {old:g} -> {self.lr:g} from epoch {self.epoch + 1}"
        )

    def _rule(self) -> dict[str, Any]:
        """The options that shape decisions (``max_epochs`` may change on resume)."""
        rule: dict[str, Any] = {"lr": self.initial_lr, "factor": self.factor}
        if self.drop_epochs is not None:
            rule["drop_epochs"] = list(self.drop_epochs)
        else:
            rule.update(max_drops=self.max_drops, patience=self.patience, threshold=self.threshold)
        return rule

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values, for ``torch.load(weights_only=True)``."""
        return {
            "rule": self._rule(),
            "epoch": self.epoch,
            "best": self._best,
            "stalled": self._stalled,
            "plateau_stop": self._plateau_stop,
            "drops": [[d.epoch, d.old_lr, d.new_lr, d.val_error] for d in self.drops],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a run with the same rule (else ``UsageError``); ``max_epochs`` may differ."""
        saved, now = state["rule"], self._rule()
        if saved != now:
            diff = ", ".join(
                f"{k} {saved.get(k)} (checkpoint) vs {now.get(k)} (now)"
                for k in sorted(set(saved) | set(now))
                if saved.get(k) != now.get(k)
            )
            raise UsageError(
                f"the checkpoint's lr schedule differs from this run's: {diff}; "
                "resume with the same schedule options"
            )
        self.epoch, self._best = state["epoch"], state["best"]
        self._stalled, self._plateau_stop = state["stalled"], state["plateau_stop"]
        self.drops = [Drop(*d) for d in state["drops"]]


def epoch_limit(epochs: int) -> str:
    """Why training stops at its last epoch, worded to follow "training stops: "."""
    return f"the epoch limit of {epochs} is reached"


def _epoch_checks(schedule: PaperSchedule | RecipeSchedule, epoch: int, val_error: float) -> None:
    if schedule.done:
        raise RuntimeError(f"lr schedule already stopped after epoch {schedule.epoch}")
    if epoch != schedule.epoch + 1:
        raise ValueError(f"lr schedule: expected epoch {schedule.epoch + 1}, got {epoch}")
    value = float(val_error)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"lr schedule: val_error must be a fraction in [0, 1], got {value}")


def recipe_rates(
    recipe: paper.Recipe, epoch: int, lr: float = paper.LEARNING_RATE
) -> tuple[dict[str, float], bool]:
    """Each param group's rate ("conv1.weight", "conv1.bias", ...) and whether colour noise is on
    in epoch ``epoch`` (from 1) of ``recipe``; ``lr``: the weights' first rate, events scaled."""
    weights = {layer.name: paper.LEARNING_RATE for layer in recipe.layers}
    noise = True
    for event in recipe.events:
        if event.epoch <= epoch:
            for name in event.layers or weights:
                weights[name] = weights[name] if event.lr is None else event.lr
            noise = noise if event.colour_noise is None else event.colour_noise
    scale, rates = lr / paper.LEARNING_RATE, {}
    for name, w in weights.items():
        b = w if recipe.bias_lr == "follows" or w == 0 else paper.LEARNING_RATE
        rates[f"{name}.weight"] = w * scale
        rates[f"{name}.bias"] = b * recipe.bias_lr_scale * scale
    return rates, noise


def describe_event(event: paper.Event) -> str:
    what = "weights" if not event.layers else f"{', '.join(event.layers)} weights"
    parts = [] if event.lr is None else [f"{what} lr {event.lr:g}"]
    if event.colour_noise is not None:
        parts.append(f"colour noise {'on' if event.colour_noise else 'off'}")
    return f"epoch {event.epoch}: {', '.join(parts)}"


class RecipeSchedule:
    """A recipe's events by epoch with :class:`PaperSchedule`'s interface, scaled by ``lr``."""

    def __init__(
        self, recipe: paper.Recipe, lr: float = paper.LEARNING_RATE, max_epochs: int | None = None
    ) -> None:
        assert recipe.events and lr > 0, (recipe.name, lr)
        self.recipe, self.initial_lr = recipe, float(lr)
        self.max_epochs = recipe.epochs if max_epochs is None else int(max_epochs)
        self.epoch = 0

    @property
    def lrs(self) -> dict[str, float]:
        return recipe_rates(self.recipe, self.epoch + 1, self.initial_lr)[0]

    @property
    def lr(self) -> float:
        """The highest weights' rate for the next epoch (the one most layers follow)."""
        return max(v for k, v in self.lrs.items() if k.endswith(".weight"))

    @property
    def colour_noise(self) -> bool:
        return recipe_rates(self.recipe, self.epoch + 1, self.initial_lr)[1]

    @property
    def done(self) -> bool:
        return self.epoch >= self.max_epochs

    def step(self, epoch: int, val_error: float) -> Decision:
        """After epoch ``epoch``: the next epoch's rates (``val_error`` is only checked)."""
        _epoch_checks(self, epoch, val_error)
        old = self.lr
        self.epoch = epoch
        if epoch >= self.max_epochs:  # the rates as if training went on
            reason = epoch_limit(self.max_epochs)
            return Decision(old, False, True, reason, self.colour_noise, self.lrs)
        events = [describe_event(e) for e in self.recipe.events if e.epoch == epoch + 1]
        reason = f"{self.recipe.name}: " + ("; ".join(events) or f"keep lr {old:g}")
        return Decision(self.lr, self.lr < old, False, reason, self.colour_noise, self.lrs)

    def _rule(self) -> dict[str, Any]:
        r = self.recipe
        return {"recipe": r.name, "lr": self.initial_lr, "bias_lr": r.bias_lr}

    def state_dict(self) -> dict[str, Any]:
        return {"rule": self._rule(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a run of the same recipe, rate and bias reading (else ``UsageError``)."""
        if state["rule"] != self._rule():
            raise UsageError(
                f"the checkpoint's lr schedule {state['rule']} differs from this run's "
                f"{self._rule()}; resume with the same recipe and lr"
            )
        self.epoch = int(state["epoch"])
