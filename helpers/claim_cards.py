"""The claims table of chapter 07 as one card per claim (HTML), readable in the book's narrow
column: five columns of long text there render as a tall strip one word wide."""

from __future__ import annotations

import html

import pandas as pd

VERDICT_COLORS = {"holds": "#1b7a3a", "does not hold": "#a3231f", "inconclusive": "#9a6a00"}
CARD = "border:1px solid #c8ccd4;border-radius:6px;padding:0.5em 0.9em;margin:0.8em 0"
COLUMNS = "display:grid;grid-template-columns:1fr 1fr;gap:1.2em;font-size:88%"


def _items(text: str) -> str:
    """A "; "-joined list of measurements as an HTML list, one measurement a line."""
    parts = [p for p in str(text).split("; ") if p.strip()]
    if not parts:
        return "<p><em>none</em></p>"
    return "<ul style='margin:0.2em 0'>" + "".join(f"<li>{html.escape(p)}</li>" for p in parts) + "</ul>"


def _verdict(text: str) -> str:
    color = next((c for key, c in VERDICT_COLORS.items() if str(text).startswith(key)), "#333")
    return f"<span style='color:{color};font-weight:bold'>{html.escape(str(text))}</span>"


def claim_cards(frame: pd.DataFrame) -> str:
    """One card per row of `helpers.findings.findings_table`: the claim and its verdict on top,
    the criterion beneath, then our measurements and the study's side by side."""
    missing = {"claim", "criterion", "ours", "study", "verdict"} - set(frame.columns)
    if missing:
        raise ValueError(f"claim_cards: the claims table lacks the columns {sorted(missing)}")
    cards = []
    for row in frame.itertuples(index=False):
        cards.append(
            f"<div style='{CARD}'>"
            f"<p style='margin:0.3em 0'><strong>{html.escape(str(row.claim))}</strong><br>"
            f"verdict: {_verdict(row.verdict)}</p>"
            f"<p style='margin:0.3em 0;font-size:92%'><em>criterion:</em> {html.escape(str(row.criterion))}</p>"
            f"<div style='{COLUMNS}'><div><strong>ours</strong>{_items(row.ours)}</div>"
            f"<div><strong>the study</strong>{_items(row.study)}</div></div></div>"
        )
    return "\n".join(cards)
