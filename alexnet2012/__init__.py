"""alexnet2012: the 2012 two-column AlexNet of Krizhevsky, Sutskever and Hinton, in PyTorch."""

from alexnet2012.interchange import grouped_state_dict, load_grouped_state_dict
from alexnet2012.model import AlexNet

__all__ = ["AlexNet", "grouped_state_dict", "load_grouped_state_dict"]
