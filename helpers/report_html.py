"""The geometry report as one self-contained HTML page (`python -m helpers.geometry ... --html`).

Figures come from helpers.plots_analysis and are embedded as base64 PNG, styles are
inline, and nothing is fetched from anywhere: the file can be mailed or archived alone.
The page is written atomically, so an interrupted run never leaves half a report.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .cache import atomic_write_text
from .geometry_table import report_table

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #555; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 0.85em; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; } dt { font-weight: bold; }
"""


def figure_png(fig: Any) -> str:
    """A matplotlib figure as a base64 PNG string (the figure is closed afterwards)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def report_figures(report: Mapping[str, Any], ref: str | None = None) -> list[tuple[str, str, Any]]:
    """(title, caption, figure) of each figure of the page; `ref` (default: the first adapter)
    is the update the angles and orthogonal fractions are measured against."""
    from . import plots_analysis as figs

    ref = ref or report["methods"][0]
    k, top_k = report["k"], report.get("top_k", report["k"])
    out = [
        (
            "Cosine of the updates",
            "Global cosine of the flattened updates of every pair.",
            figs.cosine_heatmap(report),
        )
    ]
    if len(report["methods"]) > 1:
        out += [
            (
                f"Cosine to {ref}",
                f"Global cosine of each update to {ref}'s.",
                figs.cosines_to(report, ref),
            ),
            (
                "Principal angles",
                f"Smallest and largest principal angle between the top-{k} left singular subspaces of each "
                f"update and {ref}'s, one point per module (k capped at both updates' ranks).",
                figs.angle_distributions(report, ref),
            ),
            (
                "Orthogonal fraction by layer",
                f"||dW - P dW|| / ||dW|| of each update against {ref}'s, per layer, in three readings of P: "
                f"{ref}'s column space (span), its top-{top_k} left singular vectors (top_k), and its "
                "flattened update (direction, sqrt(1 - cos^2)).",
                figs.orthogonal_by_layer(report, ref),
            ),
        ]
    out += [
        ("Update norm by layer", "Frobenius norm of each update, per layer.", figs.norm_by_layer(report)),
        (
            "Effective rank",
            "exp(entropy of the normalised singular values) of each module's update; zero updates left out.",
            figs.effective_ranks(report),
        ),
    ]
    return out


def build_html(report: Mapping[str, Any], title: str | None = None, ref: str | None = None) -> str:
    """The whole page as one string: header facts, the text table, then every figure inline."""
    names = report["methods"]
    title = title or "Weight-space geometry of " + ", ".join(names)
    facts = {
        "adapters": ", ".join(
            f"{n} ({p})" for n, p in (report.get("adapters") or {n: "" for n in names}).items()
        ),
        "base model": report.get("base_model") or "not recorded",
        "modules": str(len(report["modules"])),
        "layers": str(len([x for x in report["layers"] if x >= 0])),
        "reference for angles and fractions": ref or names[0],
    }
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<dl>"
        + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts.items())
        + "</dl>",
        "<h2>Table</h2>",
        f'<pre id="table">{html.escape(report_table(dict(report)))}</pre>',
    ]
    for heading, caption, fig in report_figures(report, ref):
        parts += [
            f"<h2>{html.escape(heading)}</h2><figure>",
            f'<img alt="{html.escape(heading)}" src="data:image/png;base64,{figure_png(fig)}">',
            f"<figcaption>{html.escape(caption)}</figcaption></figure>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report_html(
    path: str | os.PathLike, report: Mapping[str, Any], title: str | None = None, ref: str | None = None
) -> Path:
    """Build the page, then write it through a temporary sibling and a rename."""
    return atomic_write_text(path, build_html(report, title, ref))
