"""Draw predictions during validation and testing (``--show-dir``)."""
import os.path as osp

import cv2
from mmengine.hooks import Hook

from ..registry import HOOKS


@HOOKS.register_module()
class DetVisualizationHook(Hook):
    """Draw ground truth and predictions of evaluated images.

    Validation draws the first image of every ``interval``-th batch to the
    visualizer's backends; testing with ``test_out_dir`` (set by
    ``tools/test.py --show-dir``) writes one side-by-side picture per image
    under ``work_dir/<timestamp>/<test_out_dir>``.

    Args:
        draw: nothing is drawn unless True.
        interval: draw every ``interval`` batches.
        score_thr: predictions below it are not drawn.
        show: open a window (needs a display).
        test_out_dir: folder (relative to the run's log dir) for test
            pictures.
    """

    def __init__(self,
                 draw: bool = False,
                 interval: int = 50,
                 score_thr: float = 0.3,
                 show: bool = False,
                 wait_time: float = 0.,
                 test_out_dir=None,
                 backend_args=None):
        self.draw = draw or show
        self.interval = interval
        self.score_thr = score_thr
        self.show = show
        self.wait_time = wait_time
        self.test_out_dir = test_out_dir

    @staticmethod
    def _read_rgb(path):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f'DetVisualizationHook: cannot read {path}')
        return img[..., ::-1]

    def after_val_iter(self, runner, batch_idx, data_batch, outputs) -> None:
        if not self.draw or batch_idx % self.interval != 0 or not outputs:
            return
        sample = outputs[0]
        runner.visualizer.add_datasample(
            osp.basename(sample.img_path),
            self._read_rgb(sample.img_path),
            data_sample=sample,
            show=self.show,
            wait_time=self.wait_time,
            pred_score_thr=self.score_thr,
            step=runner.iter)

    def after_test_iter(self, runner, batch_idx, data_batch, outputs) -> None:
        if not self.draw:
            return
        out_dir = None
        if self.test_out_dir is not None:
            out_dir = osp.join(runner.log_dir, self.test_out_dir)
        for sample in outputs:
            name = osp.basename(sample.img_path)
            runner.visualizer.add_datasample(
                name,
                self._read_rgb(sample.img_path),
                data_sample=sample,
                show=self.show,
                wait_time=self.wait_time,
                pred_score_thr=self.score_thr,
                out_file=None if out_dir is None else osp.join(out_dir, name),
                step=batch_idx)
