"""Deterministic synthetic demo: mouse lung and liver after MSC infusion.

The generator writes a multi-sample data set in every input format the workflow reads
(10x mtx v3 gzipped, 10x mtx v2 plain, 10x h5, h5ad with counts in a layer) together with
the truth the tests check against. Everything random comes from one generator seeded by
``DemoSpec.seed``: the same spec writes the same bytes.

Truth files beside the data: ``truth.tsv.gz`` (per cell), ``planted_effects.tsv`` (per gene
set), ``planted_gene_effects.tsv`` (per tissue x cell type x gene),
``planted_score_effects.tsv`` (per tissue x cell type x gene set),
``planted_interactions.tsv`` (ligand-receptor axes) and ``spec.json`` (every parameter).

The expression model itself is :mod:`mscflow.demo.model`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from mscflow.demo.formats import barcodes, write_sample
from mscflow.demo.model import (
    LIBRARY_SCALE,
    MITO_MEAN,
    SIMILAR_PAIRS,
    DemoModel,
    DemoSpec,
    batch_of,
)
from mscflow.demo.truth import write_truth


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


def draw_doublet_pair(kind: str, composition: Mapping[str, float],
                      rng: np.random.Generator) -> tuple[str, str, str]:
    """(first type, second type, kind) of a doublet; types in proportion to the sample's
    composition. A similar pair is drawn among the SIMILAR_PAIRS present (weighted by the
    product of their proportions); without one the doublet becomes heterotypic_distinct."""
    types = np.array(list(composition))
    probs = np.array(list(composition.values()))
    similar = {frozenset(p) for p in SIMILAR_PAIRS}
    if kind == "homotypic":
        ct = str(rng.choice(types, p=probs))
        return ct, ct, kind
    if kind == "heterotypic_similar":
        pairs = [p for p in SIMILAR_PAIRS if set(p) <= set(composition)]
        if pairs:
            weights = np.array([composition[a] * composition[b] for a, b in pairs])
            first, second = pairs[int(rng.choice(len(pairs), p=weights / weights.sum()))]
            return (first, second, kind) if rng.random() < 0.5 else (second, first, kind)
    while True:
        first, second = (str(x) for x in rng.choice(types, size=2, p=probs))
        if first != second and frozenset((first, second)) not in similar:
            return first, second, "heterotypic_distinct"


def simulate_sample(model: DemoModel, tissue: str, condition: str, batch: str,
                    rng: np.random.Generator) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """Counts (cells x genes, CSR int32) and per-cell truth for one sample."""
    spec = model.spec
    comp = model.composition(tissue, condition)
    batch_factor = model.batch_factors[batch]
    batch_library = spec.batch_library_factors[spec.batches.index(batch)]

    def one_cell(ct: str, lib_factor: float, mito: float) -> tuple[np.ndarray, float]:
        position = model.draw_position(tissue, condition, ct, rng)
        prof = model.profile(tissue, condition, ct, position) * batch_factor
        lib = spec.median_umi * LIBRARY_SCALE.get(ct, 1.0) * lib_factor * batch_library
        lib *= np.exp(rng.normal(0.0, spec.library_log_sd))
        counts = _draw_counts(prof / prof.sum(), lib, mito, model.is_mito, spec.nb_dispersion,
                              rng)
        return counts, position

    n = spec.cells_per_sample
    cell_type = rng.choice(np.array(list(comp)), size=n, p=np.array(list(comp.values())))
    status = rng.choice(
        np.array(["ok", "low_quality", "doublet"]), size=n,
        p=[1 - spec.low_quality_fraction - spec.doublet_fraction,
           spec.low_quality_fraction, spec.doublet_fraction],
    )
    kinds, shares = list(spec.doublet_kind_shares), list(spec.doublet_kind_shares.values())
    rows, records = [], []
    for ct, st in zip(cell_type, status, strict=True):
        ct = str(ct)
        record = {"doublet_partner": "", "doublet_kind": "", "doublet_gain": np.nan}
        if st == "low_quality":
            counts, position = one_cell(ct, rng.uniform(0.04, 0.15), rng.uniform(0.3, 0.7))
        elif st == "doublet":
            ct, partner, kind = draw_doublet_pair(str(rng.choice(kinds, p=shares)), comp, rng)
            first, position = one_cell(ct, 1.0, _healthy_mito_fraction(ct, rng))
            second, _ = one_cell(partner, 1.0, _healthy_mito_fraction(partner, rng))
            gain = float(rng.uniform(*spec.doublet_gain_range))
            counts = rng.binomial(first + second, gain / 2.0)
            record = {"doublet_partner": partner, "doublet_kind": kind, "doublet_gain": gain}
        else:
            counts, position = one_cell(ct, 1.0, _healthy_mito_fraction(ct, rng))
        rows.append(counts)
        records.append({"cell_type": ct, "low_quality": st == "low_quality",
                        "doublet": st == "doublet", **record,
                        "trajectory_position": position})
    return sp.csr_matrix(np.vstack(rows).astype(np.int32)), pd.DataFrame(records)


def simulate_demo(
    programme_sets: Mapping[str, Sequence[str]],
    marker_sets: Mapping[str, Sequence[str]],
    spec: DemoSpec | None = None,
) -> tuple[DemoModel, list[tuple[dict, sp.csr_matrix, pd.DataFrame]]]:
    """Simulate every sample in memory: the model and, per sample, its sheet row (without
    path and format), counts and per-cell truth (with ``sample``, ``barcode``, ``batch``)."""
    model, samples = _simulation(programme_sets, marker_sets, spec or DemoSpec())
    return model, list(samples)


def _simulation(programme_sets: Mapping[str, Sequence[str]],
                marker_sets: Mapping[str, Sequence[str]], spec: DemoSpec
                ) -> tuple[DemoModel, Iterator[tuple[dict, sp.csr_matrix, pd.DataFrame]]]:
    """The model and an iterator simulating one sample after the other (what
    :func:`simulate_demo` lists; the same random draws in the same order)."""
    rng = np.random.default_rng(spec.seed)
    model = DemoModel(spec, programme_sets, marker_sets, rng)

    def samples() -> Iterator[tuple[dict, sp.csr_matrix, pd.DataFrame]]:
        for tissue in spec.tissues:
            for condition in spec.conditions:
                for rep in range(1, spec.replicates + 1):
                    sample = f"{tissue}_{condition}_{rep}"
                    batch = batch_of(spec, tissue, condition, rep)
                    counts, truth = simulate_sample(model, tissue, condition, batch, rng)
                    truth.insert(0, "batch", batch)
                    truth.insert(0, "barcode", barcodes(counts.shape[0], rng))
                    truth.insert(0, "sample", sample)
                    row = {"sample": sample, "tissue": tissue, "condition": condition,
                           "replicate": rep, "batch": batch, "species": "mouse"}
                    yield row, counts, truth

    return model, samples()


def generate_demo(
    outdir: str | Path,
    programme_sets: Mapping[str, Sequence[str]],
    marker_sets: Mapping[str, Sequence[str]],
    spec: DemoSpec | None = None,
) -> pd.DataFrame:
    """Write the demo data set into ``outdir`` and return its sample sheet.

    ``outdir`` receives one input per sample (format per tissue/condition from
    ``spec.formats``), ``samples.tsv`` (with a ``batch`` column) and the truth files of
    :func:`mscflow.demo.truth.write_truth`.
    """
    spec = spec or DemoSpec()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    model, samples = _simulation(programme_sets, marker_sets, spec)
    sheet_rows, truths = [], []
    for row, counts, truth in samples:  # one sample's counts in memory at a time
        fmt = spec.formats[f"{row['tissue']}_{row['condition']}"]
        target, sheet_fmt = write_sample(outdir, row["sample"], fmt, counts,
                                         truth["barcode"].tolist(), model.genes)
        sheet_rows.append({**row, "path": str(target), "format": sheet_fmt,
                           "layer": "counts" if sheet_fmt == "h5ad" else ""})
        truths.append(truth)
    sheet = pd.DataFrame(sheet_rows)
    write_truth(outdir, model, programme_sets, truths, sheet)
    sheet.to_csv(outdir / "samples.tsv", sep="\t", index=False)
    return sheet
