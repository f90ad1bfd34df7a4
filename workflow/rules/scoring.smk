# Gene-set scoring of the programmes (macrophage, efferocytosis, IL-10) with the compiled kernel.


rule score_programmes:
    input:
        h5ad="results/cluster/clustered.h5ad",
        gmts=programme_gmts(),
        synonyms=config["genesets"].get("synonyms", "resources/genesets/symbol_synonyms.tsv"),
        orthologs=config["genesets"].get("orthologs", "resources/orthologs/mouse_human_hcop.tsv.gz"),
    output:
        scores="results/scores/scores.parquet",
        table="results/scores/scores.tsv.gz",
        report=report(
            "results/scores/gene_set_report.tsv",
            caption="../report/gene_set_report.rst",
            category="3. Gene-set scores",
            subcategory="Gene sets",
            labels={"table": "genes found per set"},
        ),
    params:
        gmt_species=programme_gmt_species(),
        data_species=species_of_run(),
        scoring=config["scoring"],
        min_genes=config["genesets"]["min_genes"],
        seed=config["seed"],
    log:
        "logs/scores/score_programmes.log",
    benchmark:
        "benchmarks/scores/score_programmes.tsv"
    threads: 2
    resources:
        mem_mb=scaled_mem_mb(2000, 3 * H5AD_MB),
        runtime=lambda wc, attempt: 20 * attempt,
    conda:
        "../../envs/mscflow.yaml"
    script:
        "../scripts/score_programmes.py"
