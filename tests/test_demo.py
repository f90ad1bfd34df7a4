"""The demo generator: deterministic, all formats, and the sheet the config ships."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from mscflow.demo import DemoSpec, generate_demo
from mscflow.genesets import read_gmt
from mscflow.io import read_sample

REPO = Path(__file__).resolve().parents[1]


def _generate(root: Path) -> pd.DataFrame:
    sets = REPO / "resources" / "genesets"
    return generate_demo(root / "resources" / "demo", read_gmt(sets / "programmes_mouse.gmt"),
                         read_gmt(sets / "celltype_markers_mouse.gmt"),
                         DemoSpec(cells_per_sample=120))


def _digests(folder: Path) -> dict[str, str]:
    """Hashes of the generated files (the sheet holds absolute paths; h5ad is checked by
    reading it back)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix != ".h5ad" and p.name != "samples.tsv"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("demo")
    return root, _generate(root)


def test_sheet_is_the_one_the_config_ships(demo, monkeypatch) -> None:
    root, sheet = demo
    shipped = pd.read_csv(REPO / "config" / "samples.tsv", sep="\t", dtype=str,
                          keep_default_na=False)
    written = pd.read_csv(root / "resources" / "demo" / "samples.tsv", sep="\t", dtype=str,
                          keep_default_na=False)
    written["path"] = written["path"].str.replace(str(root) + "/", "", regex=False)
    pd.testing.assert_frame_equal(written, shipped)
    assert set(sheet["format"]) == {"10x_mtx", "10x_h5", "h5ad"}


def test_every_sample_reads_back_with_its_truth(demo) -> None:
    root, sheet = demo
    truth = pd.read_csv(root / "resources" / "demo" / "truth.tsv.gz", sep="\t")
    for _, row in sheet.iterrows():
        adata = read_sample(row["path"], row["format"], sample=row["sample"],
                            layer=row["layer"] or None)
        cells = truth[truth["sample"] == row["sample"]]
        assert adata.n_obs == len(cells) == 120
        assert list(adata.obs_names) == cells["barcode"].tolist()
        assert {"Cd68", "Mertk", "Il10", "mt-Co1"} <= set(adata.var_names)
    assert truth["low_quality"].mean() == pytest.approx(0.06, abs=0.03)
    assert truth["doublet"].mean() == pytest.approx(0.05, abs=0.03)


def test_generator_is_deterministic(demo, tmp_path: Path) -> None:
    root, _ = demo
    _generate(tmp_path)
    assert _digests(tmp_path / "resources" / "demo") == _digests(root / "resources" / "demo")
