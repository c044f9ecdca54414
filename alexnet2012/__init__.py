"""alexnet2012: the 2012 two-column AlexNet of Krizhevsky, Sutskever and Hinton, in PyTorch."""
