# The run's gene-set library: every GMT matched to the data's genes once (synonyms,
# orthologs, genesets.min_genes, scoring.sets); scoring, annotation, GSEA and plots read it.

final_outputs("results/genesets/gene_set_report.tsv")


rule gene_set_library:
    input:
        h5ad="results/cluster/clustered.h5ad",
        files=gene_set_files(),
    output:
        library="results/genesets/library.json",
        report=report(
            "results/genesets/gene_set_report.tsv",
            caption="../report/gene_set_report.rst",
            category="3. Gene-set scores",
            subcategory="Gene sets",
            labels={"table": "genes found per set"},
        ),
    params:
        genesets=report_json(config["genesets"]),
        sets=report_json(config["scoring"]["sets"]),
        species=SPECIES,
    log:
        "logs/genesets/gene_set_library.log",
    benchmark:
        "benchmarks/genesets/gene_set_library.tsv"
    threads: 1
    resources:
        mem_mb=scaled_mem_mb(1000),
        runtime=scaled_runtime(5, 0),
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/gene_set_library.py"
