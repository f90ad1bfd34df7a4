"""Raw counts read back from the per-sample QC files, one sample at a time.

The merged objects (``results/cluster/clustered.h5ad`` and what follows it) keep only the
log-normalised matrix: a counts layer beside it would double the cluster job's memory
(a third of its peak at 250k cells). Steps that need counts (pseudobulk DE, the export's
counts layer) read them from ``results/qc/{sample}.h5ad``, whose ``X`` holds the QC-filtered
raw counts and whose cell names (``sample:barcode``) are those of the merged objects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from os import PathLike

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from mscflow.errors import InputDataError

__all__ = ["counts_matrix", "iter_sample_counts"]


def iter_sample_counts(paths: Sequence[str | PathLike], cells: pd.Index, genes: pd.Index
                       ) -> Iterator[tuple[np.ndarray, sparse.csr_matrix]]:
    """For each QC file: the positions in ``cells`` of its cells that are in ``cells``, and
    their raw counts (float32 CSR, columns in the order of ``genes``).

    Only one sample's file is in memory at a time. A file that lacks one of ``genes`` is an
    error naming it (the merged objects hold the genes every sample has).
    """
    cells = pd.Index(cells)
    genes = pd.Index(genes)
    for path in paths:
        sample = ad.read_h5ad(path)
        columns = sample.var_names.get_indexer(genes)
        if (columns < 0).any():
            missing = genes[columns < 0][:5].tolist()
            raise InputDataError(
                f"{path} lacks genes of the merged data (e.g. {missing}); it was written by "
                "another run: rerun the QC step for this sample (delete the file and run "
                "snakemake again)")
        rows = cells.get_indexer(sample.obs_names)
        kept = np.flatnonzero(rows >= 0)
        x = sparse.csr_matrix(sample.X, dtype=np.float32)[kept][:, columns]
        yield rows[kept], sparse.csr_matrix(x)


def counts_matrix(paths: Sequence[str | PathLike], cells: pd.Index, genes: pd.Index
                  ) -> sparse.csr_matrix:
    """Raw counts of ``cells`` x ``genes`` (float32 CSR, in that order) from the QC files.

    Every cell must be found in one of the files; if not, the error names some missing
    cells (the QC files and the merged data come from different runs).
    """
    cells = pd.Index(cells)
    positions, blocks = [], []
    for rows, block in iter_sample_counts(paths, cells, genes):
        positions.append(rows)
        blocks.append(block)
    found = np.concatenate(positions) if positions else np.array([], dtype=np.intp)
    if found.size != len(cells) or np.unique(found).size != found.size:
        missing = cells.delete(found)[:5].tolist() if found.size < len(cells) else []
        raise InputDataError(
            f"the QC files hold {found.size} of the {len(cells)} cells (missing e.g. "
            f"{missing}); they come from another run: rerun the workflow from the QC step")
    stacked = sparse.vstack(blocks, format="csr") if blocks else sparse.csr_matrix(
        (0, len(genes)), dtype=np.float32)
    return sparse.csr_matrix(stacked[np.argsort(found, kind="stable")])
