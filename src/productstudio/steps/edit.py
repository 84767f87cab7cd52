"""The 'edit' group: productstudio edit <target> (studio, restore, enhance, style, evalset, evaluate,
restore-train, detect-train, restore-eval, register)."""

from __future__ import annotations

from productstudio.steps.edit_detect_train import STEP as DETECT_TRAIN
from productstudio.steps.edit_detect_train import WATERMARK_STEP as WATERMARK_TRAIN
from productstudio.steps.edit_enhance import STEP as ENHANCE
from productstudio.steps.edit_evalset import STEP as EVALSET
from productstudio.steps.edit_evaluate import STEP as EVALUATE
from productstudio.steps.edit_register import STEP as REGISTER
from productstudio.steps.edit_restore import STEP as RESTORE
from productstudio.steps.edit_restore_eval import STEP as RESTORE_EVAL
from productstudio.steps.edit_restore_train import STEP as RESTORE_TRAIN
from productstudio.steps.edit_studio import STEP as STUDIO
from productstudio.steps.edit_style import STEP as STYLE

HELP = ("edit real product photos: studio shots and marketplace formats (background removal, checked exports), "
        "noise, JPEG and dust removal, enhancement, catalogue and painterly style")
DESCRIPTION = ("Editing of real photos. 'edit studio' turns a photo folder into marketplace exports (one folder per "
               "preset) with a JSON report and an HTML contact sheet; 'edit restore' removes noise and JPEG artefacts "
               "from a folder of photos with the learned restorer (and dust with the learned detector); 'edit "
               "enhance' white-balances (from the background), exposes and sharpens a folder; 'edit style' gives a folder the "
               "look of a few reference photos (or a painterly style, for ads); 'edit evalset' builds "
               "the labelled set of "
               "cut-outs on real backgrounds; 'edit evaluate' measures mask IoU, MAE and boundary F on it; "
               "'edit restore-train' trains the learned restorer (noise + JPEG); 'edit detect-train' trains the learned dust and scratch detector; 'edit restore-eval' measures "
               "restoration and enhancement methods, learned and classical, on synthetic defects; 'edit register' "
               "registers the learned editors in MLflow and promotes each only when it beats the classical methods "
               "and its champion.")


TARGETS = (STUDIO, RESTORE, ENHANCE, STYLE, EVALSET, EVALUATE, RESTORE_TRAIN, DETECT_TRAIN, WATERMARK_TRAIN, RESTORE_EVAL, REGISTER)
