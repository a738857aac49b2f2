"""mmdetection's ``CheckInvalidLossHook`` on top of detkit's own guard.

mmdetection's hook looks at the loss every ``interval`` iterations, after
the optimizer step, and stops the run when it is NaN or infinite. detkit's
detectors already check every iteration's loss terms before the step
(``BaseDetector.train_step``, and ``DetDistributedDataParallel`` on every
rank alike) and stop with ``NonFiniteLossError`` naming the iteration,
the terms and the images, or skip the step with
``model.skip_nonfinite=True``. This hook does not check a second time: at
``before_train`` it makes sure that guard is on the training path (a model
wrapper that bypasses it would silently turn the config's promise off) and
says in one log line what will happen on a non-finite loss.
"""
import logging

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from detkit.registry import HOOKS


@HOOKS.register_module()
class CheckInvalidLossHook(Hook):
    """Stop (or, with ``model.skip_nonfinite=True``, skip and report) a
    training step whose loss is NaN or infinite.

    Args:
        interval: mmdetection checks every ``interval`` iterations; detkit's
            guard checks every iteration, which covers any interval.
    """

    def __init__(self, interval: int = 50):
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f'CheckInvalidLossHook: interval must be a '
                             f'positive int, got {interval!r}')
        self.interval = interval

    def before_train(self, runner) -> None:
        model = runner.model
        if is_model_wrapper(model):
            from detkit.engine.dist import DetDistributedDataParallel
            if not isinstance(model, DetDistributedDataParallel):
                raise TypeError(
                    f'CheckInvalidLossHook: the model wrapper '
                    f'{type(model).__name__} does not apply the detector\'s '
                    'non-finite loss guard; use the default wrapper '
                    "(model_wrapper_cfg=dict(type='DetDistributedDataParallel"
                    "')) or remove the hook from custom_hooks.")
            model = model.module
        if not callable(getattr(model, '_handle_nonfinite', None)):
            raise TypeError(
                f'CheckInvalidLossHook: {type(model).__name__} has no '
                'non-finite loss guard; the hook relies on the one of '
                "detkit's detectors (detkit.models.detectors.BaseDetector). "
                'Remove the hook from custom_hooks for other models.')
        action = ('skips the step and logs a warning '
                  '(model.skip_nonfinite=True)' if getattr(
                      model, 'skip_nonfinite', False) else
                  'stops the run with NonFiniteLossError')
        print_log(
            f'CheckInvalidLossHook(interval={self.interval}): the detector '
            'checks the loss of every iteration before its optimizer step; '
            f'a NaN or infinite loss {action}.',
            logger='current', level=logging.INFO)
