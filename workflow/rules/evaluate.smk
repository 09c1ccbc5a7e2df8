# Evaluation: every table and figure of the paper, as `python -m eval` commands writing records/NPZ files.
# `ddim` is the plain pre-trained DPM (one per dataset) evaluated with each seed's noise.
# Every command runs on config["device"]; on a GPU config each job holds one GPU (JOB_GPU, common.smk) and writes
# progress lines (samples done, rate, ETA) to its log.


rule compute_ref_stats:
    """Reference FID statistics of real training images (a file, reused by every FID)."""
    input:
        model=ref_stats_model,
    output:
        stats="results/{dataset}/eval/ref_stats.npz",
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
    conda:
        ENV
    log:
        "logs/{dataset}/compute_ref_stats.log",
    benchmark:
        "results/benchmarks/{dataset}/compute_ref_stats.tsv"
    params:
        device=config["device"],
        batch=EVAL_BATCH_ARG,
        backend=backend_args,
        model=lambda wc, input: f"--model {input.model}" if input.model else "",
        n=EVAL["ref_images"],
        select=ref_selection_args,
        data=eval_data,
    shell:
        "python -m eval ref-stats {params.model} --num-images {params.n} {params.select} --out {output.stats}"
        " {params.backend} {params.data} {params.batch} --device {params.device} > {log} 2>&1"


rule evaluate_reconstruction:
    """Table 1 (+ Fig. 6 for PDAE): SSIM / LPIPS or feat_dist / MSE, random and inferred x_T, DDIM steps; unrelated-pair floor."""
    input:
        model=recon_model,
        backend=backend_inputs,
    output:
        records="results/{dataset}/{rmethod}/seed{seed}/eval/recon.json",
        arrays="results/{dataset}/{rmethod}/seed{seed}/eval/recon.npz",
    wildcard_constraints:
        rmethod="pdae|diffae|ddim",
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
    conda:
        ENV
    log:
        "logs/{dataset}/evaluate_reconstruction_{rmethod}_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/evaluate_reconstruction_{rmethod}_seed{seed}.tsv"
    params:
        device=config["device"],
        batch=EVAL_BATCH_ARG,
        backend=backend_args,
        steps=" ".join(str(s) for s in EVAL["recon"]["steps"]),
        ddpm=lambda wc: "--ddpm" if wc.rmethod == "pdae" and EVAL["recon"]["ddpm"] and int(wc.seed) in FIGURE_SEEDS
        else "",
        encode=recon_encode_steps,
        x_T=recon_x_T_modes,
        n=EVAL["recon"]["num_images"],
        data=recon_data,
    shell:
        "python -m eval reconstruct --model {input.model} --steps {params.steps} --x-T {params.x_T} {params.ddpm}"
        " --encode-steps {params.encode}"
        " --num-images {params.n} --seed {wildcards.seed} --out {output.records} --arrays {output.arrays}"
        " {params.backend} {params.data} {params.batch} --device {params.device} > {log} 2>&1"


rule evaluate_gap:
    """Fig. 1/5: posterior-mean gap over t for the DPM, PDAE and Diff-AE (Gaussian noise)."""
    input:
        dpm=dpm_folder,
        pdae="results/{dataset}/pdae/seed{seed}/model",
        diffae="results/{dataset}/diffae/seed{seed}/model",
    output:
        records="results/{dataset}/gap/seed{seed}.json",
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
    conda:
        ENV
    log:
        "logs/{dataset}/evaluate_gap_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/evaluate_gap_seed{seed}.tsv"
    params:
        device=config["device"],
        batch=EVAL_BATCH_ARG,
        stride=EVAL["gap"]["t_stride"],
        n=EVAL["gap"]["num_images"],
        data=eval_data,
    shell:
        "python -m eval gap --dpm {input.dpm} --pdae {input.pdae} --diffae {input.diffae} --t-stride {params.stride}"
        " --num-images {params.n} --seed {wildcards.seed} --out {output.records} {params.data} {params.batch} --device {params.device} > {log} 2>&1"


rule render_denoise_arrays:
    """Fig. 5 left (denoise in one step) and appendix C.6 (the learned shift G), first seed."""
    input:
        pdae="results/{dataset}/pdae/seed{seed}/model",
    output:
        denoise="results/{dataset}/pdae/seed{seed}/eval/denoise.npz",
        shift="results/{dataset}/pdae/seed{seed}/eval/shift.npz",
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
    conda:
        ENV
    log:
        "logs/{dataset}/render_denoise_arrays_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/render_denoise_arrays_seed{seed}.tsv",
    params:
        device=config["device"],
        data=eval_data,
    shell:
        "(python -m eval denoise-one-step --pdae {input.pdae} --out {output.denoise} {params.data} --device {params.device}"
        " && python -m eval shift-pictures --pdae {input.pdae} --out {output.shift} {params.data} --device {params.device}"
        ") > {log} 2>&1"


rule evaluate_unconditional:
    """Table 2: FID of unconditional samples (latent DPM -> z -> shifted DDIM; plain DDIM for `ddim`)."""
    input:
        model=recon_model,
        latent=lambda wc: [] if wc.rmethod == "ddim" else f"results/{wc.dataset}/{wc.rmethod}/seed{wc.seed}/latent",
        stats="results/{dataset}/eval/ref_stats.npz",
        backend=backend_inputs,
    output:
        records="results/{dataset}/{rmethod}/seed{seed}/eval/uncond.json",
        arrays="results/{dataset}/{rmethod}/seed{seed}/eval/uncond.npz",
    wildcard_constraints:
        rmethod="pdae|diffae|ddim",
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
    conda:
        ENV
    log:
        "logs/{dataset}/evaluate_unconditional_{rmethod}_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/evaluate_unconditional_{rmethod}_seed{seed}.tsv"
    params:
        device=config["device"],
        batch=EVAL_BATCH_ARG,
        models=lambda wc, input: f"--dpm {input.model}" if wc.rmethod == "ddim"
        else f"--autoencoder {input.model} --latent {input.latent}",
        steps=" ".join(str(s) for s in EVAL["uncond"]["steps"]),
        n=EVAL["uncond"]["num_samples"],
        stop=EVAL["uncond"]["stop_fraction"],
        clip=lambda wc: clip_args(wc.rmethod),
        backend=backend_args,
        data=eval_data,
    shell:
        "python -m eval uncond {params.models} --steps {params.steps} --num-samples {params.n} --stop-fraction {params.stop}"
        " {params.clip} --ref-stats {input.stats} --seed {wildcards.seed} --out {output.records} --arrays {output.arrays}"
        " {params.backend} {params.data} {params.batch} --device {params.device} > {log} 2>&1"


rule evaluate_fewshot:
    """Table 3: few-shot conditional generation (D2C protocol), binary and PU scenarios."""
    input:
        model="results/{dataset}/{ae}/seed{seed}/model",
        latent="results/{dataset}/{ae}/seed{seed}/latent",
        backend=backend_inputs,
    output:
        records="results/{dataset}/{ae}/seed{seed}/eval/fewshot_{scenario}.json",
        arrays="results/{dataset}/{ae}/seed{seed}/eval/fewshot_{scenario}.npz",
    wildcard_constraints:
        scenario="binary|pu",
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
    conda:
        ENV
    log:
        "logs/{dataset}/evaluate_fewshot_{ae}_{scenario}_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/evaluate_fewshot_{ae}_{scenario}_seed{seed}.tsv"
    params:
        device=config["device"],
        batch=EVAL_BATCH_ARG,
        classes=lambda wc: fewshot_class_args(wc.dataset),
        cfg=EVAL["fewshot"],
        clip=lambda wc: clip_args(wc.ae),
        backend=backend_args,
        data=eval_data,
    shell:
        "python -m eval fewshot --autoencoder {input.model} --latent {input.latent} --scenario {wildcards.scenario}"
        " {params.classes} --num-labelled {params.cfg[num_labelled]} --num-unlabelled {params.cfg[num_unlabelled]}"
        " --num-samples {params.cfg[num_samples]} --steps {params.cfg[steps]} {params.clip} --seed {wildcards.seed}"
        " --out {output.records} --arrays {output.arrays} {params.backend} {params.data}"
        " {params.batch} --device {params.device} > {log} 2>&1"


use rule evaluate_fewshot as evaluate_fewshot_attribute with:
    output:
        records="results/{dataset}/{ae}/seed{seed}/eval/fewshot_{scenario}_{attribute}.json",
        arrays="results/{dataset}/{ae}/seed{seed}/eval/fewshot_{scenario}_{attribute}.npz",
    wildcard_constraints:
        scenario="binary|pu",
        attribute=fewshot_attributes_regex(),
    log:
        "logs/{dataset}/evaluate_fewshot_{ae}_{scenario}_{attribute}_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/evaluate_fewshot_{ae}_{scenario}_{attribute}_seed{seed}.tsv"
    params:
        device=config["device"],
        batch=EVAL_BATCH_ARG,
        classes=lambda wc: f"--attribute {shlex.quote(wc.attribute)}",
        cfg=EVAL["fewshot"],
        clip=lambda wc: clip_args(wc.ae),
        backend=backend_args,
        data=eval_data,


rule evaluate_interpolation:
    """Fig. 7: interpolation between two held-out images (z lerp / G lerp, x_T slerp)."""
    input:
        model="results/{dataset}/{ae}/seed{seed}/model",
        backend=backend_inputs,
    output:
        records="results/{dataset}/{ae}/seed{seed}/eval/interpolation.json",
        arrays="results/{dataset}/{ae}/seed{seed}/eval/interpolation.npz",
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
    conda:
        ENV
    log:
        "logs/{dataset}/evaluate_interpolation_{ae}_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/evaluate_interpolation_{ae}_seed{seed}.tsv",
    params:
        device=config["device"],
        batch=EVAL_BATCH_ARG,
        cfg=EVAL["interpolation"],
        backend=backend_args,
        data=eval_data,
    shell:
        "python -m eval interpolate --autoencoder {input.model} --num-pairs {params.cfg[num_pairs]}"
        " --steps {params.cfg[steps]} --encode-steps {params.cfg[encode_steps]} --seed {wildcards.seed}"
        " --out {output.records} --arrays {output.arrays} {params.backend} {params.data} {params.batch} --device {params.device}"
        " > {log} 2>&1"


rule evaluate_manipulation:
    """Fig. 8: attribute manipulation along a linear classifier's direction in z, measured."""
    input:
        model="results/{dataset}/{ae}/seed{seed}/model",
        classifier="results/{dataset}/{ae}/seed{seed}/classifier",
        backend=backend_inputs,
    output:
        records="results/{dataset}/{ae}/seed{seed}/eval/manipulation.json",
        arrays="results/{dataset}/{ae}/seed{seed}/eval/manipulation.npz",
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
    conda:
        ENV
    log:
        "logs/{dataset}/evaluate_manipulation_{ae}_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/evaluate_manipulation_{ae}_seed{seed}.tsv",
    params:
        device=config["device"],
        batch=EVAL_BATCH_ARG,
        cfg=EVAL["manipulation"],
        attribute=lambda wc: settings(wc.dataset)["manipulation_attribute"],
        strengths=" ".join(str(s) for s in EVAL["manipulation"]["strengths"]),
        backend=backend_args,
        data=eval_data,
    shell:
        "python -m eval manipulate --autoencoder {input.model} --classifier {input.classifier}"
        " --attribute {params.attribute:q} --strengths {params.strengths} --num-images {params.cfg[num_images]}"
        " --steps {params.cfg[steps]} --encode-steps {params.cfg[encode_steps]} --seed {wildcards.seed}"
        " --out {output.records} --arrays {output.arrays} {params.backend} {params.data} {params.batch} --device {params.device}"
        " > {log} 2>&1"


rule evaluate_truncation:
    """Fig. 9: class-conditional PDAE, FID and class accuracy versus the scale of G."""
    input:
        model="results/{dataset}/pdae_class/seed{seed}/model",
        stats="results/{dataset}/eval/ref_stats.npz",
        backend=backend_inputs,
    output:
        records="results/{dataset}/pdae_class/seed{seed}/eval/truncation.json",
        arrays="results/{dataset}/pdae_class/seed{seed}/eval/truncation.npz",
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
    conda:
        ENV
    priority: 2  # long: not among the last jobs
    log:
        "logs/{dataset}/evaluate_truncation_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/evaluate_truncation_seed{seed}.tsv"
    params:
        device=config["device"],
        batch=EVAL_BATCH_ARG,
        cfg=EVAL["truncation"],
        scales=" ".join(str(s) for s in EVAL["truncation"]["scales"]),
        backend=lambda wc: f"--backend domain --feature-net results/{wc.dataset}/feature_net/model",
        data=eval_data,
    shell:
        "python -m eval truncation --model {input.model} --scales {params.scales} --num-samples {params.cfg[num_samples]}"
        " --steps {params.cfg[steps]} --ref-stats {input.stats} --seed {wildcards.seed} --out {output.records}"
        " --arrays {output.arrays} {params.backend} {params.data} {params.batch} --device {params.device} > {log} 2>&1"


rule evaluate_probe:
    """Linear probe of frozen z (PDAE, Diff-AE) against an untrained encoder and raw pixels."""
    input:
        pdae="results/{dataset}/pdae/seed{seed}/model",
        diffae="results/{dataset}/diffae/seed{seed}/model",
    output:
        records="results/{dataset}/probe/seed{seed}.json",
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
    conda:
        ENV
    log:
        "logs/{dataset}/evaluate_probe_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/evaluate_probe_seed{seed}.tsv",
    params:
        device=config["device"],
        batch=EVAL_BATCH_ARG,
        cfg=EVAL["probe"],
        data=eval_data,
    shell:
        "python -m eval probe --encoder pdae={input.pdae} --encoder diffae={input.diffae} --random-encoder --pixels"
        " --num-train {params.cfg[num_train]} --num-test {params.cfg[num_test]} --seed {wildcards.seed}"
        " --out {output.records} {params.data} {params.batch} --device {params.device} > {log} 2>&1"


rule evaluate_efficiency:
    """Training efficiency: reconstruction quality of the training snapshots vs images seen and wall time."""
    input:
        pdae=expand("results/{{dataset}}/pdae/seed{seed}/model", seed=SEEDS),
        diffae=expand("results/{{dataset}}/diffae/seed{seed}/model", seed=SEEDS),
        backend=backend_inputs,
    output:
        records="results/{dataset}/efficiency.json",
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
    conda:
        ENV
    priority: 2  # among the longest evaluations (73-77 s here): not among the last jobs
    log:
        "logs/{dataset}/evaluate_efficiency.log",
    benchmark:
        "results/benchmarks/{dataset}/evaluate_efficiency.tsv"
    params:
        device=config["device"],
        batch=EVAL_BATCH_ARG,
        cfg=EVAL["efficiency"],
        backend=backend_args,
        data=eval_data,
    shell:
        "python -m eval efficiency --pdae {input.pdae} --diffae {input.diffae} --steps {params.cfg[steps]}"
        " --num-images {params.cfg[num_images]} --out {output.records} {params.backend} {params.data} {params.batch} --device {params.device} > {log} 2>&1"


rule evaluate_ablation:
    """Weighting ablation (paper §3.4): PDAE with SNR^gamma/(1+SNR) vs lambda_t = 1."""
    input:
        snr="results/{dataset}/pdae/seed{seed}/model",
        uniform="results/{dataset}/pdae_uniform/seed{seed}/model",
    output:
        records="results/{dataset}/ablation/seed{seed}.json",
    threads: JOB_THREADS
    resources:
        **JOB_GPU,
    conda:
        ENV
    log:
        "logs/{dataset}/evaluate_ablation_seed{seed}.log",
    benchmark:
        "results/benchmarks/{dataset}/evaluate_ablation_seed{seed}.tsv",
    params:
        device=config["device"],
        batch=EVAL_BATCH_ARG,
        cfg=EVAL["efficiency"],
        images=ablation_images,
        data=eval_data,
    shell:
        "python -m eval ablation --runs {input.snr} {input.uniform} --images {params.images} --steps {params.cfg[steps]}"
        " --num-images {params.cfg[num_images]} --seed {wildcards.seed} --out {output.records} {params.data} {params.batch} --device {params.device} > {log} 2>&1"
