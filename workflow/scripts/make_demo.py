"""Rule make_demo: write the synthetic demo data set and its truth."""

from mscflow import job
from mscflow.demo.model import DemoSpec
from mscflow.demo.simulate import generate_demo
from mscflow.genesets import read_gmt

smk = snakemake  # noqa: F821
log = job.start(smk)
sheet = generate_demo(smk.params.outdir, read_gmt(smk.input.programmes),
                      read_gmt(smk.input.markers), DemoSpec.from_config(smk.params.demo))
log.info("wrote %d demo samples to %s", len(sheet), smk.params.outdir)
