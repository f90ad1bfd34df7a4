"""Names shared by several stages: the label of cells no cell type fits, the curated
cell-type order (figures and tables list types in it) and the condition names taken as
controls. Bottom layer: imports nothing of mscflow."""

from __future__ import annotations

UNASSIGNED = "unassigned"

CONTROL_CONDITIONS = ("control", "PBS", "vehicle", "sham", "naive", "untreated")

CELL_TYPE_ORDER = (
    "alveolar_macrophage", "interstitial_macrophage", "kupffer_cell", "momf",
    "classical_monocyte", "nonclassical_monocyte", "neutrophil", "nk_cell", "t_cell",
    "b_cell", "plasma_cell", "dendritic_cell", "mast_cell", "endothelial", "at1", "at2",
    "hepatocyte", "stellate_fibroblast", "unassigned",
)  # fmt: skip
