"""The run's gene-set library through the workflow: the sets scored are the sets tested."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import run_snakemake, small_workdir

LUNG = ["lung_control_1", "lung_control_2", "lung_MSC_1", "lung_MSC_2"]


@pytest.mark.workflow
def test_set_excluded_by_scoring_sets_is_neither_scored_nor_tested(
        small_inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    """An extra GMT holds a set none of whose genes are in the data; `scoring.sets` leaves it
    out, so the whole run reaches GSEA (before the library, GSEA re-read the GMT and
    stopped on that set)."""
    import yaml

    programmes = yaml.safe_load((Path(__file__).parents[2] / "config/config.yaml").read_text())
    shipped = Path(__file__).parents[2] / programmes["genesets"]["programmes"]["mouse"]
    names = [line.split("\t", 1)[0] for line in shipped.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    chosen = [n for n in names if n in ("pan_macrophage", "efferocytosis_combined",
                                        "il10_stat3_response", "il10_ligand_receptor")]
    workdir = small_workdir(tmp_path / "w", small_inputs, LUNG, {
        "genesets": {"extra": [{"path": "absent.gmt", "species": "mouse"}]},
        "scoring": {"sets": chosen},
        "contrasts": [{"name": "lung_msc", "tissue": "lung", "condition": "MSC",
                       "reference": "control"}],
        "contrast_settings": {"gsea": {"permutations": 100}},
    })
    (workdir / "absent.gmt").write_text("absent_set\tgenes not in the data\tNope1\tNope2\tNope3\n")
    run_snakemake(workdir, "--cores", "2", "results/contrasts/gsea.tsv",
                  "results/contrasts/plots/gsea_lung_msc.png")
    library = json.loads((workdir / "results/genesets/library.json").read_text())
    assert sorted(library["programmes"]) == sorted(chosen)
    scored = pd.read_parquet(workdir / "results/scores/scores.parquet").columns
    assert sorted(scored) == sorted(chosen)
    gsea = pd.read_csv(workdir / "results/contrasts/gsea.tsv", sep="\t")
    assert set(gsea["gene_set"]) == set(chosen)
    assert (gsea["status"] == "tested").any()
    report = pd.read_csv(workdir / "results/genesets/gene_set_report.tsv", sep="\t")
    assert "absent_set" not in set(report["set"])
    assert {"programme", "marker"} == set(report["kind"])
