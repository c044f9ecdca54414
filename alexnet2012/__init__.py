"""Krizhevsky, Sutskever and Hinton's 2012 two-column AlexNet, trained the paper's way."""

from alexnet2012.interchange import grouped_state_dict, load_grouped_state_dict
from alexnet2012.model import AlexNet
from alexnet2012.optim import PaperSGD
from alexnet2012.schedule import PaperSchedule

__all__ = [
    "AlexNet",
    "PaperSGD",
    "PaperSchedule",
    "grouped_state_dict",
    "load_grouped_state_dict",
    "load_trained_model",
]


def __getattr__(name: str):
    # on first use: it needs the data package (torchvision), which the network alone does not
    if name == "load_trained_model":
        from alexnet2012.resume import load_trained_model

        return load_trained_model
    raise AttributeError(f"module 'alexnet2012' has no attribute {name!r}")
