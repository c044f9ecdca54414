"""Top-1/top-5 error from the centre crop or the paper's ten views (P §4.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alexnet2012.progress import track


def view_probabilities(model: nn.Module, x: Tensor) -> Tensor:
    """Class probabilities of ``(B, [V,] 3, S, S)`` images: the V views' mean softmax (P §4.1)."""
    if x.dim() == 4:
        return model(x).softmax(dim=1)
    b, v = x.shape[:2]
    return model(x.flatten(0, 1)).softmax(dim=1).view(b, v, -1).mean(dim=1)


def topk_errors(probs: Tensor, targets: Tensor, k: int = 5) -> tuple[Tensor, Tensor]:
    """Per-image top-1 and top-k misses (0/1); k is capped at the number of classes."""
    k = min(k, probs.shape[1])
    top = probs.topk(k, dim=1).indices
    hit_k = (top == targets[:, None]).any(dim=1)
    return (top[:, 0] != targets).float(), (~hit_k).float()


def _probabilities(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], progress: bool, desc: str
) -> Iterator[tuple[Tensor, Tensor]]:
    """Each batch's view-averaged probabilities and labels, the model in eval mode meanwhile."""
    was_training = model.training
    model.eval()
    try:
        for x, y in track(batches, desc, enabled=progress):
            yield view_probabilities(model, x), y
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    progress: bool = False,
    desc: str = "eval",
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """Error rates and mean loss in eval mode; ``reduce``: the sums over replicas (each a shard)."""
    sums, count = None, 0
    for probs, y in _probabilities(model, batches, progress, desc):
        y = y.to(probs.device, non_blocking=True)
        top1, top5 = topk_errors(probs, y)
        nll = F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum")
        batch = torch.stack([top1.sum(), top5.sum(), nll])
        sums = batch if sums is None else sums + batch
        count += y.shape[0]
    if reduce is not None:
        if sums is None:
            sums = torch.zeros(3, device=next(model.parameters()).device)
        totals = reduce(torch.cat([sums, sums.new_tensor([count])]))
        sums, count = totals[:3], int(totals[3].item())
    if count == 0:
        raise ValueError("no images to evaluate")
    top1, top5, loss = (sums / count).tolist()
    return {"top1": top1, "top5": top5, "loss": loss, "images": count}


@torch.no_grad()
def predictions(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    progress: bool = False,
    desc: str = "eval",
) -> tuple[Tensor, Tensor]:
    """Every image's view-averaged class probabilities (float64, CPU) and label: for ensembles."""
    probs, labels = [], []
    for p, y in _probabilities(model, batches, progress, desc):
        probs.append(p.double().cpu())
        labels.append(y.cpu())
    if not probs:
        raise ValueError("no images to evaluate")
    return torch.cat(probs), torch.cat(labels)


def errors(probs: Tensor, targets: Tensor) -> dict[str, float]:
    """Top-1 and top-5 error rates (fractions) of ``probs`` (N, classes), and the mean loss."""
    top1, top5 = topk_errors(probs, targets)
    loss = -probs.gather(1, targets[:, None]).clamp_min(1e-12).log().mean().item()
    return {
        "top1": top1.mean().item(), "top5": top5.mean().item(), "loss": loss,
        "images": len(targets),
    }  # fmt: skip
