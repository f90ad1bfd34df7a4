"""The communication stage on the demo run: planted IL-10 and PS-receptor axes found, few
calls with permuted condition labels, the report items, and a human run of a demo sample
mapped to human symbols."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mscflow.communication.contrast import FAMILY_FOCUS, interaction_tests
from mscflow.communication.sample import (
    CommunicationSettings,
    communication_sample,
    load_resource,
    read_sample_cells,
    resolve_focus,
)
from mscflow.contrast import ContrastSettings, parse_contrasts, permute_conditions
from mscflow.inputs.samplesheet import read_sample_sheet

COMM = Path("results/communication")


def interactions(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / COMM / "interactions.parquet")


def planted(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "resources/demo/planted_interactions.tsv", sep="\t")


def calls(table: pd.DataFrame, tissue: str, sender: str, receiver: str, ligand: str,
          receptor: str) -> pd.Series:
    hit = table[(table["tissue"] == tissue) & (table["sender"] == sender)
                & (table["receiver"] == receiver) & (table["ligand"] == ligand)
                & (table["receptor"] == receptor) & (table["metric"] == "lr_means")]
    assert len(hit) == 1, (tissue, sender, receiver, ligand, receptor, len(hit))
    return hit.iloc[0]


def test_liver_momf_to_nk_il10_is_found_up_with_the_response(demo_run: Path) -> None:
    table = interactions(demo_run)
    row = calls(table, "liver", "momf", "nk_cell", "Il10", "Il10ra_Il10rb")
    assert row["fdr_family"] == FAMILY_FOCUS and row["focus_axis"] == "IL-10"
    assert row["status"] == "tested" and row["significant"] and row["effect"] > 0, row
    assert row["padj"] < 0.05
    # the receiver's IL-10/STAT3 response (planted in NK cells) beside the interaction
    assert row["response_set"] == "il10_stat3_response"
    assert row["response_effect"] > 0 and row["response_padj"] < 0.05, row


def test_every_planted_axis_is_found_up(demo_run: Path) -> None:
    """Every planted pair the resource holds (liver IL-10 to NK cells and neutrophils; lung
    Gas6/Pros1 from the bridging sender to alveolar macrophages' Mertk/Axl) is up at FDR
    0.05."""
    table = interactions(demo_run)
    truth = planted(demo_run)
    resource = load_resource("mouseconsensus")
    known = set(zip(resource["ligand"], resource["receptor"], strict=True))
    truth = truth[[(lig, rec) in known for lig, rec in zip(truth["ligand"], truth["receptor"],
                                                             strict=True)]]
    assert {"liver", "lung"} <= set(truth["tissue"])
    missed = []
    for t in truth.itertuples():
        row = calls(table, t.tissue, t.sender, t.receiver, t.ligand, t.receptor)
        up = row["significant"] and row["effect"] > 0
        if t.direction != "up" or not up:
            missed.append((t.tissue, t.sender, t.receiver, t.ligand, t.receptor,
                           row["effect"], row["padj"], row["status"]))
    assert not missed, missed
    lung = truth[truth["tissue"] == "lung"]
    assert set(lung["receptor"]) & {"Mertk", "Axl"}


def test_permuted_condition_labels_call_at_most_5_percent(demo_run: Path) -> None:
    """Condition labels permuted within tissue (balanced, three permutations): at most 5 %
    of the tested interactions are called."""
    import yaml

    config = yaml.safe_load((demo_run / "config/config.yaml").read_text())
    sheet = read_sample_sheet(demo_run / config["samples"])
    contrasts = parse_contrasts(config["contrasts"], sheet)
    expr = pd.concat([pd.read_parquet(p) for p in
                      sorted((demo_run / COMM / "per_sample").glob("*_expression.parquet"))])
    settings = CommunicationSettings.from_config({}, seed=0)
    resource = load_resource("mouseconsensus")
    focus = resolve_focus(settings.axes, resource, "mouseconsensus",
                          genes=expr["gene"].unique()).pairs
    fractions = []
    for seed in range(3):
        permuted = permute_conditions(sheet, seed)
        table, _ = interaction_tests(expr, permuted, contrasts, ContrastSettings.from_config({}),
                                     settings, resource, focus)
        tested = table[table["status"] == "tested"]
        assert len(tested) > 1000
        fractions.append(float(tested["significant"].mean()))
    assert max(fractions) <= 0.05, fractions


def test_outputs_report_items_and_summary(demo_run: Path) -> None:
    for name in ("interactions.tsv", "focus_interactions.tsv", "focus_per_sample.tsv",
                 "skipped.tsv", "cell_types.tsv", "focus_pairs.tsv"):
        assert (demo_run / COMM / name).stat().st_size > 0, name
    usage = pd.read_csv(demo_run / COMM / "cell_types.tsv", sep="\t")
    assert usage["used"].any() and len(usage) >= 12 * 8
    pairs = pd.read_csv(demo_run / COMM / "focus_pairs.tsv", sep="\t")
    assert (pairs["status"] == "used").sum() == 10
    for contrast in ("liver_MSC_vs_control", "lung_MSC_vs_control"):
        for kind in ("dotplot", "heatmap"):
            png = demo_run / COMM / "plots" / f"focus_{kind}_{contrast}.png"
            assert png.read_bytes()[:4] == b"\x89PNG", png
    samples = pd.read_csv(demo_run / "results/report/samples.tsv", sep="\t")["sample"]
    for sample in samples:
        liana = pd.read_parquet(demo_run / COMM / "per_sample" / f"{sample}.parquet")
        assert {"magnitude_rank", "specificity_rank", "lr_means", "lr_props"} <= set(
            liana.columns)
    focus = pd.read_csv(demo_run / COMM / "focus_interactions.tsv", sep="\t")
    assert (focus["fdr_family"] == FAMILY_FOCUS).all()
    summary = pd.read_csv(demo_run / "results/contrasts/summary.tsv", sep="\t")
    rows = summary[summary["analysis"] == "communication"]
    assert len(rows) == 2 and (rows["n_tested"] > 0).all()


def test_ortholog_mapped_demo_sample_runs_with_the_human_resource(demo_run: Path) -> None:
    from mscflow.genesets import ortholog_lookup, read_orthologs

    cells = read_sample_cells(demo_run / "results/annotate/annotated.h5ad", "liver_MSC_1")
    mapping, _ = ortholog_lookup(read_orthologs(
        demo_run / "resources/orthologs/mouse_human_hcop.tsv.gz"), "mouse", "human")
    human = [mapping.get(g) for g in cells.var_names]
    keep = np.array([h is not None for h in human])
    names = pd.Index([h for h in human if h is not None])
    keep[np.flatnonzero(keep)[names.duplicated()]] = False
    cells = cells[:, keep].copy()
    cells.var_names = [mapping[g] for g in cells.var_names]
    settings = CommunicationSettings.from_config({"n_perms": None}, seed=0)
    name = settings.resource_for("human")
    assert name == "consensus"
    out = communication_sample(cells, load_resource(name), settings, sample="liver_MSC_1",
                               resource_name=name)
    liana = out["liana"]
    il10 = liana[(liana["sender"] == "momf") & (liana["ligand"] == "IL10")]
    assert "IL10RA_IL10RB" in set(il10["receptor"]), sorted(set(liana["ligand"]))[:20]


def test_unknown_resource_stops_the_stage_with_its_name(demo_run: Path, tmp_path: Path) -> None:
    """A resource liana does not ship: the sample job stops with one line naming it and the
    shipped resources, and writes nothing (run beside the demo, on a copy of its cells)."""
    import shutil

    from helpers import make_workdir, run_snakemake

    workdir = make_workdir(tmp_path / "bad_resource",
                           {"communication": {"resource": "omnipath_full"}})
    (workdir / "results/annotate").mkdir(parents=True)
    shutil.copy(demo_run / "results/annotate/annotated.h5ad", workdir / "results/annotate")
    target = f"{COMM}/per_sample/liver_MSC_1.parquet"
    # the target goes first: --allowed-rules takes every name after it
    proc = run_snakemake(workdir, target, "--cores", "1", "--allowed-rules",
                         "communication_sample", check=False)
    assert proc.returncode != 0
    log = (workdir / "logs/communication/sample_liver_MSC_1.log").read_text()
    assert "communication.resource 'omnipath_full' is not a resource liana" in log, log
    assert "'mouseconsensus'" in log and "Traceback" not in log
    assert not (workdir / target).exists()
