"""Train ATSS (ResNet-18 FPN at reduced width, from scratch) on BCCD on the
CPU for a fixed schedule; report COCO mAP on BCCD's val split after every
epoch and the wall time.

    nice python benchmarks/train_atss_bccd.py [--epochs 6] [--threads 2]
        [--data-root ../shared/data/bccd] [--work-dir DIR]

The model is configs/atss/atss_r50_fpn_1x_coco.py (one anchor per
location, ATSSAssigner(topk=9), centerness, GIoU on decoded boxes) with the
same small from-scratch ResNet-18 FPN as benchmarks/train_fcos_bccd.py
(``--base-channels``, ``--width``, ``--stacked-convs``, GN of 8 groups)
and BCCD's 3 classes; the ATSS targets, losses and test settings are the
config's. Data, schedule (AdamW, warm-up, cosine, clipping) and the
per-epoch validation are those of train_fcos_bccd.py. Not run by CI.

The last line is a JSON summary (also written to WORK_DIR/result.json),
with ``epoch_bbox_mAP``: the val mAP after each epoch.
"""
import os.path as osp

from common import REPO_ROOT
from train_fcos_bccd import run

CONFIG = osp.join(REPO_ROOT, 'configs', 'atss', 'atss_r50_fpn_1x_coco.py')


def main(argv=None):
    return run('atss', CONFIG, __doc__, argv)


if __name__ == '__main__':
    main()
