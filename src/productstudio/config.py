"""params.yaml -> typed settings, one section per pipeline step.

A mistake in params.yaml stops with one line that names the key and what is allowed,
for example: ``params.yaml: preprocess.image_size = -3: choose one of 28, 32, 64, 128``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

DEFAULT_PARAMS = Path("params.yaml")
IMAGE_SIZES = (28, 32, 64, 128)
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"  # a Kubernetes resource quantity


from productstudio.errors import ParamsError  # noqa: E402,F401  (re-exported: settings raise it)


def _check_metric_names(names: list[str]) -> list[str]:
    from productstudio.metric_names import parse_metric  # torch-free: params load fast

    for name in names:
        parse_metric(name)
    return names


# Keys that moved to another section; an old params.yaml is told where they went.
MOVED_KEYS = {f"evaluate.{key}": f"protocol.{key}" for key in ("seed", "batch_size", "kid_subset_size", "kid_subsets")}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestSettings(_Section):
    source: Literal["fashion-mnist", "image-folder"] = "fashion-mnist"
    # Fashion-MNIST IDX files: read from this folder when it exists, else downloaded and md5-checked.
    fashion_mnist_dir: Optional[str] = "../shared/data/fashion-mnist"
    download_url: str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
    # A folder laid out <root>/<category>/<image> or <root>/<split>/<category>/<image>.
    image_folder: Optional[str] = "../shared/data/clothing-dataset-small"
    catalogue_csv: Optional[str] = None
    # The declared category set; null takes the folder names (image-folder) or the 10 Fashion-MNIST names.
    categories: Optional[list[str]] = None
    # Keep only the first N items of each category in each split (quick runs, tests); null keeps all.
    limit_per_category: Optional[int] = Field(default=None, ge=1)


class ValidateSettings(_Section):
    allowed_formats: list[str] = ["IDX", "JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]
    # Source modes we accept; anything but the preprocess mode is converted, never dropped.
    allowed_modes: list[str] = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I;16B", "I"]
    min_side: int = Field(default=16, ge=1)
    max_side: int = Field(default=10000, ge=1)
    # Checked from the header, before any pixel is decoded (decompression bombs).
    max_pixels: int = Field(default=40_000_000, ge=1)
    min_per_category: int = Field(default=1, ge=0)
    max_per_category: Optional[int] = Field(default=None, ge=1)
    # Share of files allowed to have (near-)identical content in another split. Fashion-MNIST
    # itself has 17 such images (0.024 %); photo catalogues should set 0.
    max_leak_fraction: float = Field(default=0.0005, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> "ValidateSettings":
        if self.min_side > self.max_side:
            raise ValueError(f"min_side ({self.min_side}) must not exceed max_side ({self.max_side})")
        if self.max_per_category is not None and self.min_per_category > self.max_per_category:
            raise ValueError("min_per_category must not exceed max_per_category")
        return self


class PreprocessSettings(_Section):
    mode: Literal["L", "RGB"] = "L"
    # Not "size": DVC leaves any key named "size" out of its run-cache key (dvc 3.67,
    # stage/cache.py), so a changed "size" would restore outputs of the old size.
    image_size: int = 28
    resize: Literal["pad", "crop"] = "pad"
    # Grey level used to pad to a square (0 black as Fashion-MNIST, 255 white for studio photos).
    pad_value: int = Field(default=0, ge=0, le=255)
    # Used only for a source without split folders; given splits are kept as they are.
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int = 0
    shard_size: int = Field(default=16384, ge=1)

    @field_validator("image_size")
    @classmethod
    def _known_size(cls, value: int) -> int:
        if value not in IMAGE_SIZES:
            raise ValueError(f"choose one of {', '.join(map(str, IMAGE_SIZES))}")
        return value


class TrainSettings(_Section):
    model: Literal["gan", "cvae"] = "gan"
    latent_dim: int = Field(default=64, ge=2)
    g_width: int = Field(default=32, ge=4)  # generator channels at full resolution
    # conv: nearest upsample + one 3x3 conv per resolution; residual: two convs and a shortcut (BigGAN's block).
    g_block: Literal["conv", "residual"] = "conv"
    d_width: int = Field(default=32, ge=4)  # discriminator (or VAE encoder) channels at full resolution
    batch_size: int = Field(default=64, ge=2)
    lr_g: float = Field(default=4e-4, gt=0)
    lr_d: float = Field(default=8e-4, gt=0)
    beta1: float = Field(default=0.0, ge=0, lt=1)
    beta2: float = Field(default=0.99, ge=0, lt=1)
    ema_decay: float = Field(default=0.999, ge=0, lt=1)
    # DiffAugment policies for the discriminator: any of color, translation, cutout.
    augment: list[Literal["color", "translation", "cutout"]] = []
    # The stopping rule: a step budget, so the same data, params and code give the same weights however busy
    # the machine is. 2,100 compiled steps take about 9 minutes on 2 quiet cores (9-16 depending on the host).
    max_steps: int = Field(default=2100, ge=1)
    # Transitional conditioning (Shahbazi et al. 2022, "Collapse by conditioning"): [start, end] steps over which
    # the category's weight in both networks rises from 0 (unconditional) to 1; null: conditional from the start.
    # Class-conditional GANs on few images per category draw one image per category; starting unconditional avoids it.
    condition_ramp: Optional[tuple[int, int]] = None
    # Mode-seeking weight (Mao et al. 2019, MSGAN): the generator is also pushed to make two latents of one
    # category give images as far apart as the latents are; 0: off. Counters a generator that ignores its latent.
    mode_seeking: float = Field(default=0.0, ge=0)
    # The mode-seeking term compares the two images after average pooling by this factor (1: pixel by pixel). At
    # pixel level a generator can buy distance with a fine speckle that differs between latents; pooled, only
    # differences in shape, colour and layout count.
    mode_seeking_pool: int = Field(default=1, ge=1)
    # Lazy R1 (Mescheder et al. 2018; StyleGAN2's lazy form): every r1_every steps the discriminator also pays
    # r1_gamma / 2 x |d D(real) / d real|^2 (scaled by r1_every), which keeps it smooth around real photos and so
    # discourages generator artefacts it would otherwise reward; 0: off.
    r1_gamma: float = Field(default=0.1, ge=0)
    r1_every: int = Field(default=16, ge=1)
    # The adversarial loss. relativistic (the default since 2026-12-05): RpGAN (R3GAN, Huang et al. 2024), each real
    # image judged against a generated one of its category (fakes take the real batch's categories), paired with R1
    # and R2 as its authors do; at the main job's budget it beat hinge on KID, FID and the classifier's Frechet
    # distance (README). hinge: each image judged on its own (the default until then; the colour configuration's).
    loss: Literal["hinge", "relativistic"] = "relativistic"
    # Lazy R2: as R1 but at generated images (R3GAN's second penalty), on the same steps (r1_every); 0: off.
    r2_gamma: float = Field(default=0.1, ge=0)
    # Draw real photos so that every category comes up equally often (each photo with chance 1 / (categories x
    # its category's count)), as the generator's categories do. On an uneven catalogue (clothing-dataset-small:
    # 795 t-shirts, 112 skirts) uniform draws show the discriminator a fake skirt about 3x as often as a real one.
    balanced_categories: bool = False
    # Learning rates fall linearly to zero over this last share of the run (0: constant).
    lr_decay: float = Field(default=0.0, ge=0, le=1)
    # An optional guard, summed over resumes: reaching it before max_steps stops with an error (the
    # checkpoint is kept, so a rerun with a larger value continues); it never ships a shorter run.
    max_minutes: float | None = Field(default=None, gt=0)
    checkpoint_every: int = Field(default=250, ge=1)
    keep_checkpoints: int = Field(default=3, ge=1)
    log_every: int = Field(default=50, ge=1)
    sample_every: int = Field(default=500, ge=1)
    # Periodic KID against the cached real test features (the time-to-quality curve); 0 turns it off.
    kid_every: int = Field(default=500, ge=0)
    kid_samples: int = Field(default=250, ge=4)
    # Keep the best generator, not the last: the first select_best images of the train split are held out of
    # training, and at every KID point the EMA generator is also measured against them; the one with the lowest
    # such KID is what the run saves (the test set stays for final numbers); 0: the last one is saved. GAN only:
    # the CVAE baseline keeps its last decoder.
    select_best: int = Field(default=0, ge=0)
    seed: int = 0
    threads: int = Field(default=0, ge=0)  # 0: all cores
    # torch.compile the generator and discriminator for training (GAN only): fused kernels, 1.21x the images/s of
    # eager mode over the main job's 2 quiet CPU cores (median 254 against 209; 1.34x in bench/bench_train.py's
    # 30-step loop), after a compile in the first steps (up to about a minute; seconds when torch's compile cache
    # holds the graphs), counted in the run's time. Compiled runs use deterministic algorithms (see
    # productstudio.imaging.reproducible_kernels). Compiled and eager arithmetic differ in the last bits, so the
    # setting is part of what makes the weights (and a checkpoint of one is not resumed by the other). On a CPU it needs a C++ compiler (g++). During a condition_ramp the
    # steps run eager (the ramp changes the networks at every step); compiled ones follow.
    compile: bool = True

    @model_validator(mode="after")
    def _relativistic_pairs_are_by_category(self) -> "TrainSettings":
        if self.loss == "relativistic" and self.mode_seeking:
            # mode seeking redraws the fakes' categories in pairs; the relativistic loss takes the real batch's
            raise ValueError("loss: relativistic takes the real batch's categories for the fakes: set mode_seeking: 0, or loss: hinge "
                             "(with r1_gamma and r2_gamma 0, as configs/clothing-64.yaml does)")
        return self

    @model_validator(mode="after")
    def _selection_needs_kid(self) -> "TrainSettings":
        if self.select_best and not self.kid_every:
            raise ValueError("select_best needs KID points to choose between: set kid_every > 0")
        return self

    @model_validator(mode="after")
    def _ramp_inside_the_run(self) -> "TrainSettings":
        if self.condition_ramp is not None and self.model == "gan":  # the CVAE baseline has no ramp
            start, end = self.condition_ramp
            if not 0 <= start <= end < self.max_steps:
                raise ValueError(f"condition_ramp {list(self.condition_ramp)}: need 0 <= start <= end < max_steps ({self.max_steps})")
        return self


class ProtocolSettings(_Section):
    """How every model is measured, shared by real-stats, evaluate, quantize, promote and deploy analyze: the
    same latent seed, batch size and KID subsets make their numbers comparable (and their cached features reusable)."""

    seed: int = 1234  # latents of the generated set: same seeds for every model compared
    batch_size: int = Field(default=50, ge=1)  # generation and feature extraction
    kid_subset_size: int = Field(default=1000, ge=2)
    kid_subsets: int = Field(default=50, ge=1)


class EvaluateSettings(_Section):
    # Named metrics, stylegan2-ada style: (fid|kid)<count>[k]_(train|test), e.g. fid2k_test, fid10k_test.
    metrics: list[str] = ["fid1k_test", "kid1k_test"]
    per_category: bool = True
    floor: bool = True  # also report real train vs real test at the same counts (what a perfect model gets)
    classifier_epochs: int = Field(default=2, ge=1)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, names: list[str]) -> list[str]:
        return _check_metric_names(names)


class QuantizeSettings(_Section):
    """int8 post-training quantization of the generator for CPU serving (productstudio.quantization).

    Static quantization with ONNX Runtime (QDQ format, chosen by bench/bench_quantize.py over PT2E/torchao),
    calibrated on latents and categories drawn as serving draws them; the cost and benefit are measured in
    the same run (latency, throughput, size, PSNR and FID/KID against the fp32 model on the same seeds)."""

    per_channel: bool = True  # one weight scale per output channel
    # 7-bit weights: avoids the int16 saturation of u8 x s8 products on AVX2 CPUs without VNNI.
    reduce_range: bool = True
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(default=512, ge=1)
    calibration_seed: int = 7  # not protocol.seed: the quality check uses inputs the calibration never saw
    # Optional pruning before quantization: the smallest weights (or output channels) zeroed for good.
    prune: Literal["none", "l1_unstructured", "ln_structured"] = "none"
    prune_amount: float = Field(default=0.0, ge=0.0, lt=1.0)
    # Quality on the same seeds as evaluate (protocol.seed), fp32 vs int8: named metrics, [] to skip them.
    metrics: list[str] = ["fid500_test", "kid500_test"]
    psnr_samples: int = Field(default=256, ge=1)  # at least this many images for PSNR/SSIM (more if a metric needs them)
    threads: int = Field(default=1, ge=0)  # threads for both models while timing; 0: all cores
    timing_rounds: int = Field(default=7, ge=1)  # interleaved rounds; medians are reported
    target_speedup: float = Field(default=1.5, gt=0)  # int8 vs fp32 throughput at batch 64
    max_fid_increase: float = Field(default=0.05, ge=0)  # int8 FID at most this share above fp32's

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, names: list[str]) -> list[str]:
        return _check_metric_names(names)

    @model_validator(mode="after")
    def _prune_amount_given(self) -> "QuantizeSettings":
        if self.prune != "none" and self.prune_amount == 0.0:
            raise ValueError(f"prune = {self.prune} needs prune_amount > 0 (the share of weights to zero)")
        return self


class RegisterSettings(_Section):
    # Registered model name in the MLflow Model Registry; an int8 variant is logged inside the same version.
    model_name: str = Field(default="product-studio-generator", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PromoteSettings(_Section):
    """The champion/challenger policy (productstudio.promotion.policy). Both models are judged on the
    same named metric, the same latent seeds (protocol.seed) and the same cached real features."""

    # A named FID metric, (fid)<count>[k]_(train|test); null: the first FID in evaluate.metrics (whose real
    # features the real_stats stage caches), so promotion measures what evaluate reports.
    metric: Optional[str] = None
    bootstrap: int = Field(default=20, ge=2)  # resamples of the generated features for the FID's uncertainty
    z: float = Field(default=2.0, ge=0)  # the margin is max(min_margin, z * uncertainty of the difference)
    min_margin: float = Field(default=1.0, ge=0)  # FID points the challenger must win by, at least
    category_tolerance: float = Field(default=0.15, ge=0)  # no category's FID may rise by more than this share
    max_int8_fid_increase: float = Field(default=0.10, ge=0)  # int8 FID at most this share above fp32's
    max_fid: float = Field(default=150.0, gt=0)  # quality floor for the first champion (at `metric`'s count)

    @field_validator("metric")
    @classmethod
    def _fid_metric(cls, name: Optional[str]) -> Optional[str]:
        from productstudio.metric_names import parse_metric

        if name is not None and parse_metric(name).kind != "fid":
            raise ValueError("promotion compares FIDs: use a name like fid1k_test")
        return name


class ServeSettings(_Section):
    """TorchServe (productstudio.serving): every API bound to 127.0.0.1, token authorization on."""

    inference_port: int = Field(default=8085, ge=1, le=65535)
    management_port: int = Field(default=8086, ge=1, le=65535)
    metrics_port: int = Field(default=8087, ge=1, le=65535)
    # TorchServe always starts its gRPC APIs too (no switch in 0.12): bound to 127.0.0.1 on these ports.
    grpc_inference_port: int = Field(default=7070, ge=1, le=65535)
    grpc_management_port: int = Field(default=7071, ge=1, le=65535)
    model_name: Optional[str] = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # null: register.model_name
    alias: str = "champion"  # the registry alias that 'productstudio package' archives
    variant: Literal["fp32", "int8"] = "fp32"
    workers: int = Field(default=2, ge=1)  # one per core on the 2-core default machine
    threads: int = Field(default=1, ge=1)  # torch/ONNX Runtime threads per worker
    batch_size: int = Field(default=8, ge=1)  # dynamic batching: up to this many requests per forward pass
    max_batch_delay_ms: int = Field(default=20, ge=0)  # ... waiting at most this long to fill a batch
    response_timeout_s: int = Field(default=60, ge=1)
    max_request_size: int = Field(default=65536, ge=1024)  # bytes; larger bodies get 413 from the frontend
    enable_model_api: bool = False  # model registration over the management API
    token_expiration_min: int = Field(default=60, ge=1)  # TorchServe's keys expire; the 'API' key renews them

    @model_validator(mode="after")
    def _distinct_ports(self) -> "ServeSettings":
        if len({self.inference_port, self.management_port, self.metrics_port, self.grpc_inference_port,
                self.grpc_management_port}) != 5:
            raise ValueError("inference_port, management_port, metrics_port and the grpc ports must differ")
        return self


class DeploySettings(_Section):
    """Canary and Kubernetes deployment (productstudio.deploy.nginx_proxy, productstudio.deploy.kserve)."""

    canary_percent: int = Field(default=10, ge=0, le=100)  # share of requests the challenger gets
    proxy_port: int = Field(default=8090, ge=1, le=65535)  # the nginx canary proxy on 127.0.0.1
    # The challenger's own TorchServe (the champion's uses serve.*_port).
    canary_inference_port: int = Field(default=8095, ge=1, le=65535)
    canary_management_port: int = Field(default=8096, ge=1, le=65535)
    canary_metrics_port: int = Field(default=8097, ge=1, le=65535)
    canary_grpc_inference_port: int = Field(default=7080, ge=1, le=65535)
    canary_grpc_management_port: int = Field(default=7081, ge=1, le=65535)
    # deploy analyze: promote unless a rule fails (productstudio.deploy.local_canary.canary_decision).
    min_requests: int = Field(default=100, ge=1)  # fewer canary requests than this: wait
    max_error_rate_increase: float = Field(default=0.01, ge=0, le=1)  # canary 5xx rate - stable's
    max_p95_ratio: float = Field(default=1.5, gt=0)  # canary p95 latency / stable's
    min_p95_increase_ms: float = Field(default=50.0, ge=0)  # ... and at least this much slower (p95 is noisy)
    kid_samples: int = Field(default=100, ge=0)  # images drawn from each side for KID; 0: no image check
    max_kid_increase: float = Field(default=0.01, ge=0)  # canary KID - stable KID vs the real test features
    # nginx's limits for clients (productstudio.deploy.nginx_proxy.ProxyLimits): a slow or flooding client
    # holds a connection, never a model worker, and never for long.
    proxy_client_timeout_s: int = Field(default=10, ge=1)  # header, body and send: the longest pause between two reads/writes
    proxy_keepalive_timeout_s: int = Field(default=15, ge=0)  # an idle keep-alive connection is closed after this
    proxy_connections_per_client: int = Field(default=64, ge=1)  # concurrent requests per client address; more: 429
    proxy_max_connections: int = Field(default=4096, ge=64)  # nginx's worker_connections (clients + upstreams)
    # deploy watch: a side is down when its TorchServe is gone, or /ping fails this many checks in a row.
    watch_every_s: float = Field(default=5.0, gt=0)
    watch_failures: int = Field(default=3, ge=1)
    # KServe: the .mar and config.properties are published under <prefix>/<model>/<version>/.
    kserve_storage_prefix: str = Field(default="s3://product-studio-models", pattern=r"^(s3|gs|pvc|https?)://.+")
    kserve_namespace: str = Field(default="product-studio", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    kserve_service_name: Optional[str] = None  # null: the registered model name
    kserve_service_account: Optional[str] = "product-studio-models"  # holds the storage credentials
    kserve_cpu_request: str = Field(default="1", pattern=_QUANTITY)
    kserve_cpu_limit: str = Field(default="2", pattern=_QUANTITY)
    kserve_memory_request: str = Field(default="2Gi", pattern=_QUANTITY)
    kserve_memory_limit: str = Field(default="4Gi", pattern=_QUANTITY)
    kserve_min_replicas: int = Field(default=1, ge=0)
    kserve_max_replicas: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _replicas_in_order(self) -> "DeploySettings":
        if self.kserve_min_replicas > self.kserve_max_replicas:
            raise ValueError("kserve_min_replicas must not exceed kserve_max_replicas")
        return self


class NodeResources(_Section):
    """What each training node (pod) asks for: requests equal limits, so a node is never squeezed mid-run."""

    cpu: str = Field(default="4", pattern=_QUANTITY)
    memory: str = Field(default="8Gi", pattern=_QUANTITY)
    gpu: int = Field(default=0, ge=0)  # nvidia.com/gpu per node; > 0 needs an image with CUDA torch


class TrainJobSettings(_Section):
    """A Kubeflow Trainer TrainJob running 'productstudio train' under torchrun (productstudio.deploy.trainjob).
    The rendered manifest is checked against the CRD and the rules it lacks (image tag, GPU vs processes, secrets)."""

    name: str = Field(default="product-studio-train", pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    namespace: str = Field(default="product-studio", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    runtime: str = "torch-distributed"  # the ClusterTrainingRuntime named in spec.runtimeRef
    image: str = "ghcr.io/productstudio/productstudio:0.1.0"  # deploy/docker/Dockerfile's image; a tag or digest
    num_nodes: int = Field(default=2, ge=1)
    proc_per_node: int = Field(default=1, ge=1)  # torchrun processes per node (at most one per GPU)
    resources_per_node: NodeResources = NodeResources()
    # The DVC remote that 'dvc push' fills; each node pulls data/processed from it by its hash (dvc.lock).
    data_remote: str = Field(default="s3://product-studio-dvc", pattern=r"^(s3|gs|azure|https?)://.+")
    # Node 0 copies its training directory to <output_uri>/<TrainJob name>/ when training ends.
    output_uri: str = Field(default="s3://product-studio-models/trainjobs", pattern=r"^(s3|gs|az)://.+")
    mlflow_tracking_uri: str = "http://mlflow.product-studio.svc.cluster.local:5000"  # "": no tracking
    s3_endpoint_url: Optional[str] = None  # AWS_ENDPOINT_URL for an S3-compatible store (MinIO); null: AWS
    # A Secret in the namespace; each key below becomes the same-named env variable (never a literal value).
    credentials_secret: str = Field(default="product-studio-s3", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    secret_keys: list[str] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    env: dict[str, str] = {}  # more literal env variables for the trainer (no secrets: they are refused)
    timeout_minutes: int = Field(default=120, ge=1)  # activeDeadlineSeconds, and how long KFP waits


class CutoutSettings(_Section):
    """Background removal (productstudio.editing.cutout): the salient-object net, then clean-up."""

    work_size: int = Field(default=320, ge=64, le=1024)  # the net's input side (u2netp was trained at 320)
    pad_fraction: float = Field(default=0.1, ge=0, le=0.5)  # margin for a second run when the first mask is nearly empty
    flip_average: bool = False  # also run the mirrored photo; keep a pixel only where both maps agree (their minimum)
    keep_largest: bool = True  # drop specks: keep the largest connected component (and what touches it)
    refine_radius: int = Field(default=4, ge=0, le=64)  # guided-filter radius in source pixels at 1024 px; 0: off
    decontaminate: bool = True  # recolour semi-transparent edge pixels from the product, not the old background


class GateSettings(_Section):
    """Cut-outs refused before any export (productstudio.editing.compliance.gate_cutout)."""

    min_foreground: float = Field(default=0.05, ge=0, le=1)
    max_foreground: float = Field(default=0.95, ge=0, le=1)
    max_edges_touched: int = Field(default=1, ge=0, le=4)  # a mask touching 2+ edges is a cut-out gone wrong
    max_uncertain: float = Field(default=0.15, ge=0, le=1)  # share of the product's pixels with 0.1 < alpha < 0.9
    max_upscale: float = Field(default=4.0, ge=1)  # a preset needing more than this is refused for that photo


class RestoreEvalSettings(_Section):
    """The restoration/enhancement table (productstudio edit restore-eval): synthetic defects on photo crops."""

    source: str = "../shared/data/clothing-dataset-small"  # photo folder with train/validation/test
    crop: int = Field(default=256, ge=32)  # centre crops of this side, at the photos' own size
    tune_crops: int = Field(default=30, ge=1)  # from train + validation: choose each method's parameters
    test_crops: int = Field(default=60, ge=1)  # from test: what the table reports
    seed: int = 0  # the defects' generators: (seed, crop, defect)


class RestoreGateSettings(_Section):
    """Which photos the restorer touches (editing.restore_gate): the noisy and the heavily compressed ones.

    The blind restorer moves a clean catalogue JPEG (quality 70) about 38 dB away from itself; the gate leaves
    it exactly as it is. Both thresholds sit between what the table's 30 tuning crops show: noise reads
    under 4.2 on every clean crop and over 10.8 on every sigma-15 one; the DC step is 10 on the clean crops
    and 27 or more at quality 30."""

    enabled: bool = True  # false: every photo goes through the restorer (what 'edit restore --always' does)
    noise_sigma: float = Field(default=8.0, gt=0)  # restore a photo whose noise reads at least this (8-bit levels)
    jpeg_quality: int = Field(default=40, ge=1, le=100)  # ... or that was JPEG-compressed below this quality


class RestorerSettings(_Section):
    """The learned restorer (productstudio edit restore-train): a blind residual CNN for noise and JPEG."""

    source: str = "../shared/data/clothing-dataset-small"  # trains on train/, draws its curve on validation/
    defects: list[str] = ["noise15", "noise25", "noise50", "jpeg10", "jpeg20", "jpeg30"]
    # a defect named here is drawn this many times as often as each other one. JPEG q10, the hardest, twice:
    # on the 60 test crops 28.98 dB instead of 28.82 (the +0.5 dB target over bilateral met), for -0.09 dB on
    # noise sigma 25 and -0.13 on sigma 50, where the margin over the classical filters is 3-4 dB
    oversample: dict[str, int] = {"jpeg10": 2}
    clean_share: float = Field(default=0.1, ge=0, lt=1)  # patches left clean: the model must leave those alone
    photos: int = Field(default=400, ge=1)  # training photos held in memory (spread over the sorted list)
    patch: int = Field(default=96, ge=16, multiple_of=2)
    batch_size: int = Field(default=16, ge=1)
    width: int = Field(default=48, ge=4)
    depth: int = Field(default=12, ge=2, multiple_of=2)  # 3x3 convolutions in the body, two per residual block
    lr: float = Field(default=1e-3, gt=0)  # Adam, cosine-decayed to zero over max_steps
    # mse: the squared error (the L2). psnr: minus the mean PSNR per patch, which weighs each patch by
    # how little is wrong with it: clean crops stay at 57 dB instead of 39, but JPEG is left as it is.
    loss: Literal["mse", "psnr"] = "mse"
    max_steps: int = Field(default=4800, ge=1)  # the stopping rule (a step budget: reproducible)
    curve_every: int = Field(default=600, ge=1)  # validation PSNR per defect every N steps (the gain curve)
    curve_crops: int = Field(default=12, ge=1)
    checkpoint_every: int = Field(default=100, ge=1)
    seed: int = 0


class EnhanceSettings(_Section):
    """Enhancement of real photos (productstudio edit enhance); each operation optional."""

    operations: list[Literal["white-balance", "exposure", "sharpen"]] = ["white-balance"]
    white_balance_p: float = Field(default=4.0, ge=1)  # shades-of-gray norm over the background
    exposure_percentile: float = Field(default=99.5, gt=50, le=100)  # this brightest luminance becomes white
    sharpen_sigma: float = Field(default=1.0, gt=0)  # unsharp mask
    sharpen_amount: float = Field(default=0.3, gt=0)


class StyleSettings(_Section):
    """Style (productstudio edit style): a catalogue look measured on reference photos, or a painterly style."""

    tone_strength: float = Field(default=0.0, ge=0, le=1)  # how far the product's tone moves to the look's
    white_balance: bool = False  # divide out the light seen on the background (costs dE 4.2 here: bench_style)
    white_balance_p: float = Field(default=4.0, ge=1)
    preserve: Literal["colour", "background", "none"] = "colour"  # painterly: what keeps the photo's own colour
    strength: float = Field(default=1.0, ge=0, le=1)  # painterly: the style code mixed with the photo's own


class EditorPromoteSettings(_Section):
    """When a learned editor's challenger becomes champion (productstudio edit register): issue 11's targets."""

    restorer_targets: list[str] = ["noise25", "jpeg10"]  # where the restorer must beat the best classical filter
    restorer_margin_db: float = 0.5  # by this much (and not be worse at any other defect it handles)
    detector_min_recall: float = Field(default=0.95, gt=0, le=1)  # of the true mask's pixels
    detector_max_false_positive_area: float = Field(default=0.01, ge=0, le=1)
    detector_max_gap_db: float = Field(default=2.0, ge=0)  # detect-then-fill vs inpainting with the true mask


class DetectorSettings(_Section):
    """The learned defect detector (productstudio edit detect-train): dust, specks and scratches -> a mask."""

    source: str = "../shared/data/clothing-dataset-small"  # trains on train/, picks its threshold on validation/
    defects: list[str] = ["dust"]  # defects with a mask (editing.defects) it learns to find
    clean_share: float = Field(default=0.2, ge=0, lt=1)  # regions left clean: it must find nothing there
    photos: int = Field(default=300, ge=1)  # training photos held in memory (spread over the sorted list)
    region: int = Field(default=256, ge=32)  # the defect is drawn on a region of this side (its density as in
    patch: int = Field(default=128, ge=16)   # the evaluation crops), and a patch of it is trained on
    batch_size: int = Field(default=8, ge=1)
    width: int = Field(default=32, ge=4)  # 32 against 16: detect-then-fill gap 3.0 -> under 2 dB on test, 3x the time
    pos_weight: float = Field(default=5.0, gt=0)  # a missed speck costs this many false alarms (recall first)
    lr: float = Field(default=2e-3, gt=0)  # Adam, cosine-decayed to zero over max_steps
    max_steps: int = Field(default=4000, ge=1)  # the stopping rule (a step budget: reproducible)
    thresholds: list[float] = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.7]  # candidates for the stored threshold
    # candidates for the smallest blob kept (1 keeps all): the smallest speck drawn is a 5 px disc, while most
    # false alarms are 1-3 px dots on a real detail (a stitch's highlight), which a fill erases
    min_blobs: list[PositiveInt] = Field(default=[1, 2, 3, 4, 5], min_length=1)
    # the stored (threshold, min_blob): of those keeping this recall, the best fill of the validation crops
    target_recall: float = Field(default=0.95, gt=0, le=1)
    grow: int = Field(default=0, ge=0)  # widen the mask by this many pixels before filling
    curve_every: int = Field(default=500, ge=1)  # validation recall and false-positive area every N steps
    curve_crops: int = Field(default=24, ge=1)
    checkpoint_every: int = Field(default=200, ge=1)
    seed: int = 0


class C2paSettings(_Section):
    """C2PA Content Credentials on studio exports (productstudio.editing.content_credentials)."""

    sign: bool = False  # off: an ECDSA signature differs per run, so signed exports are never byte-reproducible
    certificate: Optional[str] = None  # PEM chain, signer first; null: a local test CA in .tools/c2pa-test
    private_key: Optional[str] = None  # the signer's PKCS#8 PEM key (with certificate)
    timestamp_url: Optional[str] = None  # an RFC 3161 time-stamp authority, so signatures outlive the certificate


class PresetSettings(_Section):
    """One export format: canvas, placement, background and the rules its files are checked against."""

    width: int = Field(ge=16, le=10000)
    height: int = Field(ge=16, le=10000)
    background: Literal["white", "transparent"] = "white"
    fill: float = Field(default=0.85, gt=0, le=1)  # the product's bounding box over the canvas, along its tighter side
    role: Literal["main", "secondary"] = "main"  # a main image never gets a shadow
    shadow: bool = False
    format: Literal["jpeg", "png", "webp"] = "jpeg"
    quality: int = Field(default=92, ge=1, le=100)  # jpeg/webp (lossy); png ignores it
    min_long_side: int = Field(default=0, ge=0)  # marketplace minimum of the longest side
    min_fill: float = Field(default=0.0, ge=0, le=1)  # marketplace minimum share of the frame the product fills
    max_file_bytes: int = Field(default=10_000_000, ge=1)
    check_text: bool = True  # refuse text or watermarks on the product

    @model_validator(mode="after")
    def _shadow_not_on_main(self) -> "PresetSettings":
        if self.shadow and self.role == "main":
            raise ValueError("a main image never gets a shadow: set role: secondary or shadow: false")
        if self.background == "transparent" and self.format == "jpeg":
            raise ValueError("JPEG has no transparency: use format png or webp")
        return self


# The built-in presets (params.yaml's edit.preset_definitions says the same; a test checks it).
DEFAULT_PRESETS = {
    'amazon-main': {'width': 1600, 'height': 1600, 'background': 'white', 'fill': 0.88, 'role': 'main', 'format': 'jpeg', 'min_long_side': 1000, 'min_fill': 0.85, 'max_file_bytes': 10000000},
    'amazon-secondary': {'width': 1600, 'height': 1600, 'background': 'white', 'fill': 0.8, 'role': 'secondary', 'shadow': True, 'format': 'jpeg', 'min_long_side': 1000, 'max_file_bytes': 10000000},
    'shopify-square': {'width': 2048, 'height': 2048, 'background': 'white', 'fill': 0.8, 'role': 'main', 'format': 'jpeg', 'max_file_bytes': 20000000},
    'transparent-png': {'width': 1024, 'height': 1024, 'background': 'transparent', 'fill': 0.9, 'format': 'png'},
    'studio-1024': {'width': 1024, 'height': 1024, 'background': 'white', 'fill': 0.85, 'role': 'main', 'format': 'jpeg'},
    'instagram-1x1': {'width': 1080, 'height': 1080, 'fill': 0.75, 'role': 'secondary', 'shadow': True, 'format': 'jpeg', 'check_text': False},
    'instagram-4x5': {'width': 1080, 'height': 1350, 'fill': 0.75, 'role': 'secondary', 'shadow': True, 'format': 'jpeg', 'check_text': False},
    'story-9x16': {'width': 1080, 'height': 1920, 'fill': 0.7, 'role': 'secondary', 'shadow': True, 'format': 'jpeg', 'check_text': False},
    'landscape-16x9': {'width': 1920, 'height': 1080, 'fill': 0.8, 'role': 'secondary', 'shadow': True, 'format': 'jpeg', 'check_text': False},
}


class EditSettings(_Section):
    """Editing (productstudio edit ...): studio shots from real product photos."""

    source: str = "../shared/data/clothing-dataset-small/test"  # the photo folder 'dvc repro edit_studio' reads
    limit: Optional[int] = Field(default=None, ge=1)  # the first N photos (sorted paths); null: all
    presets: list[str] = ['amazon-main', 'shopify-square', 'instagram-4x5']  # exported per photo by the DVC stage
    max_pixels: int = Field(default=40_000_000, ge=1)  # checked from the header, before decoding
    max_upload_bytes: int = Field(default=20_000_000, ge=1024)  # a served upload's size limit
    dust_fill_radius: int = Field(default=3, ge=1, le=20)  # inpainting radius for detected dust (edit restore)
    cutout: CutoutSettings = CutoutSettings()
    gates: GateSettings = GateSettings()
    c2pa: C2paSettings = C2paSettings()
    preset_table: dict[str, PresetSettings] = Field(
        default_factory=lambda: {name: PresetSettings(**values) for name, values in DEFAULT_PRESETS.items()},
        alias="preset_definitions")
    # The labelled evaluation set (edit_evalset): studio cut-outs on real backgrounds, exact masks.
    evalset_source: str = "../shared/data/clothing-dataset-small"
    evalset_size: int = Field(default=120, ge=4)
    evalset_seed: int = 0
    evalset_extra_hard: int = Field(default=12, ge=0)  # see-through and reflective composites after the others
    restore_eval: RestoreEvalSettings = RestoreEvalSettings()
    restorer: RestorerSettings = RestorerSettings()
    restore_gate: RestoreGateSettings = RestoreGateSettings()
    detector: DetectorSettings = DetectorSettings()
    # The same network trained on tiled semi-transparent text ('edit watermark-train'); letters are bigger
    # than specks, so larger smallest blobs are among the candidates.
    watermark_detector: DetectorSettings = DetectorSettings(defects=["watermark"], min_blobs=[1, 3, 5, 10, 20])
    enhance: EnhanceSettings = EnhanceSettings()
    style: StyleSettings = StyleSettings()
    promote: EditorPromoteSettings = EditorPromoteSettings()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _presets_defined(self) -> "EditSettings":
        unknown = [name for name in self.presets if name not in self.preset_table]
        if unknown:
            raise ValueError(f"presets {unknown} are not in edit.preset_definitions "
                             f"({', '.join(self.preset_table) or 'none defined'})")
        return self


class Params(_Section):
    ingest: IngestSettings = IngestSettings()
    validate_: ValidateSettings = Field(default=ValidateSettings(), alias="validate")
    preprocess: PreprocessSettings = PreprocessSettings()
    train: TrainSettings = TrainSettings()
    protocol: ProtocolSettings = ProtocolSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    quantize: QuantizeSettings = QuantizeSettings()
    # 'register' is a classmethod name of ABCMeta (pydantic warns about shadowing it): aliased like validate.
    register_: RegisterSettings = Field(default=RegisterSettings(), alias="register")
    promote: PromoteSettings = PromoteSettings()
    serve: ServeSettings = ServeSettings()
    deploy: DeploySettings = DeploySettings()
    trainjob: TrainJobSettings = TrainJobSettings()
    edit: EditSettings = EditSettings()
    # The baseline the GAN is weighed against: keys of 'train' that differ for it (train --baseline).
    baseline: dict[str, Any] = {"model": "cvae", "max_steps": 600}

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _baseline_is_train_settings(self) -> "Params":
        self.baseline_train  # noqa: B018 - raises on a bad key or value
        return self

    @model_validator(mode="after")
    def _mode_seeking_pool_fits_the_image(self) -> "Params":
        # Checked here, not in TrainSettings: the image size lives in another section. Without it a pool larger
        # than the image fails deep inside torch at the first training step.
        if self.train.mode_seeking > 0 and self.train.mode_seeking_pool > self.preprocess.image_size:
            raise ParamsError(
                f"train.mode_seeking_pool {self.train.mode_seeking_pool} is larger than the "
                f"{self.preprocess.image_size} px images (preprocess.image_size): use at most {self.preprocess.image_size}"
            )
        return self

    @property
    def baseline_train(self) -> TrainSettings:
        """The 'train' section overlaid with 'baseline'."""
        try:
            return TrainSettings.model_validate({**section_dict(self.train), **self.baseline})
        except ValidationError as error:
            first = error.errors()[0]
            key = ".".join(str(part) for part in first["loc"])
            if first["type"] == "extra_forbidden":
                raise ParamsError(f"unknown key baseline.{key} (allowed: the keys of train)") from None
            raise ParamsError(f"baseline.{key}: {first['msg'].removeprefix('Value error, ')}") from None

    @property
    def validate(self) -> ValidateSettings:  # type: ignore[override]
        return self.validate_

    @property
    def register(self) -> RegisterSettings:  # type: ignore[override]
        return self.register_


def _section_models() -> dict[str, type[BaseModel]]:
    return {field.alias or name: field.annotation for name, field in Params.model_fields.items()}


def _nested_model(loc: tuple) -> type[BaseModel] | None:
    """The settings class at ``loc`` (section, sub-section, ...), or None when ``loc`` is not a chain of them."""
    model: type[BaseModel] = Params
    for part in loc:
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        annotation = fields[part].annotation if part in fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _one_line(error: ValidationError, source: str, raw: dict) -> str:
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:  # a check across sections (e.g. baseline over train) names its own key
        return f"{source}: {message}"
    if first["type"] == "extra_forbidden":
        sections = _section_models()
        section_name = loc.rpartition(".")[0]
        allowed = sections[section_name].model_fields if section_name in sections else sections
        nested = _nested_model(first["loc"][:-1])
        if nested is not None and len(first["loc"]) > 2:  # a key inside a sub-section (trainjob.resources_per_node)
            allowed = nested.model_fields
        if loc in MOVED_KEYS:
            return f"{source}: unknown key '{loc}': it moved to '{MOVED_KEYS[loc]}'"
        return f"{source}: unknown key '{loc}' (allowed: {', '.join(allowed)})"
    value: Any = raw
    for part in first["loc"]:
        value = value.get(part) if isinstance(value, dict) else None
    shown = "" if value is None else f" = {value!r}"
    return f"{source}: {loc}{shown}: {message}"


def parse_params(raw: dict | None, source: str = "params.yaml") -> Params:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections (ingest, validate, preprocess)")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_one_line(error, source, raw)) from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such params file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    return parse_params(raw, str(path))


def section_dict(settings: BaseModel) -> dict:
    """The settings as plain JSON-able data, for manifests."""
    return settings.model_dump(mode="json", by_alias=True)
