"""Tutorial figures: what a LoRA update is, drawn from the shapes of a trained adapter."""

from __future__ import annotations

import re
from collections.abc import Mapping

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

_LAYER = re.compile(r"layers\.(\d+)\.")


def lora_layout(deltas: Mapping[str, object]) -> dict:
    """Layers, projections per layer and one module's shapes, from `{module: LowRankDelta}`."""
    if not deltas:
        raise ValueError("lora_layout needs at least one module's delta")
    layers = sorted({int(m.group(1)) for name in deltas if (m := _LAYER.search(name))})
    projections = sorted({name.rsplit(".", 1)[-1] for name in deltas})
    name = next(iter(deltas))
    d_out, r = tuple(deltas[name].B.shape)
    d_in = deltas[name].A.shape[1]
    return {
        "modules": len(deltas),
        "layers": len(layers),
        "projections": projections,
        "example": name,
        "d_out": int(d_out),
        "d_in": int(d_in),
        "r": int(r),
    }


def lora_diagram(deltas: Mapping[str, object], scale: float, max_side: float = 3.0):
    """dW = scale * B @ A for one module, boxes drawn to scale, and the modules it sits in."""
    lay = lora_layout(deltas)
    d_out, d_in, r = lay["d_out"], lay["d_in"], lay["r"]
    unit = max_side / max(d_out, d_in)
    thin = max(r * unit, 0.12)  # rank r is tiny beside d: keep it visible, labelled with its true size
    h, w = d_out * unit, d_in * unit
    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    x = 0.0
    boxes = [
        (f"$\\Delta W$\n{d_out} x {d_in}", w, h, "#dddddd"),
        ("=", None, None, None),
        (f"{scale:g} x", None, None, None),
        (f"B\n{d_out} x {r}", thin, h, "#4c72b0"),
        ("", None, None, None),
        (f"A\n{r} x {d_in}", w, thin, "#dd8452"),
    ]
    for label, bw, bh, colour in boxes:
        if bw is None:
            if label:
                ax.text(x + 0.25, h / 2, label, ha="center", va="center", fontsize=12)
            x += 0.5 if label else 0.15
            continue
        y = (h - bh) / 2
        ax.add_patch(Rectangle((x, y), bw, bh, facecolor=colour, edgecolor="black"))
        ax.text(x + bw / 2, -0.15, label, ha="center", va="top", fontsize=9)
        x += bw + 0.15
    projections = ", ".join(lay["projections"])
    ax.set_title(
        f"One LoRA module ({lay['example']}): {lay['modules']} such modules = "
        f"{lay['layers']} layers x {len(lay['projections'])} projections ({projections})",
        fontsize=9,
    )
    trainable = r * (d_in + d_out)
    ax.text(
        0,
        h + 0.2,
        f"trainable per module: r(d_in + d_out) = {trainable:,} numbers, against {d_in * d_out:,} in W",
        fontsize=9,
    )
    ax.set_xlim(-0.1, x + 0.1)
    ax.set_ylim(-0.9, h + 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig
