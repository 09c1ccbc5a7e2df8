"""Import published PDAE and Diff-AE checkpoints into our model-folder format (`pdae.checkpoint`).

docs/protocol.md §3 describes every layout:
  pdae-dpm            official PDAE pre-trained DPM folder: `config.yml` (`denoise_fn_config`) +
                      `checkpoint.pt` (`ema_denoise_fn`, a plain U-Net state dict)      -> method "dpm"
  diffae-ddim         Diff-AE DDIM baseline `last.ckpt`: `state_dict["ema_model.*"]`, prefix stripped,
                      buffer `x_T` ignored (§3.4)                                       -> method "dpm"
  pdae-autoencoder    official PDAE autoencoder folder: `checkpoint.pt` (`ema_encoder`, `ema_decoder` = the
                      whole ShiftUNet) + `config.yml` (`encoder_config`, `decoder_config`,
                      `diffusion_config`, `trained_ddpm_config`)                         -> method "pdae"
  diffae-autoencoder  Diff-AE autoencoder `last.ckpt` (`ema_model.*`, `conds_mean/std`) -> method "diffae"
  diffae-latent       Diff-AE latent DPM `last.ckpt` (`ema_model.latent_net.*`, `conds_mean/std`)
                                                                                         -> method "latent"
  pdae-latent         official PDAE latent DPM folder `trained-models/latent_denoise_fn/<name>/`:
                      `config.yml` (`latent_denoise_fn_config`) + `checkpoint.pt`
                      (`ema_latent_denoise_fn`, same keys as Diff-AE's `latent_net`), plus the latent
                      statistics `trained-models/latents/<name>.pt` (`{"mean", "std"}`) -> method "latent"
Every import checks keys and shapes against the architecture it declares (on the meta device, so
full-size models cost no memory), stores the source tensors unchanged, and records the source files
and their SHA-256 in metadata.json. Pickles are read with `safe_torch_load` (no code is executed).

Architectures: PDAE folders carry their own config; Diff-AE checkpoints are described either by a
named preset (the official templates' TrainConfig values) or by `auto` (the checkpoint's own
`hyper_parameters`); `config` overrides any constructor argument per component (small test models).

Modules, one per source: `pdae` (official PDAE code, ckczzj/PDAE), `diffae` (phizaz/diffae), `foreign`
(diffusers / openai ADM priors), `common` (shared helpers), `cli` (`pdae import`).
"""

from __future__ import annotations

from pdae.importers.cli import IMPORT_KINDS, register_cli
from pdae.importers.common import Converted, check_source_kind
from pdae.importers.diffae import (
    AUTO_PRESET,
    DEFAULT_PRESET,
    DIFFAE_LATENT_METHOD_KWARGS,
    DIFFAE_PRESETS,
    convert_diffae_autoencoder,
    convert_diffae_ddim,
    convert_diffae_latent,
    diffae_autoencoder_kwargs,
    diffae_latent_kwargs,
    diffae_unet_kwargs,
    import_diffae_autoencoder,
    import_diffae_ddim,
    import_diffae_latent,
)
from pdae.importers.foreign import PRIOR_KINDS, import_prior, load_adm_prior, load_diffusers_prior, load_prior
from pdae.importers.pdae import (
    PDAE_ENCODER_IMAGE_SIZE,
    PDAE_ENCODER_NUM_HEADS,
    PDAE_LATENT_CONFIG_KEYS,
    PDAE_LATENT_METHOD_KWARGS,
    PDAE_LATENT_SCHEDULE,
    PDAE_METHOD_KWARGS,
    convert_pdae_autoencoder,
    convert_pdae_dpm,
    convert_pdae_latent,
    import_pdae_autoencoder,
    import_pdae_dpm,
    import_pdae_latent,
    infer_encoder_kwargs,
    pdae_latent_kwargs,
)

__all__ = [
    "AUTO_PRESET",
    "Converted",
    "DEFAULT_PRESET",
    "DIFFAE_LATENT_METHOD_KWARGS",
    "DIFFAE_PRESETS",
    "IMPORT_KINDS",
    "PDAE_ENCODER_IMAGE_SIZE",
    "PDAE_ENCODER_NUM_HEADS",
    "PDAE_LATENT_CONFIG_KEYS",
    "PDAE_LATENT_METHOD_KWARGS",
    "PDAE_LATENT_SCHEDULE",
    "PDAE_METHOD_KWARGS",
    "PRIOR_KINDS",
    "check_source_kind",
    "convert_diffae_autoencoder",
    "convert_diffae_ddim",
    "convert_diffae_latent",
    "convert_pdae_autoencoder",
    "convert_pdae_dpm",
    "convert_pdae_latent",
    "diffae_autoencoder_kwargs",
    "diffae_latent_kwargs",
    "diffae_unet_kwargs",
    "import_diffae_autoencoder",
    "import_diffae_ddim",
    "import_diffae_latent",
    "import_pdae_autoencoder",
    "import_pdae_dpm",
    "import_pdae_latent",
    "import_prior",
    "infer_encoder_kwargs",
    "load_adm_prior",
    "load_diffusers_prior",
    "load_prior",
    "pdae_latent_kwargs",
    "register_cli",
]
