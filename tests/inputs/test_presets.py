"""Presets resolved from public records, against GEO-shaped trees on a loopback server.

Real data: the Tabula Muris lung channel (tests/data) split into three pseudo-samples in
GEO's legacy 10x format, served as a ``_RAW.tar`` of a made-up series. The shipped presets
are resolved against stand-ins of their records (GEO GSE136103: the 26 GSM accessions,
titles and supplementary file names as the research notes give them; the characteristic
values are placeholders) and, as far as this machine reaches, against the real hosts.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
import yaml
from helpers import make_workdir, run_snakemake
from httpserver import (
    FaultyServer,
    filelist_txt,
    listing_html,
    series_matrix,
    serve_geo_series,
)

from mscflow.errors import ConfigError
from mscflow.inputs import fetch, presets
from mscflow.inputs.lockfile import LockFile, check_cached, stamp_path
from mscflow.inputs.resolve import PresetError, RecordFile, RecordSample, sheet_rows
from mscflow.inputs.resolve.base import listing_links
from mscflow.inputs.resolve.geo import https_url, parse_filelist, parse_series_matrix, series_url

ROOT = Path(__file__).resolve().parents[2]
TM_LUNG = ROOT / "tests" / "data" / "tabula-muris-lung-10X_P7_8"
SHIPPED = ROOT / "config" / "presets"
GEO = "https://ftp.ncbi.nlm.nih.gov"
ACC = "GSE999001"
DESIGN = [("control", 1), ("MSC", 1), ("MSC", 2)]


# --------------------------------------------------------------------------- test record


@pytest.fixture(scope="module")
def pseudo_samples() -> dict[str, bytes]:
    """The Tabula Muris channel split into three GEO-style samples (GSM-prefixed, gzipped,
    legacy two-column genes.tsv), as members of a _RAW.tar."""
    mat = sp.csc_matrix(scipy.io.mmread(TM_LUNG / "matrix.mtx.gz"))
    with gzip.open(TM_LUNG / "barcodes.tsv.gz", "rb") as fh:
        barcodes = fh.read().splitlines()
    with gzip.open(TM_LUNG / "features.tsv.gz", "rb") as fh:
        genes = b"".join(b"\t".join(line.split(b"\t")[:2]) + b"\n"
                         for line in fh.read().splitlines())
    members = {}
    for i, cells in enumerate(np.array_split(np.arange(mat.shape[1]), 3), start=1):
        buf = io.BytesIO()
        scipy.io.mmwrite(buf, sp.coo_matrix(mat[:, cells].astype(np.int64)), field="integer")
        prefix = f"GSM99900{i}_lung_pseudo{i}_"
        members[prefix + "barcodes.tsv.gz"] = gzip.compress(
            b"\n".join(barcodes[j] for j in cells) + b"\n", compresslevel=1)
        members[prefix + "genes.tsv.gz"] = gzip.compress(genes, compresslevel=1)
        members[prefix + "matrix.mtx.gz"] = gzip.compress(buf.getvalue(), compresslevel=1)
    return members


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:  # GEO's _RAW.tar is a plain tar
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def geo_samples(members: dict[str, bytes] | None = None) -> list[dict]:
    """GSM annotations of the test series; each sample's own files when ``members``."""
    out = []
    for i, (condition, rep) in enumerate(DESIGN, start=1):
        gsm = f"GSM99900{i}"
        files = [f"ftp://ftp.ncbi.nlm.nih.gov/geo/samples/GSM999nnn/{gsm}/suppl/{name}"
                 for name in (members or {}) if name.startswith(gsm + "_")]
        out.append({"gsm": gsm, "title": f"Lung {condition} mouse {rep}",
                    "organism": "Mus musculus", "files": files,
                    "characteristics": {"tissue": "lung", "treatment": condition,
                                        "mouse id": f"m{i}"}})
    return out


PRESET_YAML = {
    "title": "test series: Tabula Muris lung split into three pseudo-samples",
    "source": {"type": "geo", "accession": ACC, "take": "series_tar"},
    "format": "10x_mtx",
    "select": {"organism": "^Mus musculus$",
               "title": r"^Lung (?P<cond>\w+) mouse (?P<rep>\d+)$"},
    "columns": {"sample": "lung_{cond|lower}_{rep}", "tissue": "{tissue}",
                "condition": "{cond|lower}", "replicate": "{rep}", "mouse": "{mouse_id}"},
    "expect": ["GSM999001", "GSM999002", "GSM999003"],
}


def write_preset(folder: Path, spec: dict, config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preset.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    if config is not None:
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def fetch_config(tmp_path: Path, mirror: str, **kw) -> dict:
    base = {"cache_dir": str(tmp_path / "cache"), "retries": 2, "backoff_s": 0.01,
            "max_backoff_s": 0.05, "connect_timeout_s": 2, "read_timeout_s": 5,
            "mirrors": {GEO: mirror}}
    return fetch.FetchSettings.from_config({**base, **kw}).to_config()


def download_all(resolved: presets.ResolvedPreset, fetch_cfg: dict) -> dict[str, Path]:
    """What the fetch_url jobs do, in-process; returns the cache path per key."""
    settings = fetch.FetchSettings.from_config(fetch_cfg)
    specs = fetch.url_samples(resolved.rows, pinned_by_lock=True)
    index = fetch.cache_index(specs, settings.cache_dir)
    for key, path in index.items():
        fetch.fetch_file(fetch.urls_for(specs, key), path, key, lock_path=resolved.lock.path,
                         samples=fetch.samples_for(specs, key), settings=settings)
    return index


# --------------------------------------------------------------------------- parsing


def test_series_matrix_fields_characteristics_and_files(pseudo_samples):
    text = gzip.decompress(series_matrix(geo_samples(pseudo_samples))).decode()
    samples = parse_series_matrix(text)
    assert [s.accession for s in samples] == ["GSM999001", "GSM999002", "GSM999003"]
    first = samples[0]
    assert first.fields["title"] == "Lung control mouse 1"
    assert first.fields["organism"] == "Mus musculus"
    assert first.fields["mouse_id"] == "m1" and first.fields["treatment"] == "control"
    assert [f.name for f in first.files] == [n for n in pseudo_samples
                                             if n.startswith("GSM999001_")]
    assert all(f.url.startswith("https://ftp.ncbi.nlm.nih.gov/geo/samples/") for f in first.files)
    assert https_url("ftp://ftp.ncbi.nlm.nih.gov/geo/x/GSM1_a_cd45+_m.mtx.gz") == \
        "https://ftp.ncbi.nlm.nih.gov/geo/x/GSM1_a_cd45%2B_m.mtx.gz"
    assert series_url("GSE136103").endswith("/geo/series/GSE136nnn/GSE136103")
    assert series_url("GSE123").endswith("/geo/series/GSEnnn/GSE123")
    with pytest.raises(PresetError, match="not a GEO series matrix"):
        parse_series_matrix("!Series_title\t\"x\"\n")


def test_filelist_and_listing(pseudo_samples):
    archive, members = parse_filelist(filelist_txt("GSE1_RAW.tar", pseudo_samples).decode())
    assert archive == "GSE1_RAW.tar" and len(members) == 9
    assert members[0].size == len(pseudo_samples[members[0].name])
    with pytest.raises(PresetError, match="not a GEO filelist"):
        parse_filelist("Name\tSize\n")
    assert listing_links(listing_html(["a_RAW.tar", "filelist.txt", "x+y.gz"]).decode()) == [
        "a_RAW.tar", "filelist.txt", "x+y.gz"]


# --------------------------------------------------------------------------- mapping


def _record(acc: str, title: str, names: list[str], organism: str = "Homo sapiens"):
    return RecordSample(acc, {"title": title, "organism": organism},
                        [RecordFile(n, f"https://h/{acc}/{n}") for n in names])


def test_mapping_templates_recode_species_and_file_choice():
    triplet = ["GSM1_h1_barcodes.tsv.gz", "GSM1_h1_genes.tsv.gz", "GSM1_h1_matrix.mtx.gz"]
    records = [_record("GSM1", "Healthy1_Cd45+", triplet),
               _record("GSM2", "Blood1", ["GSM2_b.h5"])]
    spec = {"format": "10x_mtx", "select": {"title": r"(?i)^(?P<g>healthy)(?P<d>\d)_cd45(?P<f>.)$"},
            "recode": {"f": {"+": "pos"}},
            "columns": {"sample": "{g|lower}{d}_{f}", "tissue": "liver", "condition": "{g|lower}",
                        "replicate": "{d}", "title": "{title|slug}"}}
    rows = sheet_rows(spec, records, "test")
    assert len(rows) == 1
    row = rows[0]
    assert (row["sample"], row["species"]) == ("healthy1_pos", "human")
    assert row["title"] == "Healthy1_Cd45"
    assert row["url"].split() == [f"https://h/GSM1/{n}" for n in
                                  ["GSM1_h1_barcodes.tsv.gz", "GSM1_h1_genes.tsv.gz",
                                   "GSM1_h1_matrix.mtx.gz"]]
    assert row["member"] == "" and row["record"] == "GSM1"
    cases = [
        ({**spec, "columns": {**spec["columns"], "sample": "{nope}"}}, "names field 'nope'"),
        ({**spec, "columns": {**spec["columns"], "sample": "{title}"}}, "is not allowed"),
        ({**spec, "select": {"title": "^zzz"}}, "matched none"),
        ({**spec, "expect": ["GSM1", "GSM9"]}, r"missing \['GSM9'\]"),
        ({**spec, "format": "10x_h5"}, "0 10x_h5 files instead of one"),
    ]
    for bad, message in cases:
        with pytest.raises(PresetError, match=message):
            sheet_rows(bad, records, "test")
    mouse = _record("GSM3", "Healthy3_Cd45+", triplet, organism="Mus musculus")
    with pytest.raises(PresetError, match="mix species"):
        sheet_rows({**spec, "columns": {**spec["columns"], "sample": "{accession}"}},
                   [*records, mouse], "test")


def test_tar_members_become_a_prefix_and_ambiguity_is_named(pseudo_samples):
    url = "https://h/GSE1_RAW.tar"
    files = [RecordFile(n, url, n) for n in pseudo_samples]
    spec = {"format": "10x_mtx", "columns": {"sample": "{accession}", "tissue": "lung",
                                             "condition": "c", "replicate": "1"}}
    records = [RecordSample(f"GSM99900{i}", {"organism": "Mus musculus"},
                            [f for f in files if f.name.startswith(f"GSM99900{i}_")])
               for i in (1, 2, 3)]
    rows = sheet_rows(spec, records, "test")
    assert [r["member"] for r in rows] == [f"GSM99900{i}_lung_pseudo{i}_" for i in (1, 2, 3)]
    assert {r["url"] for r in rows} == {url}
    doubled = RecordSample("GSM999001", {"organism": "Mus musculus"},
                           records[0].files + [RecordFile("GSM999001_raw_matrix.mtx.gz", url,
                                                          "GSM999001_raw_matrix.mtx.gz")])
    with pytest.raises(PresetError, match="set `file_pattern`"):
        sheet_rows(spec, [doubled], "test")
    assert sheet_rows({**spec, "file_pattern": "pseudo"}, [doubled], "test")[0]["member"] \
        == "GSM999001_lung_pseudo1_"


# --------------------------------------------------------------------------- resolve + lock


def test_resolve_pin_verify_and_refuse_a_changed_file(tmp_path, pseudo_samples, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = tar_of(pseudo_samples)
    write_preset(tmp_path / "presets" / "geo-test", PRESET_YAML)
    with FaultyServer() as srv:
        mirror = serve_geo_series(srv, ACC, geo_samples(), raw_tar=raw,
                                  raw_members=pseudo_samples)
        cfg = fetch_config(tmp_path, mirror)
        preset = presets.load_preset("geo-test", tmp_path / "presets")
        resolved = presets.resolve_preset(preset, cfg)
        sheet = pd.read_csv(resolved.sheet_path, sep="\t", dtype=str, keep_default_na=False)
        assert sheet["sample"].tolist() == ["lung_control_1", "lung_msc_1", "lung_msc_2"]
        assert sheet["mouse"].tolist() == ["m1", "m2", "m3"]
        assert set(sheet["url"]) == {f"{GEO}/geo/series/GSE999nnn/{ACC}/suppl/{ACC}_RAW.tar"}
        assert "3 samples (lung control: 1, lung msc: 2), 1 files, 0 pinned" in resolved.summary
        metadata_requests = srv.count()
        index = download_all(resolved, cfg)
        cached = next(iter(index.values()))
        pin = next(iter(LockFile(preset.folder / "lock.tsv").read().values()))
        assert (pin.file, pin.size, pin.sha256) == (f"{ACC}_RAW.tar", len(raw),
                                                    fetch.sha256_file(cached))
        assert stamp_path(cached).is_file()
        # a second resolution and download: no request at all, the cache verified by the lock
        again = presets.resolve_preset(preset, cfg)
        assert "1 files, 1 pinned" in again.summary and bool(again.files["cached"].iloc[0])
        download_all(again, cfg)
        assert srv.count() == metadata_requests + 1
        # a tampered cache file: detected before use, removed, downloaded again and verified
        cached.write_bytes(raw[:-10] + b"x" * 10)
        assert check_cached(cached, again.lock, again.rows[0]["url"]) == "removed"
        download_all(again, cfg)
        assert cached.read_bytes() == raw
        # the remote file changed: refused with both digests, nothing cached, lock unchanged
        changed = tar_of({**pseudo_samples, "GSM999001_extra.txt": b"new"})
        srv.add(f"/geo/series/GSE999nnn/{ACC}/suppl/{ACC}_RAW.tar", changed)
        fresh = fetch_config(tmp_path, mirror, cache_dir=str(tmp_path / "cache2"))
        with pytest.raises(fetch.ChecksumMismatch) as err:
            download_all(presets.resolve_preset(preset, fresh), fresh)
        message = str(err.value)
        assert all(s in message for s in (f"{ACC}_RAW.tar", pin.sha256, digest(changed),
                                          "update_lock"))
        assert LockFile(preset.folder / "lock.tsv").get(pin.url) == pin
        assert not any((tmp_path / "cache2").glob("url-*/*.tar"))
        # a deliberate refresh replaces the pin
        refresh = fetch_config(tmp_path, mirror, cache_dir=str(tmp_path / "cache2"),
                               update_lock=True)
        download_all(presets.resolve_preset(preset, refresh), refresh)
        assert LockFile(preset.folder / "lock.tsv").get(pin.url).sha256 == digest(changed)


def test_per_sample_files_and_read_only_preset_folder(tmp_path, pseudo_samples, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = {**PRESET_YAML, "source": {"type": "geo", "accession": ACC, "take": "sample"}}
    folder = write_preset(tmp_path / "presets" / "geo-test", spec)
    folder.chmod(0o555)
    files = {f"/geo/samples/GSM999nnn/{name.split('_')[0]}/suppl/{name}": data
             for name, data in pseudo_samples.items()}
    try:
        with FaultyServer() as srv:
            mirror = serve_geo_series(srv, ACC, geo_samples(pseudo_samples),
                                      sample_files=files, matrices=2)
            cfg = fetch_config(tmp_path, mirror)
            resolved = presets.resolve_preset(presets.load_preset("geo-test", folder.parent), cfg)
            assert resolved.lock.path == Path("results/preset/geo-test/lock.tsv")
            assert all(len(r["url"].split()) == 3 and r["member"] == "" for r in resolved.rows)
            index = download_all(resolved, cfg)
        assert len(LockFile(resolved.lock.path).read()) == 9
        assert not (folder / "lock.tsv").exists()
        specs = fetch.url_samples(resolved.rows, pinned_by_lock=True)
        spec1 = specs["lung_control_1"]
        out = fetch.unpack(spec1, [index[f.key] for f in spec1.files], tmp_path / "out")
        with gzip.open(out / "matrix.mtx.gz", "rt") as fh:
            size = next(line for line in fh if not line.startswith("%")).split()
        assert size[:2] == ["23433", "209"]  # genes x cells of pseudo-sample 1
    finally:
        folder.chmod(0o755)


def test_offline_stops_with_one_line_naming_host_and_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = write_preset(tmp_path / "presets" / "geo-test", PRESET_YAML)
    cfg = fetch_config(tmp_path, "http://unreachable-mirror.invalid")
    with pytest.raises(fetch.HostUnreachable) as err:
        presets.resolve_preset(presets.load_preset("geo-test", folder.parent), cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("cannot reach unreachable-mirror.invalid (its name does not resolve")
    assert f"/geo/series/GSE999nnn/{ACC}/matrix/" in message and "preset geo-test" in message


def test_preset_files_are_validated(tmp_path):
    folder = write_preset(tmp_path / "p", {**PRESET_YAML, "source": {"type": "geo",
                                                                     "accession": "E-MTAB-1"}})
    with pytest.raises(ConfigError, match=r"(?s)preset.yaml is invalid.*does not match"):
        presets.load_preset("p", tmp_path)
    write_preset(folder, PRESET_YAML, config={"species": "mouse"})
    with pytest.raises(ConfigError, match=r"(?s)config.yaml \(preset .p.\) is invalid.*.species."):
        presets.load_preset("p", tmp_path)
    write_preset(folder, PRESET_YAML, config={"samples": "x.tsv"})
    with pytest.raises(ConfigError, match="must not set `samples`"):
        presets.load_preset("p", tmp_path)
    write_preset(folder, PRESET_YAML, config={"qc": {"min_cells_per_sample": 7}})
    merged = presets.apply_preset({"preset": "p", "qc": {"min_counts": 1}},
                                  [tmp_path / "x", tmp_path],
                                  cli_overrides={"preset": "p", "qc": {"min_cells_per_sample": 9}})
    assert merged["qc"] == {"min_counts": 1, "min_cells_per_sample": 9}
    assert merged["samples"] == str(Path("results/preset/p/samples.tsv"))
    for name, message in [("../p", "may only hold"), ("nope", "not found")]:
        with pytest.raises(ConfigError, match=message):
            presets.load_preset(name, tmp_path)


# --------------------------------------------------------------------------- other records


def test_arrayexpress_and_cellxgene_records(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sdrf = ("Source Name\tCharacteristics[organism]\tCharacteristics[disease]\t"
            "Assay Name\tDerived Array Data File\n"
            "donor1\tHomo sapiens\tnormal\ta1\tdonor1.h5\n"
            "donor1\tHomo sapiens\tnormal\ta2\tdonor1.h5\n"
            "donor2\tHomo sapiens\tfibrosis\ta3\tdonor2.h5\n")
    collection = {"datasets": [
        {"dataset_id": "d1", "title": "Liver atlas", "cell_count": 10,
         "organism": [{"label": "Mus musculus"}], "tissue": [{"label": "liver"}],
         "assets": [{"filetype": "H5AD", "url": "https://datasets.example/v1.h5ad",
                     "filesize": 5}, {"filetype": "RDS", "url": "https://x/v1.rds"}]}]}
    with FaultyServer() as srv:
        srv.add("/biostudies/api/v1/studies/E-MTAB-9/info",
                json.dumps({"httpLink": srv.url("/fire/E-MTAB-9")}).encode())
        srv.add("/fire/E-MTAB-9/Files/E-MTAB-9.sdrf.txt", sdrf.encode())
        srv.add("/curation/v1/collections/" + "0" * 8 + "-0000-0000-0000-" + "0" * 12,
                json.dumps(collection).encode())
        cfg = fetch_config(tmp_path, srv.url(""), mirrors={
            "https://www.ebi.ac.uk": srv.url(""),
            "https://api.cellxgene.cziscience.com": srv.url("")})
        ae = write_preset(tmp_path / "p" / "ae", {
            "title": "ae", "source": {"type": "arrayexpress", "accession": "E-MTAB-9"},
            "format": "10x_h5", "columns": {"sample": "{source_name}", "tissue": "liver",
                                            "condition": "{disease}", "replicate": "1"}})
        rows = presets.resolve_preset(presets.load_preset("ae", ae.parent), cfg).rows
        assert [(r["sample"], r["condition"], r["species"]) for r in rows] == [
            ("donor1", "normal", "human"), ("donor2", "fibrosis", "human")]
        assert rows[0]["url"] == srv.url("/fire/E-MTAB-9/Files/donor1.h5")
        cz = write_preset(tmp_path / "p" / "cz", {
            "title": "cz", "source": {"type": "cellxgene",
                                      "collection": "0" * 8 + "-0000-0000-0000-" + "0" * 12},
            "format": "h5ad", "select": {"dataset_id": "^d1$"},
            "columns": {"sample": "{dataset_id}", "tissue": "{tissue}", "condition": "healthy",
                        "replicate": "1"}})
        rows = presets.resolve_preset(presets.load_preset("cz", cz.parent), cfg).rows
        assert [(r["sample"], r["tissue"], r["species"], r["url"]) for r in rows] == [
            ("d1", "liver", "mouse", "https://datasets.example/v1.h5ad")]


# --------------------------------------------------------------------------- shipped presets

# GSE136103 as the research notes give it (series-matrix-derived GSMs and file prefixes;
# titles from two independent sources, their case differs between samples).
RAMACHANDRAN_TITLES = [
    "Healthy1_Cd45+", "Healthy1_Cd45-A", "Healthy1_Cd45-B", "Healthy2_Cd45+", "Healthy2_Cd45-",
    "Healthy3_Cd45+", "Healthy3_Cd45-A", "Healthy3_Cd45-B", "Healthy4_Cd45+", "Healthy4_Cd45-",
    "Healthy5_Cd45+", "Cirrhotic1_Cd45+", "Cirrhotic1_Cd45-A", "Cirrhotic1_Cd45-B",
    "Cirrhotic2_Cd45+", "Cirrhotic2_CD45-", "Cirrhotic3_CD45+", "Cirrhotic3_Cd45-",
    "Cirrhotic4_Cd45+", "Cirrhotic5_Cd45+", "Blood1", "Blood2", "Blood3", "Blood4",
    "Mouse_healthy", "Mouse_fibrotic",
]  # GSM4041150 ... GSM4041175, in this order


def _file_prefix(title: str) -> str:
    """GEO file prefix of a GSE136103 sample: healthy1_cd45+, cirrhotic2_cd45-, blood1."""
    return re.sub(r"_[cC][dD]45", "_cd45", title[0].lower() + title[1:])


def serve_ramachandran_standin(srv: FaultyServer) -> str:
    samples = []
    for i, title in enumerate(RAMACHANDRAN_TITLES):
        gsm, prefix = f"GSM{4041150 + i}", _file_prefix(title)
        mouse = prefix.startswith("mouse")
        samples.append({
            "gsm": gsm, "title": title, "organism": "Mus musculus" if mouse else "Homo sapiens",
            "characteristics": {"Sex": "Male", "cause of liver disease": "NAFLD" if "cirr" in
                                prefix else "none", "disease status": "placeholder",
                                "population": "PBMC" if "blood" in prefix else "liver"},
            "files": [f"ftp://ftp.ncbi.nlm.nih.gov/geo/samples/GSM4041nnn/{gsm}/suppl/"
                      f"{gsm}_{prefix}_{kind}" for kind in
                      ("barcodes.tsv.gz", "genes.tsv.gz", "matrix.mtx.gz")]})
    return serve_geo_series(srv, "GSE136103", samples, matrices=2)


def test_shipped_presets_are_documented_and_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = presets.list_presets(SHIPPED)
    assert names == ["ramachandran2019-liver", "tabula-muris-droplet"]
    index = (SHIPPED / "README.md").read_text()
    for name in names:
        readme = (SHIPPED / name / "README.md").read_text()
        assert name in index and "doi:10." in readme and "How the samples" in readme, name
        assert not (SHIPPED / name / "samples.tsv").exists()
    with FaultyServer() as srv:
        mirror = serve_ramachandran_standin(srv)
        cfg = fetch_config(tmp_path, mirror)
        rama = presets.resolve_preset(presets.load_preset("ramachandran2019-liver", SHIPPED), cfg)
    sheet = pd.DataFrame(rama.rows)
    assert sheet["sample"].tolist() == [f"{g}{d}_cd45pos" for g in ("healthy", "cirrhotic")
                                        for d in range(1, 6)]
    assert sheet.groupby("condition")["replicate"].nunique().to_dict() == {
        "cirrhotic": 5, "healthy": 5}
    assert set(sheet["species"]) == {"human"} and set(sheet["tissue"]) == {"liver"}
    first = sheet.iloc[0]["url"].split()
    assert first[0] == (f"{GEO}/geo/samples/GSM4041nnn/GSM4041150/suppl/"
                        "GSM4041150_healthy1_cd45%2B_barcodes.tsv.gz")
    assert rama.lock.path == SHIPPED / "ramachandran2019-liver" / "lock.tsv"
    tm = presets.resolve_preset(presets.load_preset("tabula-muris-droplet", SHIPPED), cfg)
    assert [r["sample"] for r in tm.rows][:1] == ["Lung-10X_P7_8"] and len(tm.rows) == 7
    assert {r["url"] for r in tm.rows} == {"https://figshare.com/ndownloader/files/10700167"}


def _standin_workdir(tmp_path: Path, srv: FaultyServer, pseudo: dict[str, bytes]) -> Path:
    """A working directory whose downloads go to stand-ins of the shipped presets' hosts,
    serving real data for each preset's first sample: pseudo-sample 1 (a third of the
    Tabula Muris channel) as GSM4041150's three files and as droplet.zip's
    Lung-10X_P7_8 folder (Cell Ranger v2, uncompressed)."""
    mirror = serve_ramachandran_standin(srv)
    for kind in ("barcodes.tsv", "genes.tsv", "matrix.mtx"):
        srv.add(f"/geo/samples/GSM4041nnn/GSM4041150/suppl/GSM4041150_healthy1_cd45%2B_{kind}"
                ".gz", pseudo[f"GSM999001_lung_pseudo1_{kind}.gz"])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for kind in ("barcodes.tsv", "genes.tsv", "matrix.mtx"):
            zf.writestr(f"droplet/Lung-10X_P7_8/{kind}",
                        gzip.decompress(pseudo[f"GSM999001_lung_pseudo1_{kind}.gz"]))
        zf.writestr("droplet/Liver-10X_P4_2/matrix.mtx", b"another channel")
    srv.add("/figshare/ndownloader/files/10700167", buf.getvalue())
    return make_workdir(tmp_path / "work", {"fetch": {
        "cache_dir": str(tmp_path / "cache"), "retries": 2, "backoff_s": 0.01,
        "mirrors": {GEO: mirror, "https://figshare.com": srv.url("/figshare")}}})


@pytest.mark.workflow
@pytest.mark.parametrize("name", presets.list_presets(SHIPPED))
def test_every_shipped_preset_reaches_the_fetch_step(tmp_path, name, pseudo_samples):
    """Against a stand-in of the record (loopback): `snakemake -n --config preset=NAME`
    resolves, validates and prints the sheet and plans the fetch jobs; the first sample is
    downloaded (pinned in the working directory's copy of the preset) and unpacked. Against
    the real host the run gets as far as this machine allows (offline: one line naming the
    host and the file)."""
    first = {"ramachandran2019-liver": "healthy1_cd45pos",
             "tabula-muris-droplet": "Lung-10X_P7_8"}[name]
    with FaultyServer() as srv:
        work = _standin_workdir(tmp_path, srv, pseudo_samples)
        proc = run_snakemake(work, "-n", "--config", f"preset={name}")
        out = proc.stdout + proc.stderr
        assert f"preset {name}" in out and "rule fetch_url:" in out, out[-3000:]
        assert "rule unpack_10x_mtx:" in out and "rule qc_sample:" in out
        sheet = pd.read_csv(work / f"results/preset/{name}/samples.tsv", sep="\t", dtype=str)
        assert len(sheet) == {"ramachandran2019-liver": 10, "tabula-muris-droplet": 7}[name]
        run_snakemake(work, "--cores", "2", f"results/fetched/{first}/10x_mtx", "--config",
                      f"preset={name}")
    pins = LockFile(work / f"config/presets/{name}/lock.tsv").read()
    assert len(pins) == {"ramachandran2019-liver": 3, "tabula-muris-droplet": 1}[name]
    with gzip.open(work / f"results/fetched/{first}/10x_mtx/barcodes.tsv.gz", "rt") as fh:
        assert len(fh.read().split()) == 209  # pseudo-sample 1 of the Tabula Muris channel
    real = make_workdir(tmp_path / "real", {"fetch": {
        "cache_dir": str(tmp_path / "cache-real"), "retries": 1}})
    proc = run_snakemake(real, "-n", "--config", f"preset={name}", check=False)
    out = proc.stdout + proc.stderr
    for error in ("ConfigError", "SampleSheetError", "PresetError", "Traceback (most"):
        assert error not in out, out[-3000:]
    if proc.returncode != 0:  # offline: the record's host is unreachable, said in one line
        assert "HostUnreachable" in out and "cannot reach " in out, out[-3000:]
    else:
        assert "rule fetch_url:" in out


# --------------------------------------------------------------------------- workflow


@pytest.mark.workflow
def test_geo_preset_runs_to_the_report_reuses_cache_and_refuses_changes(tmp_path, pseudo_samples):
    raw = tar_of(pseudo_samples)
    preset_config = {"contrasts": [], "qc": {"min_cells_per_sample": 20}}
    with FaultyServer() as srv:
        mirror = serve_geo_series(srv, ACC, geo_samples(), raw_tar=raw,
                                  raw_members=pseudo_samples)
        fetch_cfg = {"cache_dir": str(tmp_path / "cache"), "retries": 3, "backoff_s": 0.01,
                     "mirrors": {GEO: mirror}}
        work = make_workdir(tmp_path / "w1", {"fetch": fetch_cfg}, with_contrasts=False)
        write_preset(work / "config/presets/geo-test", PRESET_YAML, preset_config)
        # to the report: the run overview (sheet, QC, versions) and the annotated cells
        proc = run_snakemake(work, "--cores", "2", "results/report/run_overview.html",
                             "results/annotate/annotated.h5ad", "--config", "preset=geo-test")
        assert "3 samples (lung control: 1, lung msc: 2), 1 files, 0 pinned" in proc.stderr
        assert (work / "results/report/run_overview.html").is_file()
        qc = pd.read_csv(work / "results/qc/qc_summary.tsv", sep="\t")
        assert sorted(qc["sample"]) == ["lung_control_1", "lung_msc_1", "lung_msc_2"]
        assert qc["cells_in"].sum() == 625 and (qc["cells_out"] > 150).all()
        lock = LockFile(work / "config/presets/geo-test/lock.tsv").read()
        assert [p.sha256 for p in lock.values()] == [fetch.sha256_file(
            next((tmp_path / "cache").glob("url-*/*_RAW.tar")))]
        requests_after_first = srv.count()
        # second run: another working directory, the same cache and lock: nothing downloaded
        work2 = make_workdir(tmp_path / "w2", {"fetch": fetch_cfg}, with_contrasts=False)
        shutil.copytree(work / "config/presets/geo-test", work2 / "config/presets/geo-test")
        targets = [f"results/fetched/{s}/10x_mtx" for s in qc["sample"]]
        proc = run_snakemake(work2, "--cores", "2", *targets, "--config", "preset=geo-test")
        assert "1 files, 1 pinned" in proc.stderr and srv.count() == requests_after_first
        # the remote file changed: a fresh cache downloads it and refuses it
        changed = tar_of({**pseudo_samples, "GSM999001_note.txt": b"changed"})
        srv.add(f"/geo/series/GSE999nnn/{ACC}/suppl/{ACC}_RAW.tar", changed)
        work3 = make_workdir(tmp_path / "w3", {"fetch": {**fetch_cfg, "cache_dir": str(
            tmp_path / "cache3")}}, with_contrasts=False)
        shutil.copytree(work / "config/presets/geo-test", work3 / "config/presets/geo-test")
        proc = run_snakemake(work3, "--cores", "2", *targets, "--config", "preset=geo-test",
                             check=False)
    assert proc.returncode != 0
    logs = "".join(p.read_text() for p in (work3 / "logs/fetch/fetch_url").glob("*.log"))
    assert "changed since it was pinned" in logs and f"{ACC}_RAW.tar" in logs
    assert next(iter(lock.values())).sha256 in logs and digest(changed) in logs
    assert not list((tmp_path / "cache3").glob("url-*/*_RAW.tar"))
    assert not (work3 / "results/fetched").exists() or not any(
        (work3 / "results/fetched").iterdir())
