"""Where the steps read and write by default, in one place (the CLI, DVC stages and docs use these),
and the file names of artifacts that one step writes and another reads."""

from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")
RAW = Path("data/raw")
VALIDATION = Path("reports/validation")
VALIDATION_METRICS = Path("reports/validation_metrics.json")
PROCESSED = Path("data/processed")
TRAIN = Path("models/train")
TRAIN_REPORTS = Path("reports/train")
GENERATOR = TRAIN / "generator"
BASELINE = Path("models/baseline")
BASELINE_REPORTS = Path("reports/baseline")
CLASSIFIER = Path("models/classifier")
REAL_STATS = Path("models/real_stats")
EVALUATION = Path("reports/evaluate")
BASELINE_EVALUATION = Path("reports/evaluate_baseline")
QUANTIZED = Path("models/quantized")
QUANTIZE_METRICS = Path("reports/quantize/metrics.json")
REGISTER = Path("reports/register")
PROMOTE = Path("reports/promote")
GENERATED_FEATURES = Path(".scratch/generated-features")  # features of generated images, per (weights, seed, count)
SERVE_STATE = Path(".scratch/serve")
DEPLOY_STATE = Path(".scratch/deploy")
KSERVE_OUT = Path("deploy/kserve")
EDIT_STUDIO = Path("reports/edit/studio")  # the studio batch: exports per preset, report, contact sheet
EDIT_EVALSET = Path("data/edit/evalset")  # the labelled set of cut-outs on real backgrounds
EDIT_EVALUATION = Path("reports/edit/evaluate")
EDIT_RESTORER = Path("models/restorer")  # the learned restorer (noise + JPEG): safetensors + JSON
EDIT_DETECTOR = Path("models/detector")  # the learned defect detector (dust, scratches): safetensors + JSON
EDIT_WATERMARK_DETECTOR = Path("models/watermark-detector")  # the same network trained on tiled text watermarks
EDIT_ENHANCED = Path(".scratch/edit/enhanced")  # edit enhance: the enhanced photos of a folder
EDIT_STYLED = Path(".scratch/edit/styled")  # edit style: the styled photos of a folder (and the look measured)
EDIT_RESTORED = Path(".scratch/edit/restored")  # edit restore: the restored photos of a folder
EDIT_RESTORE_EVAL = Path("reports/edit/restore_eval")  # the restoration table: defects x methods

# Inside a validation directory (written by validate, read by preprocess).
VALIDATION_REPORT = "report.json"
VALIDATION_METADATA = "metadata.csv"
