"""The demo's planted truth, written beside its data (see README "The demo").

Expected expression comes from :meth:`mscflow.demo.simulate.DemoModel.expected_profile` (mean
relative expression of a cell type before batch effects, averaged over the liver continuum),
so every table states what a test with infinitely many cells would see.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from mscflow.demo.formats import write_gzip
from mscflow.demo.model import (
    BRIDGING_LIGANDS,
    IL10_RECEIVERS,
    LINEAGE,
    LIVER,
    LUNG,
    MACROPHAGES,
    SIMILAR_PAIRS,
    TAM_RECEPTORS,
    TISSUE_COMPOSITION,
    DemoModel,
)
from mscflow.io import write_table_atomic, write_text_atomic

# A set counts as planted when at least this share of its genes carries a planted fold in the
# cell type, and as unchanged when none does and its expected shift stays below UNCHANGED_SHIFT.
PLANTED_FRACTION = 0.5
UNCHANGED_SHIFT = 0.05
# Genes moved by the MSC shift along the liver continuum alone are listed from this fold on.
POSITION_SHIFT_FOLD = 1.2


def contrast_pairs(model: DemoModel) -> list[tuple[str, str, str]]:
    """(tissue, condition, reference) of every planted comparison."""
    spec = model.spec
    return [(t, c, spec.conditions[0]) for t in spec.tissues for c in spec.conditions[1:]]


def expected_log2_folds(model: DemoModel, tissue: str, condition: str, reference: str,
                        cell_type: str) -> np.ndarray:
    """log2 of the expected relative expression, condition over reference (NaN for mito)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # mitochondrial genes are 0 / 0
        ratio = (model.expected_profile(tissue, condition, cell_type)
                 / model.expected_profile(tissue, reference, cell_type))
        return np.where(model.is_mito, np.nan, np.log2(ratio))


def gene_effects_table(model: DemoModel) -> pd.DataFrame:
    """Per tissue x cell type x gene: the planted fold (product of the effects), the expected
    fold of its mean expression, and which effects made it. On the liver continuum, genes the
    MSC shift of positions alone moves by at least POSITION_SHIFT_FOLD are listed too
    (effect ``position_shift``, planted fold 1)."""
    rows = []
    for tissue, condition, reference in contrast_pairs(model):
        for cell_type in TISSUE_COMPOSITION[tissue]:
            fold = model.folds.get((tissue, cell_type), np.ones(len(model.genes)))
            lfc = expected_log2_folds(model, tissue, condition, reference, cell_type)
            shifted = np.abs(np.nan_to_num(lfc)) >= np.log2(POSITION_SHIFT_FOLD)
            moved = shifted & model.on_lineage(tissue, cell_type)
            for i in np.flatnonzero((fold != 1) | moved):
                gene = model.genes[i]
                names = [e.name for e in model.effects if e.tissue == tissue
                         and cell_type in e.cell_types and gene in e.genes]
                rows.append({"tissue": tissue, "condition": condition, "reference": reference,
                             "cell_type": cell_type, "gene": gene, "fold": float(fold[i]),
                             "expected_fold": float(2 ** lfc[i]),
                             "effects": ",".join(names) or "position_shift"})
    return pd.DataFrame(rows)


def score_effects_table(model: DemoModel, gene_sets: Mapping[str, Sequence[str]]
                        ) -> pd.DataFrame:
    """Per tissue x cell type x programme set: how many of its genes carry a planted fold,
    the expected shift of its score (mean log2 fold of its genes minus the median gene's,
    as a score against control genes sees it) and the status a test should meet:
    ``planted`` (found, up), ``unchanged`` (called at most at the nominal rate) or
    ``partial`` (neither)."""
    rows = []
    for tissue, condition, reference in contrast_pairs(model):
        for cell_type in TISSUE_COMPOSITION[tissue]:
            fold = model.folds.get((tissue, cell_type), np.ones(len(model.genes)))
            lfc = expected_log2_folds(model, tissue, condition, reference, cell_type)
            relative = lfc - np.nanmedian(lfc)
            for name, members in gene_sets.items():
                idx = [model.index[g] for g in dict.fromkeys(members) if g in model.index]
                n_planted = int((fold[idx] != 1).sum())
                shift = float(np.mean(relative[idx]))
                fraction = n_planted / len(idx)
                status = ("planted" if fraction >= PLANTED_FRACTION
                          else "unchanged" if n_planted == 0 and abs(shift) < UNCHANGED_SHIFT
                          else "partial")
                rows.append({"tissue": tissue, "condition": condition, "reference": reference,
                             "cell_type": cell_type, "gene_set": name, "n_genes": len(idx),
                             "n_planted_genes": n_planted, "planted_fraction": fraction,
                             "expected_log2_shift": round(shift, 6), "status": status})
    return pd.DataFrame(rows)


def interaction_axes(model: DemoModel) -> list[tuple[str, str, str, tuple[str, ...],
                                                      tuple[str, ...]]]:
    """(tissue, sender, receiver, ligands, receptors) of the planted signalling axes, with
    LIANA's mouseconsensus names (complex subunits joined by '_')."""
    axes = []
    if LIVER in model.spec.tissues:
        axes += [(LIVER, "momf", receiver, ("Il10",), ("Il10ra_Il10rb",))
                 for receiver in IL10_RECEIVERS]
    if LUNG in model.spec.tissues:
        axes.append((LUNG, model.spec.bridging_sender, "alveolar_macrophage",
                     BRIDGING_LIGANDS, TAM_RECEPTORS))
    return axes


def interactions_table(model: DemoModel) -> pd.DataFrame:
    """Per planted ligand-receptor pair: the expected fold of the ligand in the sender and of
    the receptor in the receiver (a complex: its least raised subunit), condition over
    reference."""
    rows = []
    for tissue, condition, reference in contrast_pairs(model):
        for axis_tissue, sender, receiver, ligands, receptors in interaction_axes(model):
            if axis_tissue != tissue:
                continue
            sender_fold = 2 ** expected_log2_folds(model, tissue, condition, reference, sender)
            receiver_fold = 2 ** expected_log2_folds(model, tissue, condition, reference,
                                                     receiver)
            for ligand in ligands:
                for receptor in receptors:
                    subunits = [model.index[g] for g in receptor.split("_")]
                    rows.append({
                        "tissue": tissue, "condition": condition, "reference": reference,
                        "sender": sender, "receiver": receiver, "ligand": ligand,
                        "receptor": receptor, "direction": "up",
                        "ligand_fold": float(sender_fold[model.index[ligand]]),
                        "receptor_fold": float(receiver_fold[subunits].min()),
                    })
    return pd.DataFrame(rows)


def programme_fraction_table(model: DemoModel, gene_sets: Mapping[str, Sequence[str]]
                             ) -> pd.DataFrame:
    """Per gene set: the fraction of its genes raised in macrophages by the MSC effect."""
    raised = {g for e in model.effects if e.name == "macrophage_programme" for g in e.genes}
    return pd.DataFrame({"gene_set": list(gene_sets), "planted_gene_fraction": [
        float(np.mean([g in raised for g in members])) for members in gene_sets.values()]})


def spec_record(model: DemoModel, sheet: pd.DataFrame) -> dict:
    """Every parameter of the demo plus the derived design (batches, effects, pairs)."""
    spec = model.spec
    meta = asdict(spec)
    meta["formats"] = dict(spec.formats)
    meta["doublet_kind_shares"] = dict(spec.doublet_kind_shares)
    meta["macrophage_types_with_programme_effect"] = list(MACROPHAGES)
    meta["composition"] = TISSUE_COMPOSITION
    meta["sample_batches"] = dict(zip(sheet["sample"], sheet["batch"], strict=True))
    meta["batch_shifted_genes"] = int(len(model.batch_genes))
    meta["batch_shifted_gene_share_of_all"] = float(len(model.batch_genes) / len(model.genes))
    meta["similar_pairs"] = [list(p) for p in SIMILAR_PAIRS]
    meta["lineage"] = {"tissue": LIVER, "cell_types": list(LINEAGE),
                       "cell_type_rule": "classical_monocyte for t < 0.5, momf above",
                       "il10_rise_from": 2 / 3}
    meta["gene_effects"] = [asdict(e) for e in model.effects]
    return meta


def write_truth(outdir: Path, model: DemoModel, gene_sets: Mapping[str, Sequence[str]],
                truths: Sequence[pd.DataFrame], sheet: pd.DataFrame) -> None:
    """Write ``truth.tsv.gz`` (per cell: sample, barcode, batch, cell_type, low_quality,
    doublet, doublet_partner, doublet_kind, doublet_gain, trajectory_position),
    ``planted_effects.tsv``, ``planted_gene_effects.tsv``, ``planted_score_effects.tsv``,
    ``planted_interactions.tsv`` and ``spec.json``."""
    # not write_table_atomic: its gzip header holds the random temporary name, so reruns
    # would differ; the demo folder is one Snakemake output, removed when the job fails
    write_gzip(outdir / "truth.tsv.gz",
               pd.concat(truths, ignore_index=True).to_csv(sep="\t", index=False).encode())
    write_table_atomic(programme_fraction_table(model, gene_sets),
                       outdir / "planted_effects.tsv")
    write_table_atomic(gene_effects_table(model), outdir / "planted_gene_effects.tsv",
                       float_format="%.6g")
    write_table_atomic(score_effects_table(model, gene_sets),
                       outdir / "planted_score_effects.tsv", float_format="%.6g")
    write_table_atomic(interactions_table(model), outdir / "planted_interactions.tsv",
                       float_format="%.6g")
    meta = spec_record(model, sheet)
    meta["planted_set_rule"] = {"planted_fraction_at_least": PLANTED_FRACTION,
                                "unchanged_shift_below": UNCHANGED_SHIFT,
                                "position_shift_fold_listed_from": POSITION_SHIFT_FOLD,
                                "lineage": list(LINEAGE)}
    write_text_atomic(json.dumps(meta, indent=2, sort_keys=True) + "\n", outdir / "spec.json")
