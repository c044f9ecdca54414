"""Run by test_step with TRITON_INTERPRET=1: a compiled TrainStep over a small net with both
fused ops (Triton's interpreter on the CPU) runs a second step without recompiling."""

import torch
from torch import nn

from alexnet2012 import layers
from alexnet2012.optim import PaperSGD
from alexnet2012.step import TrainStep


class Tiny(nn.Module):
    """conv -> the fused ReLU-LRN-pool -> fc -> the fused ReLU-dropout -> fc."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc1, self.fc2 = (
            nn.Conv2d(3, 8, 3),
            nn.Linear(8 * 3 * 3, 16),
            nn.Linear(16, 4),
        )

    def forward(self, x):
        x = layers.relu_lrn_pool(self.conv(x), 2).flatten(1)
        return self.fc2(layers.relu_dropout(self.fc1(x)))


torch.manual_seed(0)
model = Tiny()
step = TrainStep(model, PaperSGD(model.parameters()), compile=True, compile_backend="aot_eager")
x, y = torch.randn(2, 3, 9, 9), torch.tensor([0, 3])
step(x, y)
with torch.compiler.set_stance("fail_on_recompile"):
    step(x, y)
print("no recompile")
