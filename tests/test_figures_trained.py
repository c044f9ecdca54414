"""Figure 4's query images drawn inside their frames (matplotlib's own drawing order once hid
them under their black frame), and the figures of an imported network from its checkpoint and a
data folder."""

import io

import numpy as np
from PIL import Image

from alexnet2012.evidence.neighbours import figure4_neighbours


def test_fig4_queries_are_drawn_inside_their_frames():
    g = np.random.default_rng(0)
    colours = [(200, 40, 40), (40, 200, 40)]
    queries = np.stack([np.full((32, 32, 3), c, np.uint8) for c in colours])
    found = [[g.integers(0, 256, (32, 32, 3), dtype=np.uint8)] * 2 for _ in colours]
    labels = np.array([[0, 1], [1, 0]])
    png = figure4_neighbours(queries, np.array([0, 1]), found, labels, ["a", "b"])
    picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    side, row_height = 128, 128 + 44  # figure4_neighbours' layout: query i at (20, 44 + i*172)
    for i, colour in enumerate(colours):
        top = 44 + i * row_height
        inside = picture[top + 8 : top + side - 8, 28 : 20 + side - 8]
        assert np.abs(inside - np.array(colour)).max() <= 2, (i, inside.mean((0, 1)))
        frame = picture[top - 3, 20 : 20 + side]  # the black frame above the picture
        assert frame.max() <= 60, i
