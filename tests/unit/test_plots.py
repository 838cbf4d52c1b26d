"""Properties of the figures a reader relies on at a glance (issue 14.5): controls told apart,
legends off the data, integer layer ticks, a fixed CKA floor, path panels on one axis with the
barrier printed, McNemar survivors marked, a base line beside accuracy, and readable claims."""

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from helpers import plots, plots_analysis, plots_replicates  # noqa: E402
from helpers.claim_cards import claim_cards  # noqa: E402
from helpers.connectivity import barrier  # noqa: E402
from helpers.spread import summarise_tree  # noqa: E402

RUNS = [*plots.METHOD_ORDER, *plots.CONTROL_RUNS]


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _series(replicates: list[list[float]]) -> dict:
    return summarise_tree(replicates)


def test_every_run_has_its_own_colour_and_line_style():
    looks = {run: (to_rgb(plots.color_of(run)), str(plots.line_style(run))) for run in RUNS}
    for a, b in itertools.combinations(RUNS, 2):
        assert looks[a] != looks[b], f"{a} and {b} are drawn alike"
    for control, method in (("sft_order", "sft"), ("sft_seed", "sft"), ("dpo_samelr", "dpo")):
        assert looks[control][0] != looks[method][0], f"{control} shares {method}'s colour"
    assert looks["sft_order"][1] != looks["sft_seed"][1]
    # a series named after a pair with a reference is drawn as its run
    assert plots.line_style("base-sft_seed") == plots.line_style("sft_seed")
    assert plots.color_of("sft-sft_order") == plots.color_of("sft_order")


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.axison]


def test_summary_lines_legend_sits_off_every_panel():
    rng = np.random.default_rng(0)
    panels = {
        title: {run: _series([list(rng.uniform(0, 1, 4)) for _ in range(2)]) for run in RUNS}
        for title in ("span", "top_k", "direction")
    }
    fig = plots_replicates.summary_lines(panels, list(range(4)), "layer", "orthogonal fraction")
    fig.canvas.draw()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert len(legends) == 1
    box = legends[0].get_window_extent()
    for ax in _visible_axes(fig):
        assert not box.overlaps(ax.get_window_extent()), "the legend covers a panel's data"


@pytest.mark.parametrize("n_layers", [2, 5, 28])
def test_layer_ticks_are_whole_layers(n_layers):
    layers = list(range(n_layers))
    panels = {"norm": {run: _series([[1.0 + i for i in layers]] * 2) for run in ("sft", "dpo")}}
    per_series = {run: layers for run in ("sft", "dpo")}
    for fig in (
        plots_replicates.summary_lines(panels, layers, "layer", "norm"),
        plots_replicates.summary_lines(panels, per_series, "layer", "norm"),
        plots_replicates.cka_lines(panels | {"norm": {"base-sft": _series([[0.99] * n_layers] * 2)}}, layers),
    ):
        ax = _visible_axes(fig)[0]
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_cka_axis_has_a_fixed_floor_and_says_what_layer_zero_is():
    layers = [0, 1, 2]
    near_one = {"cka": {"base-sft": _series([[0.999, 0.997, 0.995], [0.998, 0.996, 0.994]])}}
    ax = _visible_axes(plots_replicates.cka_lines(near_one, layers))[0]
    low, high = ax.get_ylim()
    assert low <= plots_replicates.CKA_FLOOR and 1.0 <= high <= 1.01, (low, high)
    assert "first block" in fig_label(ax), "layer 0 is the first block's output (embeddings are dropped)"
    far = {"cka": {"base-dpo": _series([[0.9, 0.7, 0.62], [0.9, 0.75, 0.65]])}}
    low, _ = _visible_axes(plots_replicates.cka_lines(far, layers))[0].get_ylim()
    assert low <= 0.62


def fig_label(ax) -> str:
    fig = ax.figure
    return (fig.supxlabel_text if hasattr(fig, "supxlabel_text") else fig._supxlabel).get_text()


def _paths() -> dict:
    ts = [0.0, 0.25, 0.5, 0.75, 1.0]
    small = [[1.0, 1.03, 1.04, 1.02, 1.0], [1.0, 1.02, 1.03, 1.02, 1.0]]  # a 0.04-nat bump
    large = [[3.0, 3.2, 3.5, 3.3, 3.2], [3.0, 3.25, 3.45, 3.3, 3.2]]  # a 0.31-nat bump, tilted chord
    return (
        {
            "sft-rft": {"ts": _series([ts, ts]), "answer_ce": _series(small)},
            "sft-dpo": {"ts": _series([ts, ts]), "answer_ce": _series(large)},
        },
        ts,
        {"sft-rft": small, "sft-dpo": large},
    )


def test_path_panels_share_one_axis_and_print_each_barrier():
    paths, ts, raw = _paths()
    fig = plots_replicates.path_curves(paths, "answer_ce")
    axes = _visible_axes(fig)
    assert axes[0].get_shared_y_axes().joined(axes[0], axes[1]), "each panel has its own y axis"
    for ax, pair in zip(axes, paths, strict=True):
        curve = ax.get_lines()[0].get_ydata()
        expected = [barrier(ts, r) for r in raw[pair]]
        assert max(curve) == pytest.approx(np.mean(expected), abs=1e-9), "not the rise above the chord"
        assert f"{np.mean(expected):.2g}" in ax.get_title(), ax.get_title()


def _evaluation(accuracy: dict[str, float]) -> dict:
    names = list(accuracy)
    return {
        "accuracy": accuracy,
        "ci": {n: [a - 0.03, a + 0.03] for n, a in accuracy.items()},
        "mcnemar_p_holm": {
            f"{a}-{b}": (0.001 if "dpo" in (a, b) else 0.8) for a, b in itertools.combinations(names, 2)
        },
    }


def test_mcnemar_survivors_are_their_own_colour():
    ev = _evaluation({"base": 0.3, "sft": 0.31, "dpo": 0.1, "rft": 0.32})
    fig = plots_analysis.mcnemar_heatmap(ev)
    ax = fig.axes[0]
    cells = np.ma.filled(ax.images[0].get_array().astype(float), np.nan)
    names = list(ev["accuracy"])
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j:
                assert cells[i, j] == (1.0 if "dpo" in (a, b) else 0.0), (a, b, cells[i, j])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("p < 0.05" in t for t in labels), labels


def test_accuracy_against_geometry_has_a_base_line_and_no_piled_labels():
    runs = {n: 0.30 + 0.002 * k for k, n in enumerate(RUNS)}
    ev = _evaluation({"base": 0.28, **runs})
    norm = {n: 0.05 + 0.0001 * k for k, n in enumerate(RUNS)}  # crowded, as the real norms are
    fig = plots_analysis.accuracy_against_geometry(ev, {"norm": norm, "angle": norm}, log=["norm"])
    fig.canvas.draw()
    for ax in _visible_axes(fig):
        flat = [ln for ln in ax.get_lines() if len(set(ln.get_ydata())) == 1 and len(ln.get_ydata()) == 2]
        assert any(ln.get_ydata()[0] == pytest.approx(0.28) for ln in flat), "no base-accuracy line"
        boxes = [t.get_window_extent() for t in ax.texts if t.get_text()]
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b), "run labels pile up on each other"
    legend = [ax.get_legend() for ax in fig.axes if ax.get_legend()][0]
    assert {t.get_text() for t in legend.get_texts()} >= set(RUNS) | {"base model"}


def test_rollout_panel_title_names_what_it_plots():
    summary = {
        "correct_per_group": {"0": 1, "2": 3, "4": 2},
        "reward_mean": 0.6,
        "all_wrong_share": 1 / 6,
        "mixed_share": 0.5,
        "all_correct_share": 1 / 3,
        "dpo_pairs": 547,
    }
    fig = plots.rollout_rewards(summary, 4)
    assert "DPO" not in fig.axes[1].get_title(), "the panel plots group shares, not DPO pairs"


def test_claim_cards_list_every_measurement_and_escape_text():
    frame = pd.DataFrame(
        [
            {
                "claim": "(i) a <b>",
                "criterion": "c1",
                "ours": "x = 1; y = 2",
                "study": "s = 3",
                "verdict": "holds",
            },
            {
                "claim": "(ii) b",
                "criterion": "c2",
                "ours": "",
                "study": "t = 4; u = 5",
                "verdict": "does not hold",
            },
        ]
    )
    page = claim_cards(frame)
    assert page.count("<li>") == 5 and "<li>x = 1</li>" in page and "<li>u = 5</li>" in page
    assert "(i) a &lt;b&gt;" in page and "<b>" not in page
    with pytest.raises(ValueError, match="verdict"):
        claim_cards(frame.drop(columns="verdict"))
