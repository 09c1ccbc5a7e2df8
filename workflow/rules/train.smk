# Training: the pre-trained DPM (once per dataset), the autoencoders per seed, and the small models on z.
# Every rule calls `pdae train`; an interrupted job resumes from <out>.resume/ when it is rerun (a cluster job
# ended by its time limit too: profiles/slurm resubmits it). Progress lines go to the log (pdae.progress).


rule train_dpm:
    input:
        config=lambda wc: train_config(wc.dataset, "dpm"),
    output:
        model=directory("results/{dataset}/dpm/model"),
    wildcard_constraints:
        dataset=datasets_with_prior(("native",)),
    priority: 10  # PDAE and the evaluations wait for it: start it first
    conda:
        ENV
    log:
        "logs/{dataset}/train_dpm.log",
    benchmark:
        "results/benchmarks/{dataset}/train_dpm.tsv"
    params:
        launch=launcher,
        omp=omp_threads,
        data=data_override,
        device=config["device"],
    threads: TRAIN_THREADS
    resources:
        gpu=TRAIN_GPUS,
        runtime=RES["train_runtime_min"],
        mem_mb=RES["train_mem_mb"],
    shell:
        "OMP_NUM_THREADS={params.omp} {params.launch} train dpm --config {input.config} --out {output.model}"
        " {params.data} --seed 0 --device {params.device} > {log} 2>&1"


rule import_prior:
    """A public DPM as PDAE's frozen prior (diffusers UNet2DModel folder or openai ADM checkpoint)."""
    input:
        src=lambda wc: settings(wc.dataset)["prior"]["path"],
    output:
        model=directory("results/{dataset}/dpm/model"),
    wildcard_constraints:
        dataset=datasets_with_prior(("diffusers", "adm")),
    conda:
        ENV
    log:
        "logs/{dataset}/import_prior.log",
    benchmark:
        "results/benchmarks/{dataset}/import_prior.tsv",
    params:
        kind=lambda wc: settings(wc.dataset)["prior"]["kind"],
        opts=lambda wc: (
            f"--flags {settings(wc.dataset)['prior'].get('flags', '')!r} --family {settings(wc.dataset)['prior'].get('family', 'guided')}"
            if settings(wc.dataset)["prior"]["kind"] == "adm"
            else ""
        ),
    shell:
        "python -m pdae import {params.kind} {input.src} --out {output.model} {params.opts} > {log} 2>&1"


rule import_published:
    """A published checkpoint (dataset_settings.<d>.published) converted into the folder its training rule would
    write: evaluate, don't train. Nothing in the pickles is executed (pdae.safe_pickle)."""
    input:
        src=lambda wc: PUBLISHED[wc.target]["path"],
        latents=lambda wc: [PUBLISHED[wc.target]["latents"]] if PUBLISHED[wc.target].get("latents") else [],
    output:
        model=directory("results/{target}"),
    wildcard_constraints:
        target=published_regex(),
    conda:
        ENV
    log:
        "logs/import_published/{target}.log",
    benchmark:
        "results/benchmarks/import_published/{target}.tsv"
    params:
        kind=lambda wc: PUBLISHED[wc.target]["kind"],
        opts=import_options,
    shell:
        "python -m pdae import {params.kind} {input.src:q} --out {output.model} {params.opts} > {log} 2>&1"


# A published folder is imported, never trained (its wildcard constraint matches exactly the published ones).
ruleorder: import_published > train_dpm
ruleorder: import_published > import_prior
ruleorder: import_published > train_autoencoder
ruleorder: import_published > train_latent


rule train_feature_net:
    input:
        config=lambda wc: train_config(wc.dataset, "feature_net"),
    output:
        model=directory("results/{dataset}/feature_net/model"),
    conda:
        ENV
    log:
        "logs/{dataset}/train_feature_net.log",
    benchmark:
        "results/benchmarks/{dataset}/train_feature_net.tsv"
    params:
        data=data_override,
        device=config["device"],
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
        runtime=RES["train_runtime_min"],
        mem_mb=RES["train_mem_mb"],
    shell:
        "OMP_NUM_THREADS={threads} python -m pdae train feature-net --config {input.config} --out {output.model}"
        " {params.data} --seed 0 --device {params.device} > {log} 2>&1"


rule train_autoencoder:
    """PDAE (paper weighting), PDAE with lambda_t = 1 (ablation) or Diff-AE, one seed."""
    input:
        config=lambda wc: train_config(wc.dataset, wc.variant),
        dpm=lambda wc: [] if wc.variant == "diffae" else dpm_folder(wc),
    output:
        model=directory("results/{dataset}/{variant}/seed{seed}/model"),
    # Long jobs first (then the latent DPMs, then the evaluations): the short evaluations fill the last minutes
    # on every core instead of one core waiting for a late training run.
    priority: 5
    conda:
        ENV
    log:
        "logs/{dataset}/train_{variant}_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/train_{variant}_seed{seed}.tsv"
    params:
        launch=launcher,
        omp=omp_threads,
        method=lambda wc: "diffae" if wc.variant == "diffae" else "pdae",
        dpm=lambda wc, input: f"--dpm {input.dpm}" if input.dpm else "",
        data=data_override,
        device=config["device"],
    threads: TRAIN_THREADS
    resources:
        gpu=TRAIN_GPUS,
        runtime=RES["train_runtime_min"],
        mem_mb=RES["train_mem_mb"],
    shell:
        "OMP_NUM_THREADS={params.omp} {params.launch} train {params.method} --config {input.config} {params.dpm}"
        " --out {output.model} {params.data} --seed {wildcards.seed} --device {params.device}"
        " > {log} 2>&1"


rule train_pdae_class:
    """Class-conditional PDAE (label instead of z) for the truncation-like effect."""
    input:
        config=lambda wc: train_config(wc.dataset, "pdae_class"),
        dpm=dpm_folder,
    output:
        model=directory("results/{dataset}/pdae_class/seed{seed}/model"),
    priority: 5
    conda:
        ENV
    log:
        "logs/{dataset}/train_pdae_class_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/train_pdae_class_seed{seed}.tsv"
    params:
        launch=launcher,
        omp=omp_threads,
        data=data_override,
        device=config["device"],
    threads: TRAIN_THREADS
    resources:
        gpu=TRAIN_GPUS,
        runtime=RES["train_runtime_min"],
        mem_mb=RES["train_mem_mb"],
    shell:
        "OMP_NUM_THREADS={params.omp} {params.launch} train pdae-class --config {input.config} --dpm {input.dpm}"
        " --out {output.model} {params.data} --seed {wildcards.seed} --device {params.device}"
        " > {log} 2>&1"


rule train_latent:
    """Latent DPM on the autoencoder's normalised z (unconditional and few-shot sampling)."""
    input:
        config=lambda wc: train_config(wc.dataset, "latent"),
        encoder="results/{dataset}/{ae}/seed{seed}/model",
    output:
        model=directory("results/{dataset}/{ae}/seed{seed}/latent"),
    priority: 3
    conda:
        ENV
    log:
        "logs/{dataset}/train_latent_{ae}_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/train_latent_{ae}_seed{seed}.tsv"
    params:
        data=data_override,
        device=config["device"],
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
        runtime=RES["train_runtime_min"],
        mem_mb=RES["train_mem_mb"],
    shell:
        "OMP_NUM_THREADS={threads} python -m pdae train latent --config {input.config} --encoder {input.encoder}"
        " --out {output.model} {params.data} --seed {wildcards.seed} --device {params.device}"
        " > {log} 2>&1"


rule train_classifier:
    """Linear head on the autoencoder's normalised z (attribute manipulation)."""
    input:
        config=lambda wc: train_config(wc.dataset, "classifier"),
        encoder="results/{dataset}/{ae}/seed{seed}/model",
    output:
        model=directory("results/{dataset}/{ae}/seed{seed}/classifier"),
    conda:
        ENV
    log:
        "logs/{dataset}/train_classifier_{ae}_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/train_classifier_{ae}_seed{seed}.tsv"
    params:
        data=data_override,
        device=config["device"],
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
        runtime=RES["train_runtime_min"],
        mem_mb=RES["train_mem_mb"],
    shell:
        "OMP_NUM_THREADS={threads} python -m pdae train classifier --config {input.config} --encoder {input.encoder}"
        " --out {output.model} {params.data} --seed {wildcards.seed} --device {params.device}"
        " > {log} 2>&1"
