"""Rule make_demo: write the synthetic demo data set and its truth."""

from mscflow.demo import DemoSpec, generate_demo
from mscflow.genesets import read_gmt
from mscflow.workflow import setup_logging

log = setup_logging(snakemake.log[0])  # noqa: F821
params = snakemake.params  # noqa: F821
spec = DemoSpec(seed=params.seed, cells_per_sample=params.cells_per_sample,
                replicates=params.replicates)
sheet = generate_demo(
    params.outdir,
    read_gmt(snakemake.input.programmes),  # noqa: F821
    read_gmt(snakemake.input.markers),  # noqa: F821
    spec,
)
log.info("wrote %d demo samples to %s", len(sheet), params.outdir)
