"""The one figure style of the workflow, its palettes and the figure writer; each stage's
figures live in its ``plots`` module.

Colours are fixed per condition and per cell type across every figure (Okabe-Ito and
colour-blind-safe seaborn palettes), fonts are readable at report size, axes carry units.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import scanpy as sc  # noqa: E402
import seaborn as sns  # noqa: E402

from mscflow.io import write_figure_atomic  # noqa: E402
from mscflow.vocab import CELL_TYPE_ORDER, CONTROL_CONDITIONS  # noqa: E402

# Okabe & Ito (2008) colour-blind-safe palette.
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
             "#000000"]
# Controls grey, treatments in Okabe-Ito hues distinguishable under the common colour-vision
# deficiencies.
CONDITION_COLOURS = {"control": "#7F7F7F", "PBS": "#7F7F7F", "MSC": "#0072B2",
                     "apoptotic_MSC": "#D55E00", "LPS": "#E69F00"}
# Paul Tol's colour-blind-safe "muted" and "light" schemes, one fixed colour per cell type.
CELL_TYPE_COLOURS = {
    "alveolar_macrophage": "#CC6677", "interstitial_macrophage": "#882255",
    "kupffer_cell": "#AA4499", "momf": "#EE8866", "classical_monocyte": "#DDCC77",
    "nonclassical_monocyte": "#999933", "neutrophil": "#332288", "nk_cell": "#88CCEE",
    "t_cell": "#44AA99", "b_cell": "#117733", "plasma_cell": "#004488",
    "dendritic_cell": "#BB5566", "mast_cell": "#DDAA33", "endothelial": "#77AADD", "at1": "#FFAABB",
    "at2": "#BBCC33", "hepatocyte": "#AAAA00", "stellate_fibroblast": "#99DDFF",
    "unassigned": "#BBBBBB",
}  # fmt: skip
# Cell types outside the curated list get these, in sorted order of their names.
SPARE_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#44BB99",
                 "#EEDD88", "#000000")
BASE_FONT_SIZE = 11


def set_style() -> None:
    """Apply the mscflow figure style (call before drawing)."""
    sns.set_theme(context="notebook", style="ticks", font="DejaVu Sans",
                  rc={"figure.dpi": 100, "savefig.dpi": 110, "font.size": BASE_FONT_SIZE,
                      "axes.titlesize": BASE_FONT_SIZE + 1, "axes.labelsize": BASE_FONT_SIZE,
                      "xtick.labelsize": BASE_FONT_SIZE - 1,
                      "ytick.labelsize": BASE_FONT_SIZE - 1,
                      "legend.fontsize": BASE_FONT_SIZE - 1, "axes.titleweight": "bold",
                      "axes.spines.right": False, "axes.spines.top": False,
                      "legend.frameon": False})
    sc.settings.set_figure_params(dpi=100, dpi_save=110, frameon=False, vector_friendly=True,
                                  fontsize=BASE_FONT_SIZE)


def condition_order(conditions: Sequence[str]) -> list[str]:
    """Conditions with controls first (in CONTROL_CONDITIONS order), then the rest sorted."""
    names = sorted(set(map(str, conditions)))
    controls = [c for c in CONTROL_CONDITIONS if c in names]
    return controls + [c for c in names if c not in controls]


def condition_palette(conditions: Sequence[str]) -> dict[str, str]:
    """Fixed colours for known conditions, Okabe-Ito for the rest, in condition_order.

    Unknown conditions take the unused Okabe-Ito colours in sorted order of their names, so a
    condition keeps its colour in every figure of a run.
    """
    spare = iter(c for c in OKABE_ITO if c not in CONDITION_COLOURS.values())
    unknown = {c: next(spare, "#999999")
               for c in sorted(map(str, conditions)) if c not in CONDITION_COLOURS}
    return {c: CONDITION_COLOURS.get(c) or unknown[c] for c in condition_order(conditions)}


def cell_type_palette(cell_types: Sequence[str]) -> dict[str, str]:
    """One colour per cell type, the same in every figure of every run (curated types).

    Types outside the curated list take SPARE_COLOURS in sorted order of their names.
    """
    names = sorted(set(map(str, cell_types)), key=cell_type_rank)
    spare = iter(SPARE_COLOURS)
    return {ct: CELL_TYPE_COLOURS.get(ct) or next(spare, "#444444") for ct in names}


def save(fig: plt.Figure, path: str, dpi: float | None = None) -> None:
    """Save a figure (atomically, without a timestamp or software tag) and close it;
    ``dpi`` None keeps matplotlib's setting."""
    options = {} if dpi is None else {"dpi": dpi}
    write_figure_atomic(fig, path, bbox_inches="tight", metadata={"Software": None}, **options)
    plt.close(fig)


def rotate_xticklabels(ax: plt.Axes, rotation: float = 45) -> None:
    """Rotate x tick labels so that each ends under its tick."""
    plt.setp(ax.get_xticklabels(), rotation=rotation, ha="right", rotation_mode="anchor")


def cell_type_rank(name: str) -> tuple[int, str]:
    """Sort key: curated cell types in CELL_TYPE_ORDER, then the others by name."""
    order = {ct: i for i, ct in enumerate(CELL_TYPE_ORDER)}
    return (order.get(name, len(order)), name)


def message_figure(text: str, title: str = "") -> plt.Figure:
    """A small figure that only states ``text`` (e.g. why nothing could be plotted)."""
    fig, ax = plt.subplots(figsize=(6, 1.8))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10)
    if title:
        ax.set_title(title)
    return fig
