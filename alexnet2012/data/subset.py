"""Subsets (``--subset CLASSES[:TRAIN_PER_CLASS]``): the classes, and in each the training files,
of smallest ``sha256(f"{seed}:{name}")`` (``f"{seed}:{name}/{path}"``), all their val images, labels
in name order: stable across versions and file systems, and nested (50 classes are part of 100)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from alexnet2012.errors import UsageError

SEED = 2012


def _rank(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Subset:
    classes: int
    train_per_class: int | None = None
    seed: int = SEED

    def __post_init__(self) -> None:
        assert self.classes >= 1 and (self.train_per_class or 1) >= 1, self
        assert self.seed >= 0, self.seed

    @property
    def text(self) -> str:
        per_class = "" if self.train_per_class is None else f":{self.train_per_class}"
        return f"{self.classes}{per_class}"

    @property
    def name(self) -> str:
        """For reports: "100 classes" or "100 classes x 260"."""
        per_class = "" if self.train_per_class is None else f" x {self.train_per_class}"
        return f"{self.classes} classes{per_class}"

    def as_dict(self) -> dict:
        return {"classes": self.classes, "train_per_class": self.train_per_class, "seed": self.seed}

    @classmethod
    def from_dict(cls, record: dict) -> Subset:
        """The subset of :meth:`as_dict`; ValueError when ``record`` is not one."""
        if not isinstance(record, dict) or set(record) != {"classes", "train_per_class", "seed"}:
            raise ValueError(f"not a subset record: {record!r}")
        counts = (record["classes"], record["train_per_class"], record["seed"])
        whole = [isinstance(v, int) and not isinstance(v, bool) for v in counts]
        if not (whole[0] and counts[0] >= 1 and whole[2] and counts[2] >= 0) or not (
            counts[1] is None or (whole[1] and counts[1] >= 1)
        ):
            raise ValueError(f"not a subset record: {record!r}")
        return cls(*counts)

    def choose_classes(self, names: Sequence[str], where: str) -> list[str]:
        """The kept class names of ``names`` (those of ``where``), sorted."""
        if self.classes > len(names):
            raise UsageError(
                f"--subset {self.text} asks for {self.classes} classes, but {where} has "
                f"{len(names)}: choose at most {len(names)}"
            )
        ranked = sorted(names, key=lambda n: (_rank(f"{self.seed}:{n}"), n))
        return sorted(ranked[: self.classes])

    def choose_train(self, files: dict[str, list[str]], where: str) -> dict[str, set[str]]:
        """Per kept class (``files``: its files, paths inside its folder), the kept files."""
        if self.train_per_class is None:
            return {name: set(paths) for name, paths in files.items()}
        fewest = min(files, key=lambda name: (len(files[name]), name))
        if self.train_per_class > len(files[fewest]):
            raise UsageError(
                f"--subset {self.text} asks for {self.train_per_class} training images per "
                f"class, but {where}/{fewest} has {len(files[fewest])}: choose at most "
                f"{len(files[fewest])}"
            )
        kept = {}
        for name, paths in files.items():
            ranked = sorted(paths, key=lambda p: (_rank(f"{self.seed}:{name}/{p}"), p))
            kept[name] = set(ranked[: self.train_per_class])
        return kept
