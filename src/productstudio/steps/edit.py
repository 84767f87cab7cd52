"""The 'edit' group: productstudio edit <target> (studio, restore, evalset, evaluate, restore-train,
detect-train, restore-eval)."""

from __future__ import annotations

from productstudio.steps.edit_detect_train import STEP as DETECT_TRAIN
from productstudio.steps.edit_evalset import STEP as EVALSET
from productstudio.steps.edit_evaluate import STEP as EVALUATE
from productstudio.steps.edit_restore import STEP as RESTORE
from productstudio.steps.edit_restore_eval import STEP as RESTORE_EVAL
from productstudio.steps.edit_restore_train import STEP as RESTORE_TRAIN
from productstudio.steps.edit_studio import STEP as STUDIO

HELP = ("edit real product photos: studio shots and marketplace formats (background removal, checked exports), "
        "noise and JPEG removal")
DESCRIPTION = ("Editing of real photos. 'edit studio' turns a photo folder into marketplace exports (one folder per "
               "preset) with a JSON report and an HTML contact sheet; 'edit restore' removes noise and JPEG artefacts "
               "from a folder of photos with the learned restorer; 'edit evalset' builds the labelled set of "
               "cut-outs on real backgrounds; 'edit evaluate' measures mask IoU, MAE and boundary F on it; "
               "'edit restore-train' trains the learned restorer (noise + JPEG); 'edit detect-train' trains the learned dust and scratch detector; 'edit restore-eval' measures "
               "restoration and enhancement methods, learned and classical, on synthetic defects.")


TARGETS = (STUDIO, RESTORE, EVALSET, EVALUATE, RESTORE_TRAIN, DETECT_TRAIN, RESTORE_EVAL)
