"""The layer table of a model next to the paper's figures, and its recipe."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

from alexnet2012 import paper
from alexnet2012.layers import conv_output_size_2012
from alexnet2012.model import AlexNet
from alexnet2012.schedule import describe_event, recipe_rates


@dataclass(frozen=True)
class Row:
    name: str
    column_shape: tuple[int, ...]  # one column's output (C, H, W) or (features,)
    columns: int  # how many columns hold this layer (1 for fc8)
    parameters: int
    neurons: int
    sees: str
    paper_neurons: int | None


def layer_table(model: AlexNet) -> list[Row]:
    """Rows for conv1..fc8 of ``model``, in the 2012 geometry."""
    rows, size = [], model.input_size
    pool_kernel, pool_stride = model.pool
    as_paper = model.num_classes == 1000 and model.num_columns == 2
    for index, layer in enumerate(model.layers):
        modules = model._modules_of(layer)
        out = modules[0].weight.shape[0]
        if layer.kind == "conv":
            size = conv_output_size_2012(size, layer.kernel, layer.stride, layer.pad)
            shape: tuple[int, ...] = (out, size, size)
            if layer.pool:  # the next layer sees the pooled maps
                size = (size - pool_kernel) // pool_stride + 1
        else:
            shape = (out,)
        parameters = sum(p.numel() for m in modules for p in m.parameters())
        paper_neurons = paper.PAPER_NEURONS[index] if as_paper else None
        neurons = math.prod(shape) * len(modules)
        rows.append(
            Row(layer.name, shape, len(modules), parameters, neurons, layer.sees, paper_neurons)
        )
    return rows


WIDTH = 100  # the prose under the tables wraps here, so that every line fits a terminal
_SEES = {"image": "the image", "own": "own column", "both": "BOTH columns"}
_SEES_ONE_COLUMN = {"image": "the image", "own": "the layer below", "both": "the layer below"}


def format_table(model: AlexNet) -> str:
    """The table as text, with totals and the note on the paper's conv1 neuron count."""
    rows = layer_table(model)
    lines = [
        f"AlexNet: recipe {model.recipe.name}, input {model.input_size}x{model.input_size}, "
        f"columns={model.num_columns}, lrn={model.lrn}, overlapping_pool={model.overlapping_pool}",
        f"{'layer':<6} {'per column':>14} {'cols':>4} {'parameters':>12} {'neurons':>9} "
        f"{'paper':>9}  input",
    ]
    sees = _SEES if model.num_columns == 2 else _SEES_ONE_COLUMN
    for r in rows:
        shape = "x".join(str(d) for d in r.column_shape)
        paper_n = "" if r.paper_neurons is None else f"{r.paper_neurons:,}"
        mark = " *" if r.paper_neurons is not None and r.paper_neurons != r.neurons else ""
        lines.append(
            f"{r.name:<6} {shape:>14} {r.columns:>4} {r.parameters:>12,} "
            f"{r.neurons:>9,} {paper_n:>9}{mark:2} {sees[r.sees]}"
        )
    total_p, total_n = sum(r.parameters for r in rows), sum(r.neurons for r in rows)
    lines.append(f"total  {'':>14} {'':>4} {total_p:>12,} {total_n:>9,}")
    lines.append(
        textwrap.fill(
            f"The paper quotes about {paper.PAPER_PARAMETERS_QUOTED:,} parameters "
            f"({paper.PARAMETERS:,} exactly for the two-column net with 1000 classes) "
            f"and {paper.PAPER_NEURONS_TOTAL_QUOTED:,} neurons.",
            WIDTH,
        )
    )
    if any(r.paper_neurons is not None and r.paper_neurons != r.neurons for r in rows):
        lines.append(
            textwrap.fill(
                f"* P §3.5 lists {paper.PAPER_NEURONS[0]:,} neurons for conv1, but its own "
                f"55x55x96 maps hold {55 * 55 * 96:,}: a known slip in the paper "
                f"({paper.PAPER_NEURONS[0]:,} / 96 "
                f"= {paper.PAPER_NEURONS[0] / 96:,.0f} is not a square, so no map size gives it; "
                "the other layers match).",
                WIDTH,
                subsequent_indent="  ",
            )
        )
    if model.num_columns == 2:
        lines.append(
            "The columns cross only where the input is 'BOTH columns': conv3, fc6, fc7, fc8."
        )
    return "\n".join(lines + recipe_lines(model))


def _after_text(layer: paper.Layer, norms: bool) -> str:
    """What follows the layer, in :meth:`AlexNet._after`'s order."""
    ops = [
        ("ReLU", layer.relu and not layer.relu_after_pool),
        (_lrn_text(layer), layer.lrn and norms),
        ("map norm", layer.map_norm and norms),
        ("pool", layer.pool),
        ("ReLU", layer.relu and layer.relu_after_pool),
        ("dropout", layer.dropout),
    ]
    return ", ".join(name for name, on in ops if on) or "-"


def _lrn_text(layer: paper.Layer) -> str:
    if layer.lrn_columns == "own" and layer.lrn_k == paper.LRN_K:
        return "LRN"
    return f"LRN (k={layer.lrn_k:g}{', both columns' if layer.lrn_columns == 'both' else ''})"


def recipe_lines(model: AlexNet) -> list[str]:
    """Per layer: what follows it, init, first rates; then the schedule."""
    recipe = model.recipe
    rates = recipe_rates(recipe, 1)[0]
    lines = [
        f"Recipe {recipe.name}:",
        f"{'layer':<6} {'then':<28} {'init std':>8} {'bias':>5} {'lr W':>7} {'lr B':>7}",
    ]
    for layer in model.layers:
        lines.append(
            f"{layer.name:<6} {_after_text(layer, model.lrn):<28} {layer.init_std:>8g} "
            f"{layer.bias_init:>5g} {rates[layer.name + '.weight']:>7g} "
            f"{rates[layer.name + '.bias']:>7g}"
        )
    if not recipe.events:
        lines.append(
            f"Schedule: lr / {paper.LR_FACTOR:g} when the validation error stops improving, "
            f"{paper.LR_DROPS} times, about {recipe.epochs} epochs (P §5)."
        )
        return lines
    noise = "no colour noise" if recipe.lighting == "none" else "colour noise on at the start"
    lines.append(f"Schedule: {recipe.epochs} epochs, {noise};")
    lines += [f"  {describe_event(e)}" for e in recipe.events]
    if recipe.bias_lr == "fixed":
        lines.append("  Biases keep their first rate until their layer's weights freeze.")
    else:
        lines.append(f"  Biases learn at {recipe.bias_lr_scale:g}x their weights' rate.")
    return lines
