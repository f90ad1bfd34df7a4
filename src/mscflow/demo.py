"""Deterministic synthetic demo: mouse lung and liver after MSC infusion.

The generator writes a multi-sample data set in every input format the workflow reads
(10x mtx v3 gzipped, 10x mtx v2 plain, 10x h5, h5ad with counts in a layer) together with
the truth the tests check against.

Model (all effect sizes are parameters of :class:`DemoSpec`, documented there):

* Genes: every gene of the curated programme and marker GMT files, 13 mitochondrial genes,
  ribosomal and haemoglobin genes, and background genes drawn from real mouse symbols
  (Tabula Muris lung channel).
* Expression: a shared baseline profile (gamma-distributed relative abundances); each cell
  type multiplies its marker genes by ``marker_fold`` and a private set of type genes by
  ``type_gene_fold``, with a small log-normal jitter on all genes. Macrophage populations
  share the pan-macrophage genes.
* Counts: negative binomial (dispersion ``nb_dispersion``) around library size x profile;
  library sizes log-normal (median ``median_umi``, log sd ``library_log_sd``).
* Low-quality cells (fraction ``low_quality_fraction``): library size x 0.04-0.15 and
  mitochondrial fraction 30-70 %. Heterotypic doublets (``doublet_fraction``): the sum of
  two cells of different types.
* Macrophages express the programme genes at baseline (at least ``programme_baseline`` x the
  mean abundance of a non-ribosomal gene).
* Condition effects in MSC samples: genes of ``effect_sets`` multiplied by
  ``programme_fold`` in macrophages (alveolar, interstitial, Kupffer, MoMF); in liver the
  MoMF proportion multiplied by ``momf_expansion`` before renormalising.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

MACROPHAGES = ("alveolar_macrophage", "interstitial_macrophage", "kupffer_cell", "momf")
MITO_GENES = (
    "mt-Nd1", "mt-Nd2", "mt-Co1", "mt-Co2", "mt-Atp8", "mt-Atp6", "mt-Co3",
    "mt-Nd3", "mt-Nd4l", "mt-Nd4", "mt-Nd5", "mt-Nd6", "mt-Cytb",
)  # fmt: skip

TISSUE_COMPOSITION: dict[str, dict[str, float]] = {
    "lung": {
        "alveolar_macrophage": 0.18, "interstitial_macrophage": 0.06, "momf": 0.05,
        "classical_monocyte": 0.08, "neutrophil": 0.10, "nk_cell": 0.06, "t_cell": 0.12,
        "b_cell": 0.10, "endothelial": 0.15, "at2": 0.10,
    },
    "liver": {
        "kupffer_cell": 0.16, "momf": 0.06, "classical_monocyte": 0.07, "neutrophil": 0.06,
        "nk_cell": 0.08, "t_cell": 0.12, "b_cell": 0.07, "endothelial": 0.18,
        "hepatocyte": 0.20,
    },
}  # fmt: skip

# Relative library size per cell type (neutrophils are RNA-poor, hepatocytes rich).
LIBRARY_SCALE = {"neutrophil": 0.55, "hepatocyte": 1.6, "t_cell": 0.8, "b_cell": 0.8}
# Typical mitochondrial fraction of healthy cells per type.
MITO_MEAN = {"hepatocyte": 0.09, "at2": 0.06}


@dataclass(frozen=True)
class DemoSpec:
    """Parameters of the demo; every planted effect size lives here."""

    seed: int = 0
    cells_per_sample: int = 1200
    replicates: int = 3
    tissues: tuple[str, ...] = ("lung", "liver")
    conditions: tuple[str, ...] = ("control", "MSC")
    n_background_genes: int = 3000
    median_umi: float = 4000.0
    library_log_sd: float = 0.35
    nb_dispersion: float = 0.15
    marker_fold: float = 12.0
    type_gene_fold: float = 4.0
    n_type_genes: int = 40
    low_quality_fraction: float = 0.06
    doublet_fraction: float = 0.05
    programme_fold: float = 2.0
    programme_baseline: float = 2.0
    momf_expansion: float = 2.5
    effect_sets: tuple[str, ...] = (
        "efferocytosis_combined", "il10_ligand_receptor", "il10_stat3_response",
    )  # fmt: skip
    formats: Mapping[str, str] = field(
        default_factory=lambda: {
            "lung_control": "10x_mtx_v3",
            "lung_MSC": "10x_mtx_v2",
            "liver_control": "10x_h5",
            "liver_MSC": "h5ad",
        }
    )

    @classmethod
    def from_config(cls, demo: Mapping) -> DemoSpec:
        """The spec with ``seed``, ``cells_per_sample`` and ``replicates`` from the config's
        ``demo`` section (validated, defaults filled); the model parameters as above."""
        return cls(seed=demo["seed"], cells_per_sample=demo["cells_per_sample"],
                   replicates=demo["replicates"])


def background_symbols() -> list[str]:
    """Real mouse gene symbols shipped with the package (Tabula Muris lung channel)."""
    ref = resources.files("mscflow") / "data" / "tabula_muris_mouse_symbols.txt.gz"
    with ref.open("rb") as raw, gzip.open(raw, "rt") as handle:
        return [line.strip() for line in handle if line.strip()]


def build_gene_universe(
    gene_sets: Mapping[str, Sequence[str]], n_background: int, rng: np.random.Generator
) -> list[str]:
    """Set genes, mitochondrial, ribosomal and haemoglobin genes, then background genes."""
    wanted: list[str] = []
    for genes in gene_sets.values():
        wanted.extend(genes)
    symbols = background_symbols()
    ribo_hb = [s for s in symbols if s.startswith(("Rps", "Rpl", "Hba-", "Hbb-"))][:80]
    fixed = list(dict.fromkeys([*wanted, *MITO_GENES, *ribo_hb]))
    pool = np.array(sorted(set(symbols) - set(fixed)))
    extra = rng.choice(pool, size=min(n_background, len(pool)), replace=False)
    return fixed + sorted(extra.tolist())


def cell_type_profiles(
    genes: Sequence[str],
    markers: Mapping[str, Sequence[str]],
    cell_types: Sequence[str],
    spec: DemoSpec,
    rng: np.random.Generator,
    programme: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Relative expression profile (sums to 1 without mitochondrial genes) per cell type.

    Macrophages express the ``programme`` genes (efferocytosis, IL-10) at least at the mean
    abundance of a non-ribosomal gene times ``spec.programme_baseline``, as they do in vivo.
    """
    index = {g: i for i, g in enumerate(genes)}
    n = len(genes)
    is_mito = np.array([g.startswith("mt-") for g in genes])
    is_ribo = np.array([g.startswith(("Rps", "Rpl")) for g in genes])
    base = rng.gamma(0.5, 1.0, n)
    base[is_ribo] *= 25.0
    base[is_mito] = 0.0
    marker_genes = set().union(*[set(markers.get(ct, ())) for ct in cell_types])
    background_idx = np.array(
        [i for i, g in enumerate(genes) if g not in marker_genes and not is_mito[i]]
    )
    profiles = {}
    for ct in cell_types:
        log_prof = np.log(base + 1e-3) + rng.normal(0.0, 0.25, n)
        own = [index[g] for g in markers.get(ct, ()) if g in index]
        log_prof[own] = np.log(base[own].mean() + 1.0) + np.log(spec.marker_fold)
        if ct in MACROPHAGES:
            pan = [index[g] for g in markers.get("pan_macrophage", ()) if g in index]
            log_prof[pan] = np.log(base[pan].mean() + 1.0) + np.log(spec.marker_fold) - 0.5
            if programme is not None:
                floor = np.log(base[~is_ribo & ~is_mito].mean() * spec.programme_baseline)
                log_prof[programme] = np.maximum(log_prof[programme], floor)
        type_genes = rng.choice(background_idx, size=spec.n_type_genes, replace=False)
        log_prof[type_genes] += np.log(spec.type_gene_fold)
        prof = np.exp(log_prof)
        prof[is_mito] = 0.0
        profiles[ct] = prof / prof.sum()
    return profiles


def programme_mask(genes: Sequence[str], gene_sets: Mapping[str, Sequence[str]],
                   effect_sets: Sequence[str]) -> np.ndarray:
    """Boolean mask of genes raised by the MSC effect."""
    missing = [s for s in effect_sets if s not in gene_sets]
    if missing:
        raise ValueError(f"demo effect sets {missing} are not in the programme GMT")
    planted = set().union(*[set(gene_sets[s]) for s in effect_sets])
    return np.array([g in planted for g in genes])


def _draw_counts(profile: np.ndarray, library: float, mito_frac: float, is_mito: np.ndarray,
                 dispersion: float, rng: np.random.Generator) -> np.ndarray:
    mu = profile * library * (1.0 - mito_frac)
    n_mito = int(is_mito.sum())
    mito_weights = np.linspace(1.5, 0.5, n_mito)
    mu[is_mito] = library * mito_frac * mito_weights / mito_weights.sum()
    shape = 1.0 / dispersion
    lam = rng.gamma(shape, mu / shape)
    return rng.poisson(lam)


def _healthy_mito_fraction(cell_type: str, rng: np.random.Generator) -> float:
    """Beta-distributed mitochondrial fraction around the cell type's typical value."""
    mean = MITO_MEAN.get(cell_type, 0.04)
    return float(np.clip(rng.beta(20.0, 20.0 / mean - 20.0), 0.0, 0.2))


def simulate_sample(
    tissue: str,
    condition: str,
    genes: Sequence[str],
    profiles: Mapping[str, np.ndarray],
    programme: np.ndarray,
    spec: DemoSpec,
    rng: np.random.Generator,
) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """Counts (cells x genes, CSR int32) and per-cell truth for one sample."""
    comp = dict(TISSUE_COMPOSITION[tissue])
    treated = condition != spec.conditions[0]
    if treated and tissue == "liver":
        comp["momf"] *= spec.momf_expansion
    types = np.array(list(comp))
    probs = np.array(list(comp.values()))
    probs /= probs.sum()
    n = spec.cells_per_sample
    is_mito = np.array([g.startswith("mt-") for g in genes])
    fold = np.where(programme, spec.programme_fold, 1.0)

    def profile_of(ct: str) -> np.ndarray:
        prof = profiles[ct]
        if treated and ct in MACROPHAGES:
            prof = prof * fold
            prof = prof / prof.sum()
        return prof

    def one_cell(ct: str, lib_factor: float, mito: float) -> np.ndarray:
        lib = spec.median_umi * LIBRARY_SCALE.get(ct, 1.0) * lib_factor
        lib *= np.exp(rng.normal(0.0, spec.library_log_sd))
        return _draw_counts(profile_of(ct), lib, mito, is_mito, spec.nb_dispersion, rng)

    cell_type = rng.choice(types, size=n, p=probs)
    status = rng.choice(
        np.array(["ok", "low_quality", "doublet"]),
        size=n,
        p=[1 - spec.low_quality_fraction - spec.doublet_fraction,
           spec.low_quality_fraction, spec.doublet_fraction],
    )
    rows, second = [], []
    for ct, st in zip(cell_type, status, strict=True):
        mito = _healthy_mito_fraction(ct, rng)
        if st == "low_quality":
            rows.append(one_cell(ct, rng.uniform(0.04, 0.15), rng.uniform(0.3, 0.7)))
            second.append("")
        elif st == "doublet":
            other = rng.choice(types[types != ct], p=None)
            mito2 = _healthy_mito_fraction(str(other), rng)
            rows.append(one_cell(ct, 1.0, mito) + one_cell(other, 1.0, mito2))
            second.append(str(other))
        else:
            rows.append(one_cell(ct, 1.0, mito))
            second.append("")
    counts = sp.csr_matrix(np.vstack(rows).astype(np.int32))
    truth = pd.DataFrame(
        {
            "cell_type": cell_type,
            "low_quality": status == "low_quality",
            "doublet": status == "doublet",
            "doublet_partner": second,
        }
    )
    return counts, truth


def _barcodes(n: int, rng: np.random.Generator) -> list[str]:
    """Unique 16-mer barcodes with the 10x '-1' suffix (identical across samples on purpose)."""
    alphabet = np.array(list("ACGT"))
    seen: dict[str, None] = {}
    while len(seen) < n:
        seen["".join(rng.choice(alphabet, 16)) + "-1"] = None
    return list(seen)


def _write_gzip(path: Path, payload: bytes) -> None:
    """Gzip with a fixed timestamp so reruns write identical bytes."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
        fh.write(payload)


def write_10x_mtx(path: Path, counts: sp.csr_matrix, barcodes: Sequence[str],
                  genes: Sequence[str], version: int) -> None:
    """Write a Cell Ranger folder: v3 gzipped (features.tsv.gz) or v2 plain (genes.tsv)."""
    path.mkdir(parents=True, exist_ok=True)
    gene_ids = [f"DEMO{i:06d}" for i in range(len(genes))]
    matrix = sp.coo_matrix(counts.T)
    if version == 3:
        buffer = io.BytesIO()
        scipy.io.mmwrite(buffer, matrix, field="integer")
        _write_gzip(path / "matrix.mtx.gz", buffer.getvalue())
        _write_gzip(path / "barcodes.tsv.gz", ("\n".join(barcodes) + "\n").encode())
        features = "".join(f"{i}\t{g}\tGene Expression\n"
                           for i, g in zip(gene_ids, genes, strict=True))
        _write_gzip(path / "features.tsv.gz", features.encode())
    else:
        scipy.io.mmwrite(path / "matrix.mtx", matrix, field="integer")
        (path / "barcodes.tsv").write_text("\n".join(barcodes) + "\n")
        (path / "genes.tsv").write_text(
            "".join(f"{i}\t{g}\n" for i, g in zip(gene_ids, genes, strict=True))
        )


def write_10x_h5(path: Path, counts: sp.csr_matrix, barcodes: Sequence[str],
                 genes: Sequence[str]) -> None:
    """Write a Cell Ranger v3 filtered_feature_bc_matrix.h5."""
    gene_ids = [f"DEMO{i:06d}" for i in range(len(genes))]
    counts = counts.tocsr()
    with h5py.File(path, "w") as f:
        grp = f.create_group("matrix")
        grp.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        grp.create_dataset("data", data=counts.data.astype(np.int32), compression="gzip")
        grp.create_dataset("indices", data=counts.indices.astype(np.int64),
                           compression="gzip")
        grp.create_dataset("indptr", data=counts.indptr.astype(np.int64))
        grp.create_dataset("shape", data=np.array(counts.shape[::-1], dtype=np.int32))
        feat = grp.create_group("features")
        feat.create_dataset("id", data=np.array(gene_ids, dtype="S"))
        feat.create_dataset("name", data=np.array(genes, dtype="S"))
        feat.create_dataset("feature_type", data=np.array(["Gene Expression"] * len(genes),
                                                          dtype="S"))
        feat.create_dataset("genome", data=np.array(["mm10"] * len(genes), dtype="S"))
        feat.create_dataset("_all_tag_keys", data=np.array(["genome"], dtype="S"))


def write_h5ad_with_counts_layer(path: Path, counts: sp.csr_matrix,
                                 barcodes: Sequence[str], genes: Sequence[str]) -> None:
    """Write an h5ad as public portals do: log-normalised X, raw counts in layer 'counts'."""
    x = counts.astype(np.float32)
    totals = np.asarray(x.sum(axis=1)).ravel()
    totals[totals == 0] = 1.0
    norm = sp.diags(1e4 / totals) @ x
    norm.data = np.log1p(norm.data)
    adata = ad.AnnData(
        X=sp.csr_matrix(norm, dtype=np.float32),
        obs=pd.DataFrame(index=list(barcodes)),
        var=pd.DataFrame(index=list(genes)),
        layers={"counts": counts.astype(np.float32)},
    )
    adata.write_h5ad(path, compression="gzip")


def generate_demo(
    outdir: str | Path,
    programme_sets: Mapping[str, Sequence[str]],
    marker_sets: Mapping[str, Sequence[str]],
    spec: DemoSpec | None = None,
) -> pd.DataFrame:
    """Write the demo data set into ``outdir`` and return its sample sheet.

    ``outdir`` receives one input per sample (format per tissue/condition from
    ``spec.formats``), ``samples.tsv``, ``truth.tsv.gz`` (per cell: sample, barcode,
    cell_type, low_quality, doublet, doublet_partner), ``planted_effects.tsv`` (per gene
    set: fraction of its genes raised by the MSC effect) and ``spec.json``.
    """
    spec = spec or DemoSpec()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    genes = build_gene_universe({**programme_sets, **marker_sets}, spec.n_background_genes,
                                rng)
    all_types = sorted({ct for comp in TISSUE_COMPOSITION.values() for ct in comp})
    markers = dict(marker_sets)
    if "pan_macrophage" in programme_sets:
        markers["pan_macrophage"] = list(programme_sets["pan_macrophage"])
    missing = [ct for ct in all_types if ct not in markers]
    if missing:
        raise ValueError(f"marker GMT lacks sets for demo cell types {missing}")
    programme = programme_mask(genes, programme_sets, spec.effect_sets)
    profiles = cell_type_profiles(genes, markers, all_types, spec, rng, programme)

    sheet_rows, truth_frames = [], []
    for tissue in spec.tissues:
        for condition in spec.conditions:
            fmt = spec.formats[f"{tissue}_{condition}"]
            for rep in range(1, spec.replicates + 1):
                sample = f"{tissue}_{condition}_{rep}"
                counts, truth = simulate_sample(tissue, condition, genes, profiles,
                                                programme, spec, rng)
                barcodes = _barcodes(counts.shape[0], rng)
                if fmt.startswith("10x_mtx"):
                    target = outdir / sample
                    write_10x_mtx(target, counts, barcodes, genes, int(fmt[-1]))
                    sheet_fmt = "10x_mtx"
                elif fmt == "10x_h5":
                    target = outdir / f"{sample}_filtered_feature_bc_matrix.h5"
                    write_10x_h5(target, counts, barcodes, genes)
                    sheet_fmt = "10x_h5"
                else:
                    target = outdir / f"{sample}.h5ad"
                    write_h5ad_with_counts_layer(target, counts, barcodes, genes)
                    sheet_fmt = "h5ad"
                truth.insert(0, "barcode", barcodes)
                truth.insert(0, "sample", sample)
                truth_frames.append(truth)
                sheet_rows.append(
                    {
                        "sample": sample, "tissue": tissue, "condition": condition,
                        "replicate": rep, "species": "mouse", "path": str(target),
                        "format": sheet_fmt,
                        "layer": "counts" if sheet_fmt == "h5ad" else "",
                    }
                )  # fmt: skip
    sheet = pd.DataFrame(sheet_rows)
    sheet.to_csv(outdir / "samples.tsv", sep="\t", index=False)
    pd.concat(truth_frames, ignore_index=True).to_csv(
        outdir / "truth.tsv.gz", sep="\t", index=False, compression={"method": "gzip",
                                                                     "mtime": 0}
    )
    planted_fraction = {
        name: float(np.mean([g in set(np.asarray(genes)[programme]) for g in members]))
        for name, members in programme_sets.items()
    }
    pd.DataFrame(
        {"gene_set": list(planted_fraction), "planted_gene_fraction": list(
            planted_fraction.values())}
    ).to_csv(outdir / "planted_effects.tsv", sep="\t", index=False)
    meta = asdict(spec)
    meta["formats"] = dict(spec.formats)
    meta["macrophage_types_with_programme_effect"] = list(MACROPHAGES)
    meta["composition"] = TISSUE_COMPOSITION
    (outdir / "spec.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return sheet
