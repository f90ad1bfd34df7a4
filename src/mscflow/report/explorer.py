"""The interactive explorer: one self-contained HTML page with the UMAP of the run.

The page embeds plotly.js (the copy bundled in the ``plotly`` wheel, gzip-compressed to a
third of its size and run by the page) and the data of the cells it shows, so it opens
offline, inside the Snakemake report or on its own. A menu colours the UMAP by cluster, cell
type, sample, condition, tissue, any programme score or any gene of the run's gene-set
library; hovering a cell shows its sample, cell type and the chosen value; the plot zooms
(wheel, box) and pans.

Above ``report.explorer_max_cells`` cells the page shows a random subsample stratified by
sample x cell type (:func:`stratified_subsample`, seeded by the run's seed) and says so.

Data layout (compact and exact enough to read back): UMAP coordinates and programme scores
are quantised to 16 bits over their own range, gene expression (log-normalised) to 8 bits
over [0, the gene's maximum] (zero stays exactly zero; the hover shows the value to that
step), categorical fields are codes into their category lists; all arrays are concatenated,
gzip-compressed (no timestamp: the page is identical across reruns) and base64-encoded.
The browser decompresses them with its own ``DecompressionStream``.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mscflow.genesets import GeneSetLibrary, read_library
from mscflow.plotting import cell_type_palette, condition_order, condition_palette
from mscflow.report.overview import ReportSettings
from mscflow.vocab import CELL_TYPE_ORDER

__all__ = [
    "ExplorerData",
    "ReportSettings",
    "explorer_data",
    "explorer_html",
    "explorer_stage",
    "library_genes",
    "palette",
    "quantise",
    "stratified_subsample",
]

# obs columns offered as categorical colourings (when present), in menu order; the
# clustering column is added first by the caller.
CATEGORICAL_FIELDS = ("cell_type", "sample", "condition", "tissue")
SCORE_PREFIX = "score_"
QUANT_LEVELS = 65535  # coordinates and programme scores: 16 bits over their range
GENE_LEVELS = 255  # genes: 8 bits over [0, the gene's maximum] (half the page of 16 bits)


# --------------------------------------------------------------------------- subsample


def stratified_subsample(strata: pd.Series, max_cells: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``max_cells`` cells keeping each stratum's share.

    Each stratum (e.g. ``sample x cell type``) gets its proportional quota by the largest
    remainder method, at least one cell while there are fewer strata than ``max_cells``;
    cells within a stratum are drawn without replacement with ``numpy``'s generator seeded
    by ``seed``. All positions when there are at most ``max_cells`` cells.
    """
    n = len(strata)
    if n <= max_cells:
        return np.arange(n)
    codes, uniques = pd.factorize(strata.astype(str), sort=True)
    sizes = np.bincount(codes, minlength=len(uniques))
    exact = sizes * max_cells / n
    quota = np.floor(exact).astype(int)
    if len(uniques) <= max_cells:
        quota = np.maximum(quota, (sizes > 0).astype(int))
    left = max_cells - int(quota.sum())
    if left > 0:
        room = sizes - quota
        order = np.lexsort((np.arange(len(sizes)), -(exact - np.floor(exact))))
        order = [i for i in order if room[i] > 0]
        for i in order[:left]:
            quota[i] += 1
    elif left < 0:  # the one-cell floor overshot: take from the largest quotas
        for i in np.argsort(-quota, kind="stable")[: -left]:
            quota[i] -= 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(codes == k), size=q, replace=False)
              for k, q in enumerate(quota) if q > 0]
    return np.sort(np.concatenate(chosen))


# ------------------------------------------------------------------------------- data


def quantise(values: np.ndarray, levels: int = QUANT_LEVELS) -> tuple[np.ndarray, float, float]:
    """``values`` as integer codes over [lo, hi]: value = lo + code * (hi - lo) / levels
    (uint16 codes; uint8 with ``levels`` <= 255).

    NaN is not allowed (the caller fills or drops it); a constant array gives zeros.
    """
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("cannot quantise non-finite values")
    dtype = np.uint8 if levels <= 255 else np.uint16
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if hi == lo:
        return np.zeros(v.shape, dtype=dtype), lo, hi
    codes = np.rint((v - lo) / (hi - lo) * levels).astype(dtype)
    return codes, lo, hi


@dataclass
class ExplorerData:
    """What the page shows: coordinates, categorical and continuous fields, and notes."""

    umap: np.ndarray  # cells x 2
    categorical: dict[str, tuple[np.ndarray, list[str], list[str]]]  # codes, labels, colours
    continuous: dict[str, tuple[str, np.ndarray]]  # field -> (group, values)
    n_total: int
    seed: int
    title: str = "mscflow explorer"
    default_field: str = "cell_type"
    hover_fields: tuple[str, ...] = ("sample", "cell_type")
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def n_shown(self) -> int:
        return int(self.umap.shape[0])


def palette(field_name: str, labels: Sequence[str]) -> list[str]:
    """Colours of ``labels``: the workflow's fixed ones for cell types and conditions,
    matplotlib's tab20 series in label order otherwise."""

    if field_name == "cell_type":
        pal = cell_type_palette(labels)
        return [pal[x] for x in labels]
    if field_name == "condition":
        pal = condition_palette(labels)
        return [pal[x] for x in labels]
    import matplotlib as mpl

    cycle = [mpl.colors.to_hex(c) for name in ("tab20", "tab20b", "tab20c")
             for c in mpl.colormaps[name].colors]
    return [cycle[i % len(cycle)] for i in range(len(labels))]


def _category_order(field_name: str, values: pd.Series) -> list[str]:
    labels = sorted(set(values.astype(str)))
    if field_name == "condition":
        return condition_order(labels)
    if field_name == "cell_type":
        rank = {c: i for i, c in enumerate(CELL_TYPE_ORDER)}
        return sorted(labels, key=lambda c: (rank.get(c, len(rank)), c))
    if field_name.startswith("leiden"):
        return sorted(labels, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))
    return labels


def explorer_data(obs: pd.DataFrame, umap: np.ndarray, genes: pd.DataFrame, *,
                  cluster_key: str, n_total: int, seed: int) -> ExplorerData:
    """The explorer's fields from ``obs`` (shown cells), their UMAP and expression of the
    library genes (``genes``: cells x genes, log-normalised)."""
    if umap.shape != (len(obs), 2) or not np.all(np.isfinite(umap)):
        raise ValueError(f"UMAP must be finite with shape ({len(obs)}, 2), got {umap.shape}")
    categorical = {}
    for name in (cluster_key, *CATEGORICAL_FIELDS):
        if name not in obs.columns:
            continue
        values = obs[name].astype(str)
        labels = _category_order(name, values)
        codes = pd.Categorical(values, categories=labels).codes.astype(np.uint16)
        categorical[name] = (codes, labels, palette(name, labels))
    continuous: dict[str, tuple[str, np.ndarray]] = {}
    for column in sorted(c for c in obs.columns if str(c).startswith(SCORE_PREFIX)):
        values = pd.to_numeric(obs[column], errors="coerce").to_numpy(float)
        if np.all(np.isfinite(values)):
            continuous[column] = ("Programme scores", values)
    for gene in genes.columns:
        continuous[f"gene:{gene}"] = ("Genes of the curated sets", genes[gene].to_numpy(float))
    labels = {cluster_key: f"cluster ({cluster_key})", "cell_type": "cell type"}
    labels.update({c: f"{c[len(SCORE_PREFIX):]} score" for c in continuous
                   if c.startswith(SCORE_PREFIX)})
    labels.update({c: c[len("gene:"):] for c in continuous if c.startswith("gene:")})
    default = "cell_type" if "cell_type" in categorical else next(iter(categorical), "")
    return ExplorerData(np.asarray(umap, dtype=float), categorical, continuous, n_total, seed,
                        default_field=default, labels=labels)


def _pack(data: ExplorerData) -> tuple[str, dict]:
    """Arrays as one gzip+base64 blob and the manifest that reads them back."""
    chunks: list[bytes] = []
    offset = 0

    def add(codes: np.ndarray, levels: int = QUANT_LEVELS) -> dict:
        nonlocal offset
        raw = np.ascontiguousarray(codes).astype("<u2" if levels > 255 else "u1").tobytes()
        entry = {"offset": offset, "length": int(codes.size), "levels": levels}
        raw += b"\0" * (len(raw) % 2)  # keep every array at an even offset (Uint16Array)
        chunks.append(raw)
        offset += len(raw)
        return entry

    manifest: dict = {"n": data.n_shown, "umap": []}
    for axis in range(2):
        codes, lo, hi = quantise(data.umap[:, axis])
        manifest["umap"].append({**add(codes), "lo": lo, "hi": hi})
    manifest["fields"] = []
    for name, (codes, labels, colours) in data.categorical.items():
        manifest["fields"].append({"name": name, "label": data.labels.get(name, name),
                                   "kind": "categorical", "group": "Annotations",
                                   "categories": labels, "colours": colours, **add(codes)})
    for name, (group, values) in data.continuous.items():
        levels = GENE_LEVELS if name.startswith("gene:") else QUANT_LEVELS
        codes, lo, hi = quantise(values, levels)
        manifest["fields"].append({"name": name, "label": data.labels.get(name, name),
                                   "kind": "continuous", "group": group, "lo": lo, "hi": hi,
                                   **add(codes, levels)})
    blob = gzip.compress(b"".join(chunks), compresslevel=9, mtime=0)
    return base64.b64encode(blob).decode("ascii"), manifest


def _note(data: ExplorerData) -> str:
    if data.n_shown < data.n_total:
        text = (f"Showing {data.n_shown:,} of {data.n_total:,} cells: a random subsample "
                "stratified by sample &times; cell type (each keeps its share of the cells, "
                f"at least one; seed {data.seed}); set report.explorer_max_cells to show more.")
    else:
        text = f"All {data.n_total:,} cells shown."
    if any(name.startswith("gene:") for name in data.continuous):
        text += (" Genes: log-normalised expression, kept to 1/255 of each gene's maximum "
                 "(scores to 1/65535 of their range).")
    return text


_TEMPLATE = Path(__file__).parents[1] / "data" / "explorer_template.html"


def explorer_html(data: ExplorerData, *, plotly_js: str | None = None) -> str:
    """The self-contained page (plotly.js and the data embedded; no network when opened)."""
    if plotly_js is None:
        from plotly.offline import get_plotlyjs

        plotly_js = get_plotlyjs()
    packed_js = base64.b64encode(gzip.compress(plotly_js.encode(), compresslevel=9, mtime=0))
    blob, manifest = _pack(data)
    manifest.update(default=data.default_field, hover=list(data.hover_fields))
    values = {
        "__TITLE__": html.escape(data.title),
        "__NOTE__": _note(data),
        "__MANIFEST__": json.dumps(manifest, separators=(",", ":")).replace("</", "<\\/"),
        "__DATA__": blob,
        "__N_SHOWN__": str(data.n_shown),
        "__N_TOTAL__": str(data.n_total),
        "__PLOTLY_JS__": packed_js.decode("ascii"),
    }
    # one pass over the template: inserted text is never searched for markers again
    return re.sub(r"__[A-Z_]+__", lambda m: values.get(m.group(0), m.group(0)),
                  _TEMPLATE.read_text())


# ------------------------------------------------------------------------------ stage


def library_genes(library: GeneSetLibrary, var_names: Sequence[str]) -> list[str]:
    """Genes of every programme and marker set of the library that the data holds, sorted."""
    sets = {**library.programmes, **library.markers}
    present = set(map(str, var_names))
    return sorted({g for genes in sets.values() for g in genes if g in present})


def explorer_stage(h5ad: str | Path, library: str | Path, settings: ReportSettings, *,
                   cluster_key: str) -> str:
    """Rule report_explorer: read the annotated cells (rows of the subsample only) and the
    library, return the page."""
    import anndata as ad
    import scipy.sparse as sp

    lib = read_library(library)
    backed = ad.read_h5ad(h5ad, backed="r")
    try:
        obs = backed.obs.copy()
        umap = np.asarray(backed.obsm["X_umap"])[:, :2]
        strata = obs["sample"].astype(str) + "|" + obs["cell_type"].astype(str)
        rows = stratified_subsample(strata, settings.explorer_max_cells, settings.seed)
        genes = library_genes(lib, backed.var_names)
        cols = backed.var_names.get_indexer(genes)
        x = backed.X[rows] if len(rows) < len(obs) else backed.X[:]
        x = x.tocsc()[:, cols].toarray() if sp.issparse(x) else np.asarray(x)[:, cols]
    finally:
        backed.file.close()
    expression = pd.DataFrame(x, columns=genes)
    data = explorer_data(obs.iloc[rows], umap[rows], expression, cluster_key=cluster_key,
                         n_total=len(obs), seed=settings.seed)
    return explorer_html(data)
