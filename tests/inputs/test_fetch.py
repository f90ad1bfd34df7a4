"""Tests for mscflow.inputs.fetch against a real HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
from helpers import make_workdir
from httpserver import FaultyServer

from mscflow.errors import ConfigError, SampleSheetError
from mscflow.inputs import fetch
from mscflow.inputs.readers import read_sample
from mscflow.inputs.samplesheet import read_sample_sheet

ROOT = Path(__file__).resolve().parents[2]
TM_LUNG = ROOT / "tests" / "data" / "tabula-muris-lung-10X_P7_8"
N_CELLS = 50
N_GENES = 23433


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fast(tmp_path: Path, **kw) -> fetch.FetchSettings:
    """Settings with tiny backoff and timeouts so fault tests stay fast."""
    base = dict(cache_dir=tmp_path / "cache", retries=3, backoff_s=0.01, max_backoff_s=0.05,
                connect_timeout_s=2.0, read_timeout_s=2.0)
    base.update(kw)
    return fetch.FetchSettings.from_config(
        {k: str(v) if isinstance(v, Path) else v for k, v in base.items()})


# --------------------------------------------------------------------------- test data


@pytest.fixture(scope="module")
def tenx_slice() -> dict[str, bytes]:
    """First 50 cells of the Tabula Muris lung channel as v3 file contents (uncompressed)."""
    mat = sp.csc_matrix(scipy.io.mmread(TM_LUNG / "matrix.mtx.gz"))[:, :N_CELLS]
    buf = io.BytesIO()
    scipy.io.mmwrite(buf, sp.coo_matrix(mat.astype(np.int64)), field="integer")
    with gzip.open(TM_LUNG / "barcodes.tsv.gz", "rb") as fh:
        barcodes = b"".join(fh.readlines()[:N_CELLS])
    with gzip.open(TM_LUNG / "features.tsv.gz", "rb") as fh:
        features = fh.read()
    return {"matrix.mtx": buf.getvalue(), "barcodes.tsv": barcodes, "features.tsv": features}


def tar_bytes(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def v3_files(tenx: dict[str, bytes], folder: str) -> dict[str, bytes]:
    return {f"{folder}/{k}.gz": gzip.compress(v) for k, v in tenx.items()}


def geo_files(tenx: dict[str, bytes], prefix: str) -> dict[str, bytes]:
    """GEO style: prefixed, gzipped, legacy two-column genes.tsv."""
    genes = b"".join(b"\t".join(line.split(b"\t")[:2]) + b"\n"
                     for line in tenx["features.tsv"].splitlines())
    return {f"{prefix}matrix.mtx.gz": gzip.compress(tenx["matrix.mtx"]),
            f"{prefix}barcodes.tsv.gz": gzip.compress(tenx["barcodes.tsv"]),
            f"{prefix}genes.tsv.gz": gzip.compress(genes)}


def h5ad_bytes(tmp_path: Path, n_obs: int = 7, n_vars: int = 5) -> bytes:
    rng = np.random.default_rng(0)
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(2, (n_obs, n_vars)).astype(np.float32)))
    adata.obs_names = [f"c{i}" for i in range(n_obs)]
    adata.var_names = [f"g{i}" for i in range(n_vars)]
    path = tmp_path / "src.h5ad"
    adata.write_h5ad(path)
    return path.read_bytes()


def spec(sample: str, url: str, data: bytes, fmt: str, member: str = "") -> fetch.UrlSample:
    return fetch.UrlSample(sample, url, sha(data), fmt, member)


def fetch_and_unpack(srv_url: str, data: bytes, fmt: str, tmp_path: Path, sample: str = "s1",
                     member: str = "", **kw) -> Path:
    """What the two rules do for one sample, in one call."""
    s = spec(sample, srv_url, data, fmt, member)
    settings = fast(tmp_path, **kw)
    cached = fetch.cache_index({sample: s}, settings.cache_dir)[s.sha256]
    fetch.download(s.url, cached, s.sha256, sample=sample, settings=settings)
    out = tmp_path / fetch.fetched_path(
        {"sample": sample, "url": srv_url, "sha256": s.sha256, "format": fmt})
    return fetch.unpack(s, cached, out)


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files left anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.endswith(".part") or ".tmp" in p.name
                  or (p.name.startswith(".") and not p.name.endswith(".lock")))


# --------------------------------------------------------------------------- success paths


def test_10x_v3_targz_fetched_unpacked_and_read(tmp_path, tenx_slice):
    data = tar_bytes(v3_files(tenx_slice, "filtered_feature_bc_matrix"))
    with FaultyServer() as srv:
        url = srv.add("/v3.tar.gz", data)
        out = fetch_and_unpack(url, data, "10x_mtx", tmp_path)
        assert srv.count() == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "barcodes.tsv.gz", "features.tsv.gz", "matrix.mtx.gz"]
    adata = read_sample(out, "10x_mtx", sample="s1")
    assert adata.shape == (N_CELLS, N_GENES)
    assert adata.X.sum() > 0
    assert leftovers(tmp_path) == []


def test_h5ad_plain_and_gzipped(tmp_path):
    data = h5ad_bytes(tmp_path)
    gz = gzip.compress(data)
    with FaultyServer() as srv:
        out1 = fetch_and_unpack(srv.add("/x.h5ad", data), data, "h5ad", tmp_path, "plain")
        out2 = fetch_and_unpack(srv.add("/x.h5ad.gz", gz), gz, "h5ad", tmp_path, "gz")
    assert out1.name == "matrix.h5ad" and out2.name == "matrix.h5ad"
    for out in (out1, out2):
        assert read_sample(out, "h5ad", sample="x").shape == (7, 5)


def test_h5ad_inside_zip(tmp_path):
    data = h5ad_bytes(tmp_path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("study/README.txt", "hello")
        zf.writestr("study/counts.h5ad", data)
    z = buf.getvalue()
    with FaultyServer() as srv:
        out = fetch_and_unpack(srv.add("/x.zip", z), z, "h5ad", tmp_path, member="study/")
    assert ad.read_h5ad(out).shape == (7, 5)


def test_geo_raw_tar_prefixes_stripped_and_legacy_genes_upgraded(tmp_path, tenx_slice):
    files = {**geo_files(tenx_slice, "GSM0000001_ctrl_"),
             **geo_files(tenx_slice, "GSM0000002_msc_")}
    data = tar_bytes(files, mode="w")  # GEO _RAW.tar files are plain tar
    with FaultyServer() as srv:
        url = srv.add("/GSE0_RAW.tar", data)
        out = fetch_and_unpack(url, data, "10x_mtx", tmp_path, "ctrl", member="GSM0000001_")
        with gzip.open(out / "features.tsv.gz", "rt") as fh:
            assert fh.readline().rstrip("\n").split("\t") == ["Xkr4", "Xkr4", "Gene Expression"]
        assert read_sample(out, "10x_mtx", sample="ctrl").shape == (N_CELLS, N_GENES)
        # without member the two samples are ambiguous: a clear error, nothing written
        s = spec("both", url, data, "10x_mtx")
        cached = fetch.cache_index({"both": s}, tmp_path / "cache")[s.sha256]
        with pytest.raises(fetch.FetchError, match=r"sample 'both'.*Set `member`"):
            fetch.unpack(s, cached, tmp_path / "both")
        assert not (tmp_path / "both").exists()
        assert srv.count() == 1


def test_zip_v3_folder(tmp_path, tenx_slice):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in v3_files(tenx_slice, "outs/filtered").items():
            zf.writestr(name, content)
    z = buf.getvalue()
    with FaultyServer() as srv:
        out = fetch_and_unpack(srv.add("/m.zip", z), z, "10x_mtx", tmp_path)
    assert read_sample(out, "10x_mtx", sample="z").shape == (N_CELLS, N_GENES)


def test_mismatched_members_are_refused(tmp_path, tenx_slice):
    files = v3_files(tenx_slice, "a")
    files["a/barcodes.tsv.gz"] = gzip.compress(b"AAAC-1\n")
    data = tar_bytes(files)
    with FaultyServer() as srv:
        with pytest.raises(fetch.FetchError, match="do not belong together"):
            fetch_and_unpack(srv.add("/bad.tar.gz", data), data, "10x_mtx", tmp_path)
    assert not (tmp_path / "results" / "fetched" / "s1" / "10x_mtx").exists()
    assert leftovers(tmp_path / "results") == []


# --------------------------------------------------------------------------- faults


def test_404_is_not_retried_and_names_sample_and_url(tmp_path):
    data = b"x" * 100
    with FaultyServer() as srv:
        url = srv.add("/gone", data, always="404")
        dest = tmp_path / "cache" / sha(data) / "gone"
        with pytest.raises(fetch.FetchError) as err:
            fetch.download(url, dest, sha(data), sample="s404", settings=fast(tmp_path))
        assert srv.count() == 1
    assert "s404" in str(err.value) and url in str(err.value) and "404" in str(err.value)
    assert not dest.exists() and leftovers(tmp_path) == []


def test_500_then_success_is_retried(tmp_path):
    data = os.urandom(50_000)
    with FaultyServer() as srv:
        url = srv.add("/flaky", data, faults=["500", "503"])
        dest = tmp_path / "cache" / sha(data) / "flaky"
        fetch.download(url, dest, sha(data), sample="s", settings=fast(tmp_path))
        assert srv.count() == 3
    assert dest.read_bytes() == data and leftovers(tmp_path) == []


def test_connection_cut_mid_file_resumes_with_range(tmp_path):
    data = os.urandom(300_000)
    with FaultyServer() as srv:
        url = srv.add("/cut", data, faults=["cut"])
        dest = tmp_path / "cache" / sha(data) / "cut"
        fetch.download(url, dest, sha(data), sample="s", settings=fast(tmp_path))
        ranges = srv.ranges("/cut")
    assert ranges[0] is None and ranges[1] == f"bytes={len(data) // 2}-"
    assert dest.read_bytes() == data and leftovers(tmp_path) == []


def test_connection_cut_and_server_without_range_restarts(tmp_path):
    data = os.urandom(300_000)
    with FaultyServer() as srv:
        url = srv.add("/cut", data, faults=["cut", "norange"])
        dest = tmp_path / "cache" / sha(data) / "cut"
        fetch.download(url, dest, sha(data), sample="s", settings=fast(tmp_path))
        assert srv.count() == 2
    assert dest.read_bytes() == data


def test_cut_every_time_fails_clearly_and_keeps_only_part(tmp_path):
    data = os.urandom(100_000)
    with FaultyServer() as srv:
        url = srv.add("/cut", data, always="cut")
        dest = tmp_path / "cache" / sha(data) / "cut"
        settings = fast(tmp_path, retries=2)
        with pytest.raises(fetch.FetchError, match=r"sample 'scut'.*after 2 attempts"):
            fetch.download(url, dest, sha(data), sample="scut", settings=settings)
        assert not dest.exists()
        assert dest.with_name(".cut.part").exists()  # kept for resume, never read as data
        # next run: the server is fine again; the partial file is resumed, not re-fetched
        srv.add("/cut", data)
        fetch.download(url, dest, sha(data), sample="scut", settings=settings)
        assert srv.ranges("/cut")[-1] is not None
    assert dest.read_bytes() == data and leftovers(tmp_path) == []


def test_slow_server_past_timeout_then_ok_and_always_slow(tmp_path):
    data = b"slow" * 1000
    with FaultyServer(slow_s=1.0) as srv:
        url = srv.add("/slow", data, faults=["slow"])
        dest = tmp_path / "cache" / sha(data) / "slow"
        fetch.download(url, dest, sha(data), sample="s",
                       settings=fast(tmp_path, read_timeout_s=0.3))
        assert dest.read_bytes() == data and srv.count() == 2
        url2 = srv.add("/slower", data + b"!", always="slow")
        dest2 = tmp_path / "cache" / sha(data + b"!") / "slower"
        with pytest.raises(fetch.FetchError, match=r"(?s)sample 'sslow'.*slower.*Timeout"):
            fetch.download(url2, dest2, sha(data + b"!"), sample="sslow",
                           settings=fast(tmp_path, read_timeout_s=0.3, retries=2))
        assert srv.count("/slower") == 2
    assert not dest2.exists()


def test_wrong_checksum_stops_with_both_checksums_and_does_not_poison(tmp_path):
    data = os.urandom(10_000)
    wrong = "0" * 64
    with FaultyServer() as srv:
        url = srv.add("/f.bin", data)
        dest = tmp_path / "cache" / wrong / "f.bin"
        with pytest.raises(fetch.ChecksumMismatch) as err:
            fetch.download(url, dest, wrong, sample="swrong", settings=fast(tmp_path))
        msg = str(err.value)
        assert all(s in msg for s in ("swrong", url, wrong, sha(data)))
        assert srv.count() == 1  # a fresh full download that mismatches is not retried
        assert not dest.exists() and leftovers(tmp_path) == []
        good = tmp_path / "cache" / sha(data) / "f.bin"
        fetch.download(url, good, sha(data), sample="swrong", settings=fast(tmp_path))
    assert good.read_bytes() == data


def test_stale_part_with_other_content_is_discarded_then_refetched(tmp_path):
    data = os.urandom(20_000)
    dest = tmp_path / "cache" / sha(data) / "f.bin"
    dest.parent.mkdir(parents=True)
    dest.with_name(".f.bin.part").write_bytes(b"garbage from an older version")
    with FaultyServer() as srv:
        url = srv.add("/f.bin", data)
        fetch.download(url, dest, sha(data), sample="s", settings=fast(tmp_path))
        assert srv.ranges("/f.bin") == ["bytes=29-", None]
    assert dest.read_bytes() == data and leftovers(tmp_path) == []


def test_content_encoding_gzip_is_not_decoded(tmp_path):
    data = gzip.compress(b"payload\n" * 100)
    with FaultyServer() as srv:
        url = srv.add("/f.gz", data, faults=["gzip-encoding"])
        dest = tmp_path / "cache" / sha(data) / "f.gz"
        fetch.download(url, dest, sha(data), sample="s", settings=fast(tmp_path))
    assert dest.read_bytes() == data


def test_truncated_gzip(tmp_path, tenx_slice):
    full = tar_bytes(v3_files(tenx_slice, "m"))
    cut = full[: len(full) // 2]
    with FaultyServer() as srv:
        # served truncated, sheet has the full file's sha256: a checksum mismatch
        with pytest.raises(fetch.ChecksumMismatch, match="sample 's1'"):
            dest = tmp_path / "cache" / sha(full) / "t.tar.gz"
            fetch.download(srv.add("/t.tar.gz", cut), dest, sha(full), sample="s1",
                           settings=fast(tmp_path))
        assert not dest.exists()
        # the sheet's sha256 is of the truncated file itself: unpacking fails clearly
        url = srv.add("/broken.tar.gz", cut)
        with pytest.raises(fetch.FetchError, match=r"(?s)sample 's1'.*broken.tar.gz.*corrupt"):
            fetch_and_unpack(url, cut, "10x_mtx", tmp_path)
    assert not (tmp_path / "results" / "fetched" / "s1" / "10x_mtx").exists()
    assert leftovers(tmp_path) == []
    # a truncated single-file gzip (h5ad.gz) too
    h5 = gzip.compress(h5ad_bytes(tmp_path))[:-20]
    with FaultyServer() as srv:
        with pytest.raises(fetch.FetchError, match="corrupt"):
            fetch_and_unpack(srv.add("/x.h5ad.gz", h5), h5, "h5ad", tmp_path, "h")
    assert not (tmp_path / "results" / "fetched" / "h" / "matrix.h5ad").exists()


def test_rerun_downloads_nothing_and_corrupt_cache_is_refetched(tmp_path):
    data = os.urandom(5_000)
    with FaultyServer() as srv:
        url = srv.add("/f", data)
        dest = tmp_path / "cache" / sha(data) / "f"
        for _ in range(3):
            fetch.download(url, dest, sha(data), sample="s", settings=fast(tmp_path))
        assert srv.count() == 1
        dest.write_bytes(b"someone edited the cache")
        fetch.download(url, dest, sha(data), sample="s", settings=fast(tmp_path))
        assert srv.count() == 2
    assert dest.read_bytes() == data


def test_mirrors_are_tried_in_turn(tmp_path):
    data = os.urandom(1000)
    with FaultyServer() as srv:
        bad = srv.add("/mirror1", data, always="503")
        good = srv.add("/mirror2", data)
        dest = tmp_path / "cache" / sha(data) / "f"
        fetch.download([bad, good], dest, sha(data), sample="s", settings=fast(tmp_path))
        assert (srv.count("/mirror1"), srv.count("/mirror2")) == (1, 1)


def test_loose_10x_files_are_one_sample(tmp_path, tenx_slice):
    """A GEO sample's own three files (downloaded one by one) make one 10x folder."""
    files = geo_files(tenx_slice, "GSM0000001_ctrl_")
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    s = fetch.UrlSample("ctrl", " ".join(f"https://h/{n}" for n in files), "", "10x_mtx")
    out = fetch.unpack(s, paths, tmp_path / "out")
    assert read_sample(out, "10x_mtx", sample="ctrl").shape == (N_CELLS, N_GENES)
    with pytest.raises(fetch.FetchError, match="no barcodes file"):
        fetch.unpack(s, [p for p in paths if "barcodes" not in p.name], tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_progress_bar_with_size_and_rate_in_the_log(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(fetch, "PROGRESS_DELAY_S", 0.0)
    monkeypatch.setattr(fetch, "PROGRESS_INTERVAL_S", 0.0)
    data = os.urandom(3 << 20)
    with FaultyServer() as srv, caplog.at_level("INFO", logger="mscflow.inputs.fetch"):
        url = srv.add("/big.bin", data)
        fetch.download(url, tmp_path / "cache" / sha(data) / "big.bin", sha(data), sample="s",
                       settings=fast(tmp_path))
    bars = [r.getMessage() for r in caplog.records if "big.bin:" in r.getMessage()]
    assert bars and "3.00M/3.00M" in bars[-1] and "B/s]" in bars[-1], bars


def test_unreachable_host_and_mirror_rewrite(tmp_path):
    data = os.urandom(1000)
    with FaultyServer() as srv:
        srv.add("/geo/x.bin", data)
        mirrors = {"https://ftp.ncbi.nlm.nih.gov": srv.url("")}
        public = "https://ftp.ncbi.nlm.nih.gov/geo/x.bin"
        assert fetch.rewrite_url(public, mirrors) == srv.url("/geo/x.bin")
        dest = tmp_path / "cache" / sha(data) / "x.bin"
        fetch.download(public, dest, sha(data), sample="s",
                       settings=fast(tmp_path, mirrors=mirrors))
    assert dest.read_bytes() == data
    with pytest.raises(fetch.HostUnreachable) as err:
        fetch.download("https://no-such-host.invalid/GSE1_RAW.tar", tmp_path / "c" / "f",
                       "a" * 64, sample="s9", settings=fast(tmp_path, retries=2))
    message = str(err.value)
    assert "\n" not in message and "cannot reach no-such-host.invalid" in message
    assert "sample 's9' needs https://no-such-host.invalid/GSE1_RAW.tar" in message
    assert not (tmp_path / "c" / "f").exists()


# --------------------------------------------------------------------------- unsafe archives


def _tar_with(info: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        ok = tarfile.TarInfo("m/barcodes.tsv.gz")
        ok.size = 3
        tf.addfile(ok, io.BytesIO(b"abc"))
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("archive", [
    pytest.param(lambda: _tar_with(tarfile.TarInfo("../evil.txt"), b"x"), id="dotdot"),
    pytest.param(lambda: _tar_with(tarfile.TarInfo("/tmp/evil.txt"), b"x"), id="absolute"),
    pytest.param(lambda: _tar_with(_link("m/matrix.mtx.gz", "/etc/passwd", tarfile.SYMTYPE)),
                 id="symlink-out"),
    pytest.param(lambda: _tar_with(_link("m/x", "../../outside", tarfile.SYMTYPE)),
                 id="symlink-dotdot"),
    pytest.param(lambda: _tar_with(_link("m/h", "/etc/passwd", tarfile.LNKTYPE)),
                 id="hardlink-out"),
])
def test_unsafe_tar_members_are_rejected(tmp_path, archive):
    data = archive()
    with FaultyServer() as srv:
        with pytest.raises(fetch.UnsafeArchiveError, match=r"sample 's1'.*unsafe member"):
            fetch_and_unpack(srv.add("/evil.tar.gz", data), data, "10x_mtx", tmp_path)
    assert not (tmp_path / "results" / "fetched" / "s1" / "10x_mtx").exists()
    assert not (tmp_path / "evil.txt").exists() and leftovers(tmp_path / "results") == []


@pytest.mark.parametrize("name,mode", [("../../evil.txt", 0o100644), ("/abs.txt", 0o100644),
                                       ("m/link", 0o120777)])
def test_unsafe_zip_members_are_rejected(tmp_path, name, mode):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        zf.writestr(info, b"/etc/passwd")
    data = buf.getvalue()
    with FaultyServer() as srv:
        with pytest.raises(fetch.UnsafeArchiveError, match="unsafe member"):
            fetch_and_unpack(srv.add("/evil.zip", data), data, "10x_mtx", tmp_path)


# --------------------------------------------------------------------------- pure helpers


def test_mtx_roles_and_member_selection():
    assert fetch.mtx_role("GSM1_ctrl_barcodes.tsv.gz") == ("barcodes", False, True)
    assert fetch.mtx_role("x/genes.tsv") == ("features", True, False)
    assert fetch.mtx_role("GSM1-matrix.mtx") == ("matrix", False, False)
    assert fetch.mtx_role("notmatrix.mtx.gz") is None
    names = ["a/matrix.mtx.gz", "ab/matrix.mtx.gz", "GSM1_x_matrix.mtx.gz", "raw/GSM2_m.h5"]
    assert fetch.select_members(names, "a") == ["a/matrix.mtx.gz"]
    assert fetch.select_members(names, "GSM1_") == ["GSM1_x_matrix.mtx.gz"]
    assert fetch.select_members(names, "GSM2_") == ["raw/GSM2_m.h5"]
    assert fetch.select_members(names, "") == sorted(names)


def test_backoff_and_basename():
    assert [fetch.backoff_delay(n, 2.0, 10.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 10.0]
    assert fetch.url_basename("https://h/x/GSE1_RAW.tar?download=1") == "GSE1_RAW.tar"
    assert fetch.url_basename("https://h/") == "download"
    assert fetch.url_basename("https://h/a%20b/..%2F..%2Fetc") == "_.._etc"


def test_sheet_validation_messages(tmp_path):
    good = {"sample": "a", "url": "https://h/x.h5ad", "sha256": "a" * 64, "format": "h5ad"}
    assert fetch.url_samples([good, {"sample": "local", "path": "p"}])["a"].fmt == "h5ad"
    bad_cases = [
        ({**good, "url": "ftp://h/x"}, "not an http"),
        ({**good, "sha256": "TO_VERIFY"}, "python -m mscflow.inputs.fetch hash"),
        ({**good, "format": "csv"}, "format 'csv'"),
        ({**good, "path": "/data/x.h5ad"}, "both `path` and `url`"),
        ({**good, "url": "https://h/a https://h/b"}, "holds 2 URLs"),
        ({**good, "sha256": ""}, "not 64 hex digits"),
    ]
    for row, message in bad_cases:
        with pytest.raises(SampleSheetError, match=message):
            fetch.url_samples([row])
    with pytest.raises(SampleSheetError, match="two different sha256"):
        fetch.url_samples([good, {**good, "sample": "b", "sha256": "b" * 64}])
    sheet = tmp_path / "s.tsv"
    sheet.write_text("# comment\nsample\ttissue\tcondition\treplicate\tspecies\turl\tsha256"
                     "\tformat\na\tlung\tcontrol\t1\tmouse\thttps://h/x.h5ad\t" + "A" * 64
                     + "\th5ad\n")
    assert fetch.url_samples(read_sample_sheet(sheet))["a"].sha256 == "a" * 64
    assert fetch.fetched_path(good) == "results/fetched/a/matrix.h5ad"
    # rows a preset resolved: no sha256 (the lock has it), several files allowed
    preset_row = {**good, "sha256": "", "url": "https://h/a/x.h5ad https://h/b/y.h5ad"}
    spec = fetch.url_samples([preset_row], pinned_by_lock=True)["a"]
    assert [f.key for f in spec.files] == [fetch.url_key("https://h/a/x.h5ad"),
                                           fetch.url_key("https://h/b/y.h5ad")]
    assert fetch.urls_for({"a": spec}, spec.files[1].key) == ["https://h/b/y.h5ad"]
    with pytest.raises(ConfigError, match="did you mean 'retries'"):
        fetch.FetchSettings.from_config({"retry": 3})


# --------------------------------------------------------------------------- workflow level


def _snakemake(workdir: Path, targets: list[str], timeout: int = 400
               ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
           "--cores", "2", "--resources", "fetch_slots=2", "--nolock", *targets]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir)


def _workdir(tmp_path: Path, sheet: Path, cache: Path) -> Path:
    """A working directory with the repository's config, reading ``sheet``."""
    return make_workdir(tmp_path / "work", {
        "samples": str(sheet),
        "fetch": {"cache_dir": str(cache), "retries": 3, "backoff_s": 0.01,
                  "read_timeout_s": 10},
        "qc": {"min_cells_per_sample": 5},
    }, with_contrasts=False)


def _url_sheet(tmp_path: Path, srv: FaultyServer, tenx: dict[str, bytes]) -> Path:
    raw = tar_bytes({**geo_files(tenx, "GSM0000001_ctrl_"), **geo_files(tenx, "GSM0000002_msc_")},
                    mode="w")
    h5 = h5ad_bytes(tmp_path)
    url_raw = srv.add("/GSE0_RAW.tar", raw, faults=["500"])
    url_h5 = srv.add("/atlas.h5ad", h5)
    sheet = tmp_path / "samples.tsv"
    rows = [("ctrl", url_raw, sha(raw), "10x_mtx", "GSM0000001_", "control"),
            ("msc", url_raw, sha(raw), "10x_mtx", "GSM0000002_", "msc"),
            ("atlas", url_h5, sha(h5), "h5ad", "", "control")]
    sheet.write_text(
        "sample\turl\tsha256\tformat\tmember\tspecies\ttissue\tcondition\treplicate\n"
        + "".join(f"{s}\t{u}\t{h}\t{f}\t{m}\tmouse\tlung\t{c}\t1\n"
                  for s, u, h, f, m, c in rows))
    return sheet


@pytest.mark.workflow
def test_fetch_rules_share_one_download_and_rerun_downloads_nothing(tmp_path, tenx_slice):
    with FaultyServer() as srv:
        sheet = _url_sheet(tmp_path, srv, tenx_slice)
        work = _workdir(tmp_path, sheet, tmp_path / "shared-cache")
        targets = [fetch.fetched_path(r)
                   for r in read_sample_sheet(sheet, validate=False).to_dict("records")]
        proc = _snakemake(work, targets)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # the shared archive was requested twice (a 500, then the download) and only once
        assert srv.count("/GSE0_RAW.tar") == 2 and srv.count("/atlas.h5ad") == 1
        first = srv.count()
        shutil.rmtree(work / "results")  # outputs gone, cache kept: still nothing downloaded
        proc = _snakemake(work, targets)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert srv.count() == first
    for sample in ("ctrl", "msc"):
        adata = read_sample(work / f"results/fetched/{sample}/10x_mtx", "10x_mtx", sample=sample)
        assert adata.shape == (N_CELLS, N_GENES)
    assert read_sample(work / "results/fetched/atlas/matrix.h5ad", "h5ad",
                       sample="atlas").shape == (7, 5)
    assert (work / "logs" / "fetch" / "unpack" / "ctrl.10x_mtx.log").is_file()


@pytest.mark.workflow
def test_workflow_fetch_and_qc(tmp_path, tenx_slice):
    with FaultyServer() as srv:
        sheet = _url_sheet(tmp_path, srv, tenx_slice)
        work = _workdir(tmp_path, sheet, tmp_path / "cache")
        targets = ["results/qc/ctrl.h5ad", "results/qc/msc.h5ad"]
        proc = _snakemake(work, targets)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert srv.count("/GSE0_RAW.tar") == 2
    for target in targets:
        assert ad.read_h5ad(work / target).n_obs > 0
