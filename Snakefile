# pdae-bench: PDAE vs Diff-AE vs DDIM, every table and figure from one command.
#   snakemake --cores all                         # the embedded default (config/config.yaml)
#   snakemake --profile profiles/slurm --configfile config/paper/ffhq128.yaml   # one SLURM job per rule
#   snakemake --report results/report.html
# The DAG only calls the `pdae` and `python -m eval` command lines; it holds no math.

from snakemake.utils import min_version

min_version("8.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# Tables, claims and figures: seconds of work on small files, run by the submitting snakemake, not queued on a cluster.
localrules:
    all,
    make_tables,
    make_claims,
    plot_figure,


rule all:
    default_target: True
    input:
        final_outputs(),
