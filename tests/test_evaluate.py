"""The ten-view test averages softmax outputs (P §4.1), checked against numpy."""

import numpy as np
import torch
from torch import nn

from alexnet2012.evaluate import evaluate, topk_errors, view_probabilities


class LookupModel(nn.Module):
    """Returns fixed logits chosen by the first pixel of each image (an index)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].long()]


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_views_average_probabilities_not_logits():
    # Two views of one image: averaging logits favours class 0, averaging probabilities class 1.
    logits = torch.tensor([[10.0, 0.0, 0.0], [-10.0, 1.0, 0.0]])
    x = torch.zeros(1, 2, 3, 4, 4)
    x[0, 1, 0, 0, 0] = 1  # view 1 -> row 1
    probs = view_probabilities(LookupModel(logits), x)
    expected = np_softmax(logits.numpy()).mean(axis=0)
    assert np.allclose(probs[0].numpy(), expected, atol=1e-6)
    assert probs.argmax().item() == int(np.argmax(expected))
    assert int(np.argmax(logits.numpy().mean(axis=0))) != int(np.argmax(expected))


def test_topk_errors_match_a_direct_count():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(50, 8, generator=g)
    targets = torch.randint(0, 8, (50,), generator=g)
    top1, top5 = topk_errors(probs, targets)
    p, t = probs.numpy(), targets.numpy()
    order = np.argsort(-p, axis=1)
    assert np.array_equal(top1.numpy(), (order[:, 0] != t).astype(np.float32))
    assert np.array_equal(
        top5.numpy(), np.array([t[i] not in order[i, :5] for i in range(50)], dtype=np.float32)
    )


def test_topk_is_capped_at_the_number_of_classes():
    probs = torch.tensor([[0.2, 0.5, 0.3]])
    top1, top5 = topk_errors(probs, torch.tensor([0]))
    assert top1.item() == 1.0 and top5.item() == 0.0


def test_evaluate_over_batches_of_ten_views_matches_numpy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(30, 6, generator=g) * 3
    model = LookupModel(logits)
    index = torch.randperm(30, generator=g).view(3, 10)  # 3 images, 10 views each
    x = torch.zeros(3, 10, 3, 2, 2)
    x[:, :, 0, 0, 0] = index.float()
    y = torch.tensor([0, 4, 5])
    batches = [(x[:2], y[:2]), (x[2:], y[2:])]
    r = evaluate(model, batches)
    probs = np_softmax(logits.numpy())[index.numpy()].mean(axis=1)
    order = np.argsort(-probs, axis=1)
    top1 = np.mean(order[:, 0] != y.numpy())
    top5 = np.mean([y[i].item() not in order[i, :5] for i in range(3)])
    loss = -np.mean(np.log(probs[np.arange(3), y.numpy()]))
    assert r["images"] == 3
    assert abs(r["top1"] - top1) < 1e-6 and abs(r["top5"] - top5) < 1e-6
    assert abs(r["loss"] - loss) < 1e-5


def test_evaluate_restores_training_mode_when_a_batch_fails():
    model = LookupModel(torch.zeros(4, 3)).train()

    def batches():
        yield torch.zeros(1, 3, 2, 2), torch.tensor([0])
        raise OSError("disk gone")

    try:
        evaluate(model, batches())
    except OSError:
        pass
    else:
        raise AssertionError("the loader's error did not reach the caller")
    assert model.training
