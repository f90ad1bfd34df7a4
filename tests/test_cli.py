"""The ``mscflow`` command: ``mscflow samplesheet`` writes the sheet of a multi-sample h5ad
(tests/data/public/tm_lung_cellxgene.h5ad, the CELLxGENE layout of the Tabula Muris
channel) that the workflow's checks accept; a wrong key is a one-line error listing the
columns."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO

from mscflow.cli import build_sheet, main
from mscflow.errors import SampleSheetError

CELLXGENE = REPO / "tests" / "data" / "public" / "tm_lung_cellxgene.h5ad"
LOOM = REPO / "tests" / "data" / "public" / "tm_lung_velocyto.loom"
CXG_OPTIONS = ["--condition-key", "condition", "--tissue-key", "tissue", "--layer", "raw",
               "--var-symbols", "feature_name"]


def _mscflow() -> str:
    """The installed console script (pip install -e . puts it beside the interpreter)."""
    return shutil.which("mscflow", path=str(Path(sys.executable).parent)) or "mscflow"


def test_console_script_writes_a_sheet_the_workflow_accepts(tmp_path: Path) -> None:
    out = tmp_path / "config" / "samples.tsv"
    proc = subprocess.run([_mscflow(), "samplesheet", str(CELLXGENE), "--sample-key",
                           "donor_id", *CXG_OPTIONS, "--keep-obs", "cell_type", "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "4 samples, 625 cells" in proc.stdout
    sheet = pd.read_csv(out, sep="\t", dtype=str, keep_default_na=False)
    assert sheet["sample"].tolist() == ["D1", "D2", "D3", "D4"]
    assert sheet["obs_filter"].tolist() == [f"donor_id=D{i}" for i in range(1, 5)]
    assert sheet["condition"].tolist() == ["control", "control", "pseudo_treated",
                                           "pseudo_treated"]
    assert sheet["replicate"].tolist() == ["1", "2", "1", "2"]
    assert set(sheet["tissue"]) == {"lung"} and set(sheet["species"]) == {"mouse"}
    assert set(sheet["layer"]) == {"raw"} and set(sheet["var_symbols"]) == {"feature_name"}
    assert set(sheet["keep_obs"]) == {"cell_type"} and set(sheet["format"]) == {"h5ad"}
    from mscflow.inputs.samplesheet import check_sample_files, check_samples, read_sample_sheet

    written = read_sample_sheet(out)
    check_samples(written, sheet_path=str(out))
    check_sample_files(written, sheet_path=str(out))
    assert not list(out.parent.glob(".*")), "no check file left behind"


def test_wrong_key_is_one_line_listing_the_columns(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "samples.tsv"
    out.write_text("an earlier sheet\n")
    code = main(["samplesheet", str(CELLXGENE), "--sample-key", "donor", *CXG_OPTIONS,
                 "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "--sample-key 'donor': no such obs column" in err
    assert "did you mean 'donor_id'?" in err and "Available columns: donor_id, condition" in err
    assert out.read_text() == "an earlier sheet\n", "an earlier sheet is never lost"
    code = main(["samplesheet", str(CELLXGENE), "--sample-key", "donor_id", "--layer", "raw",
                 "--var-symbols", "gene_name", "--tissue", "lung", "-o", str(out)])
    assert code == 1 and "var column 'gene_name' (`var_symbols`) not in" in capsys.readouterr().err


def test_several_keys_constants_and_mixed_values() -> None:
    sheet = build_sheet(CELLXGENE, sample_keys=["donor_id", "cell_type"], tissue="lung",
                        species="mouse", layer="raw", var_symbols="feature_name")
    assert len(sheet) > 20 and set(sheet["condition"]) == {"control"}
    row = sheet[sheet["sample"] == "D1_alveolar_macrophage"].iloc[0]
    assert row["obs_filter"] == "donor_id=D1;cell_type=alveolar macrophage"
    assert sum(sheet.attrs["n_cells"].values()) == 625
    with pytest.raises(SampleSheetError, match="sample 'D1' has several values"):
        build_sheet(CELLXGENE, sample_keys=["donor_id"], tissue="lung", layer="raw",
                    var_symbols="feature_name", condition_key="cell_type")
    with pytest.raises(SampleSheetError, match="give --tissue-key COLUMN"):
        build_sheet(CELLXGENE, sample_keys=["donor_id"], layer="raw",
                    var_symbols="feature_name")
    with pytest.raises(SampleSheetError, match=r"no such obs column .*columns: \(none\)"):
        build_sheet(LOOM, sample_keys=["CellID"], tissue="lung")
