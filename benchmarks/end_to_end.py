"""End-to-end benchmark: the mscflow workflow against a plain single-process scanpy script.

Generates a demo data set (samples x cells per sample x genes, planted truth), runs

* the workflow with ``--cores 2`` in ``benchmarks/out/e2e_<shape>/workflow`` (per-job wall time
  and peak memory from Snakemake's ``benchmark:`` files), and
* a plain scanpy script doing the same analysis with the same parameters in one process
  (QC metrics and MAD flags, per-sample ``sc.pp.scrublet``, merge, normalise, seurat HVG by
  sample, PCA, neighbours, Leiden at the configured resolutions, UMAP, t-test markers,
  ``sc.tl.score_genes`` per programme set),

then prints per step and in total wall time, peak memory and the ratio, and checks that both
give comparable results (Leiden ARI, doublet calls against the planted truth, score
correlation). Usage::

    python benchmarks/end_to_end.py --samples 16 --cells 6000 --genes 5000
    python benchmarks/end_to_end.py --samples 8 --cells 2000          # quick

Timings depend on machine load: check ``uptime`` and rerun when the machine is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
PROGRAMMES = REPO / "resources" / "genesets" / "programmes_mouse.gmt"
MARKERS = REPO / "resources" / "genesets" / "celltype_markers_mouse.gmt"
# Workflow rules doing the steps of the plain script (the rest: annotation, plots, report).
SAME_STEPS = {"qc_sample": "QC + doublets (per sample)", "cluster": "merge .. UMAP + markers",
              "scoring_gene_stats": "gene-set scores: gene statistics of all cells",
              "score_sample": "gene-set scores (per sample)",
              "gather_scores": "gene-set scores: one table"}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(data: Path, samples: int, cells: int, genes: int, seed: int) -> pd.DataFrame:
    """Demo data of the given shape (generated once; reused when present)."""
    from mscflow.demo.model import DemoSpec
    from mscflow.demo.simulate import generate_demo
    from mscflow.genesets import read_gmt

    if (data / "samples.tsv").exists():
        return pd.read_csv(data / "samples.tsv", sep="\t", keep_default_na=False)
    programmes, markers = read_gmt(PROGRAMMES), read_gmt(MARKERS)
    set_genes = {g for sets in (programmes, markers) for m in sets.values() for g in m}
    spec = DemoSpec(cells_per_sample=cells, replicates=max(1, samples // 4), seed=seed,
                    n_background_genes=max(100, genes - len(set_genes)))
    return generate_demo(data, programmes, markers, spec)


def make_workflow_dir(workdir: Path, sheet: Path, updates: dict) -> Path:
    """Fresh working directory with the repository's config and curated resources."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    shutil.copytree(REPO / "config", workdir / "config")
    for sub in ("genesets", "orthologs"):
        shutil.copytree(REPO / "resources" / sub, workdir / "resources" / sub)
    cfg_path = workdir / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["samples"] = str(sheet)
    for key, value in updates.items():
        cfg[key].update(value)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return workdir


# Outputs of the steps the plain script does (QC + doublets, clustering + markers, scores).
SAME_TARGETS = ["results/qc/qc_summary.tsv", "results/cluster/markers.tsv",
                "results/scores/scores.parquet"]


def run_workflow(workdir: Path, cores: int, targets: list[str]) -> float:
    """Run the workflow up to ``targets`` (all: the whole DAG); returns wall seconds."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d",
           str(workdir), "--cores", str(cores), *targets]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"workflow failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return wall


def _rule_of(benchmark: Path) -> str:
    """The rule of a benchmark file: ``<stage>/<rule>/<wildcards>.tsv`` (per-sample rules),
    ``<stage>/<rule>.tsv``, and QC's ``qc/<sample>.tsv``."""
    if len(benchmark.parts) == 3:
        return benchmark.parts[1]
    if benchmark.parts[0] == "qc" and benchmark.stem not in ("qc_summary", "doublet_clusters"):
        return "qc_sample"
    return benchmark.stem


def workflow_benchmarks(workdir: Path) -> pd.DataFrame:
    """One row per job from Snakemake's benchmark files: rule, wall s, peak RSS MB."""
    rows = []
    for path in sorted((workdir / "benchmarks").rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        rel = path.relative_to(workdir / "benchmarks")
        rows.append({"rule": _rule_of(rel), "job": str(rel), "s": float(table["s"].iloc[0]),
                     "max_rss_mb": float(pd.to_numeric(table["max_rss"], errors="coerce")
                                         .fillna(0).iloc[0])})
    return pd.DataFrame(rows)


class Steps:
    """Wall time and running peak memory per step of the plain script."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.t = time.perf_counter()

    def done(self, step: str) -> None:
        now = time.perf_counter()
        self.rows.append({"step": step, "s": now - self.t, "peak_rss_mb": peak_rss_mb()})
        self.t = now


def plain_script(sheet: pd.DataFrame, cfg: dict, out: Path) -> None:
    """The analysis as one plain scanpy script (run in its own process)."""
    import anndata as ad
    import scanpy as sc

    from mscflow.genesets import read_gmt
    from mscflow.inputs.readers import prefix_barcodes, read_sample
    from mscflow.qc.core import QCSettings, add_qc_metrics, flag_outliers
    from mscflow.qc.doublets import expected_doublet_rate

    steps = Steps()
    qc, cl, seed = cfg["qc"], cfg["cluster"], cfg["seed"]
    kept, t_qc, t_scrub = [], 0.0, 0.0
    for row in sheet.itertuples():
        t0 = time.perf_counter()
        adata = read_sample(row.path, row.format, sample=row.sample, layer=row.layer or None)
        prefix_barcodes(adata, row.sample)
        adata.obs["sample"] = row.sample
        add_qc_metrics(adata, "mouse")
        flag_outliers(adata, QCSettings.from_config(qc))
        rate = expected_doublet_rate(qc["expected_doublet_rate"], adata.n_obs)
        adata = adata[~adata.obs["qc_fail"].to_numpy()].copy()
        t1 = time.perf_counter()
        sc.pp.scrublet(adata, expected_doublet_rate=rate,
                       random_state=seed, verbose=False)
        t2 = time.perf_counter()
        t_qc, t_scrub = t_qc + t1 - t0, t_scrub + t2 - t1
        kept.append(adata)
    steps.rows.append({"step": "read + QC metrics/flags", "s": t_qc, "peak_rss_mb": peak_rss_mb()})
    steps.rows.append({"step": "scrublet", "s": t_scrub, "peak_rss_mb": peak_rss_mb()})
    doublets = pd.concat([a.obs[["doublet_score", "predicted_doublet"]] for a in kept])
    kept = [a[~a.obs["predicted_doublet"].to_numpy()].copy() for a in kept]
    steps.t = time.perf_counter()
    adata = ad.concat(kept, join="inner", merge="same")
    del kept
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=cl["target_sum"])
    sc.pp.log1p(adata)
    steps.done("merge + normalise")
    sc.pp.highly_variable_genes(adata, n_top_genes=cl["n_top_genes"], flavor="seurat",
                                batch_key="sample")
    steps.done("HVG")
    sc.pp.pca(adata, n_comps=cl["n_pcs"], mask_var="highly_variable", random_state=seed)
    steps.done("PCA")
    sc.pp.neighbors(adata, n_neighbors=cl["n_neighbors"], n_pcs=cl["n_pcs"], random_state=seed)
    steps.done("neighbours")
    for res in cl["resolutions"]:
        sc.tl.leiden(adata, resolution=res, key_added=f"leiden_{float(res):g}",
                     flavor="leidenalg", n_iterations=cl["leiden_iterations"],
                     random_state=seed)
    steps.done("Leiden")
    sc.tl.umap(adata, min_dist=cl["umap_min_dist"], random_state=seed)
    steps.done("UMAP")
    default = f"leiden_{float(cl['default_resolution']):g}"
    sc.tl.rank_genes_groups(adata, groupby=default, method=cl["marker_method"], n_genes=25)
    steps.done("markers")
    genes = set(adata.var_names)
    for name, members in read_gmt(PROGRAMMES).items():
        present = [g for g in members if g in genes]
        if len(present) >= cfg["genesets"]["min_genes"]:
            sc.tl.score_genes(adata, present, ctrl_size=cfg["scoring"]["ctrl_size"],
                              n_bins=cfg["scoring"]["n_bins"], random_state=seed,
                              score_name=f"score:{name}")
    steps.done("score_genes")
    out.mkdir(parents=True, exist_ok=True)
    cols = [c for c in adata.obs if c.startswith(("leiden_", "score:"))]
    adata.obs[cols].to_parquet(out / "obs.parquet")
    pd.DataFrame(adata.obsm["X_umap"], index=adata.obs_names,
                 columns=["umap1", "umap2"]).to_parquet(out / "umap.parquet")
    doublets.to_parquet(out / "doublets.parquet")
    pd.DataFrame(steps.rows).to_csv(out / "steps.tsv", sep="\t", index=False)


def run_plain(sheet_path: Path, cfg_path: Path, out: Path) -> float:
    """The plain script in a fresh process (its own peak memory); returns wall seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--plain", str(sheet_path), str(cfg_path),
                    str(out)], check=True)
    return time.perf_counter() - start


def precision_recall(called: pd.Series, truth: pd.Series) -> tuple[float, float]:
    """Precision and recall of doublet calls against the planted doublets."""
    called, truth = called.astype(bool), truth.reindex(called.index).astype(bool)
    hits = int((called & truth).sum())
    return hits / max(int(called.sum()), 1), hits / max(int(truth.sum()), 1)


def compare(workdir: Path, plain_out: Path, data: Path, cfg: dict) -> dict:
    """Agreement of workflow and plain script: ARI, doublets vs truth, score correlation."""
    import anndata as ad
    from sklearn.metrics import adjusted_rand_score

    truth = pd.read_csv(data / "truth.tsv.gz", sep="\t")
    truth.index = truth["sample"] + ":" + truth["barcode"]
    res = {}
    metrics = pd.concat(pd.read_csv(p, sep="\t", index_col="cell")
                        for p in sorted((workdir / "results" / "qc").glob("*_metrics.tsv.gz")))
    metrics = metrics[~metrics["qc_fail"].astype(bool)]
    plain_dbl = pd.read_parquet(plain_out / "doublets.parquet")
    res["doublet P/R workflow"] = precision_recall(metrics["predicted_doublet"], truth["doublet"])
    res["doublet P/R plain"] = precision_recall(plain_dbl["predicted_doublet"], truth["doublet"])
    common = metrics.index.intersection(plain_dbl.index)
    res["doublet call agreement"] = float(
        (metrics.loc[common, "predicted_doublet"].astype(bool)
         == plain_dbl.loc[common, "predicted_doublet"].astype(bool)).mean())
    obs = ad.read_h5ad(workdir / "results" / "cluster" / "clustered.h5ad", backed="r").obs
    plain = pd.read_parquet(plain_out / "obs.parquet")
    cells = obs.index.intersection(plain.index)
    res["cells workflow / plain / common"] = (len(obs), len(plain), len(cells))
    for r in cfg["cluster"]["resolutions"]:
        key = f"leiden_{float(r):g}"
        res[f"ARI {key}"] = adjusted_rand_score(obs.loc[cells, key], plain.loc[cells, key])
    default_key = f"leiden_{float(cfg['cluster']['default_resolution']):g}"
    coords = ad.read_h5ad(workdir / "results" / "cluster" / "clustered.h5ad",
                          backed="r").obsm["X_umap"]
    res.update(umap_agreement(obs, coords, plain_out, cells, default_key))
    scores = pd.read_parquet(workdir / "results" / "scores" / "scores.parquet")
    corrs = [np.corrcoef(scores.loc[cells, c.removeprefix("score:")], plain.loc[cells, c])[0, 1]
             for c in plain if c.startswith("score:") and c.removeprefix("score:") in scores]
    res["score correlation min / median"] = (float(np.min(corrs)), float(np.median(corrs)))
    return res


def umap_agreement(obs: pd.DataFrame, coords: np.ndarray, plain_out: Path,
                   cells: pd.Index, key: str, n_sample: int = 5000) -> dict:
    """Does each UMAP show the same picture? Share of every sampled cell's 15 nearest
    embedding neighbours in its own (workflow) cluster, and the clusters' silhouette."""
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    path = plain_out / "umap.parquet"
    if not path.exists():
        return {}
    embeddings = {"workflow": pd.DataFrame(np.asarray(coords), index=obs.index).loc[cells],
                  "plain": pd.read_parquet(path).loc[cells]}
    labels = obs.loc[cells, key].to_numpy()
    pick = np.random.default_rng(0).choice(len(cells), min(n_sample, len(cells)), replace=False)
    res = {}
    for name, emb in embeddings.items():
        x = emb.to_numpy()
        nearest = NearestNeighbors(n_neighbors=16).fit(x).kneighbors(
            x[pick], return_distance=False)[:, 1:]
        same = float(np.mean(labels[nearest] == labels[pick][:, None]))
        sil = float(silhouette_score(x[pick], labels[pick]))
        res[f"UMAP {name}: neighbours in own cluster / silhouette"] = (round(same, 4),
                                                                       round(sil, 3))
    return res


def logged_steps(workdir: Path) -> pd.DataFrame:
    """Per-step wall time inside the qc_sample and cluster jobs (``step X: s`` log lines) and
    the job's peak RSS after the step (``peak RSS after X: MB``; largest over the jobs)."""
    rows, peaks = [], {}
    for log in sorted((workdir / "logs").rglob("*.log")):
        rule = "cluster" if log.parent.name == "cluster" else "qc_sample"
        if log.parent.name not in ("cluster", "qc") or log.stem == "qc_summary":
            continue
        for line in log.read_text().splitlines():
            if " step " in line and line.endswith(" s"):
                step, secs = line.split(" step ", 1)[1].rsplit(": ", 1)
                rows.append({"rule": rule, "step": step, "s": float(secs[:-2])})
            elif " peak RSS after " in line and line.endswith(" MB"):
                step, mb = line.split(" peak RSS after ", 1)[1].rsplit(": ", 1)
                key = (rule, step)
                peaks[key] = max(peaks.get(key, 0.0), float(mb[:-3]))
    if not rows:
        return pd.DataFrame(columns=["rule", "step", "jobs", "sum_s", "max_s", "peak_rss_mb"])
    table = (pd.DataFrame(rows).groupby(["rule", "step"], sort=False)["s"]
             .agg(jobs="size", sum_s="sum", max_s="max").reset_index())
    table["peak_rss_mb"] = [peaks.get(key, float("nan"))
                            for key in zip(table["rule"], table["step"], strict=True)]
    return table


def rule_table(bench: pd.DataFrame) -> list[str]:
    """Per workflow rule: jobs, sum and longest job wall time, largest peak RSS (markdown)."""
    lines = ["| workflow rule | jobs | sum of job s | longest job s | max peak RSS MB |",
             "|---|---:|---:|---:|---:|"]
    for rule, grp in bench.groupby("rule", sort=False):
        lines.append(f"| {rule} | {len(grp)} | {grp.s.sum():.1f} | {grp.s.max():.1f} | "
                     f"{grp.max_rss_mb.max():.0f} |")
    return lines


def report(bench: pd.DataFrame, steps: pd.DataFrame, wf_wall: float,
           plain_steps: pd.DataFrame, plain_wall: float, agreement: dict, shape: str,
           load: tuple) -> str:
    """The printed table (markdown)."""
    lines = [f"## End-to-end benchmark {shape} (load average at start {load})", "",
             *rule_table(bench)]
    same = bench[bench.rule.isin(SAME_STEPS)]
    lines += ["", "| step inside a job | jobs | sum s | longest s |", "|---|---:|---:|---:|"]
    lines += [f"| {r.rule}: {r.step} | {r.jobs} | {r.sum_s:.1f} | {r.max_s:.1f} |"
              for r in steps.itertuples()]
    lines += ["", "| plain script step | s | running peak RSS MB |", "|---|---:|---:|"]
    lines += [f"| {r.step} | {r.s:.1f} | {r.peak_rss_mb:.0f} |" for r in plain_steps.itertuples()]
    plain_peak = plain_steps.peak_rss_mb.max()
    wf_peak = bench.max_rss_mb.max()
    lines += ["", "| total | wall s | peak RSS MB (largest job) |", "|---|---:|---:|",
              f"| plain script | {plain_wall:.1f} | {plain_peak:.0f} |",
              f"| workflow wall, {len(bench)} jobs (--cores 2) | {wf_wall:.1f} | {wf_peak:.0f} |",
              f"| workflow, sum of job times of {', '.join(SAME_STEPS)} | "
              f"{same.s.sum():.1f} | {same.max_rss_mb.max():.0f} |",
              f"| **ratio workflow / plain** | **{wf_wall / plain_wall:.2f}x** | "
              f"**{wf_peak / plain_peak:.2f}x** |", ""]
    lines += [f"- {k}: {v if not isinstance(v, float) else round(v, 4)}"
              for k, v in agreement.items()]
    return "\n".join(lines)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data shape and run options every benchmark on this data set shares."""
    parser.add_argument("--samples", type=int, default=16, help="multiple of 4")
    parser.add_argument("--cells", type=int, default=6000, help="cells per sample")
    parser.add_argument("--genes", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cores", type=int, default=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--skip-plain", action="store_true", help="reuse the last plain run")
    parser.add_argument("--whole-dag", action="store_true",
                        help="run every rule (annotation, contrasts, plots, report), not only "
                             "the steps the plain script does")
    args = parser.parse_args()
    shape = f"{args.samples}x{args.cells}x{args.genes}"
    base = OUT / f"e2e_{shape}"
    load = tuple(round(x, 1) for x in os.getloadavg())
    sheet = generate(base / "data", args.samples, args.cells, args.genes, args.seed)
    sheet_path = base / "data" / "samples.tsv"
    workdir = make_workflow_dir(base / "workflow", sheet_path,
                                {"demo": {"outdir": "resources/demo"}})
    cfg_path = workdir / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    print(f"{len(sheet)} samples; workflow in {workdir}", flush=True)
    wf_wall = run_workflow(workdir, args.cores, [] if args.whole_dag else SAME_TARGETS)
    print(f"workflow: {wf_wall:.1f} s", flush=True)
    plain_out = base / "plain"
    timing = plain_out / "wall.json"
    if args.skip_plain and timing.exists():
        plain_wall = json.loads(timing.read_text())["wall"]
    else:
        plain_wall = run_plain(sheet_path, cfg_path, plain_out)
        timing.write_text(json.dumps({"wall": plain_wall, "load": load}))
    print(f"plain script: {plain_wall:.1f} s", flush=True)
    text = report(workflow_benchmarks(workdir), logged_steps(workdir), wf_wall,
                  pd.read_csv(plain_out / "steps.tsv", sep="\t"), plain_wall,
                  compare(workdir, plain_out, base / "data", cfg), shape, load)
    (base / "report.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--plain":
        plain_script(pd.read_csv(sys.argv[2], sep="\t", keep_default_na=False),
                     yaml.safe_load(Path(sys.argv[3]).read_text()), Path(sys.argv[4]))
    else:
        main()
