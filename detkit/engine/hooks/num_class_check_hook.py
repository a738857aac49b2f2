"""Fail before training when the model's ``num_classes`` and the dataset's
classes disagree."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from detkit.registry import HOOKS


def _classes_of(dataset):
    """``dataset.metainfo['classes']``, looking through wrappers."""
    while not hasattr(dataset, 'metainfo') and hasattr(dataset, 'dataset'):
        dataset = dataset.dataset
    meta = getattr(dataset, 'metainfo', None) or {}
    return meta.get('classes')


def check_num_classes(model, classes, where: str) -> None:
    """Raise ``ValueError`` naming the config key when a head's
    ``num_classes`` differs from ``len(classes)``.

    Region-proposal heads (class-agnostic, one class) are skipped: an
    RPNHead, and whatever head is a two-stage detector's ``rpn_head`` (an
    FCOS head in the FCOS-RPN config; mmdetection skips it by that name).
    """
    if classes is None:
        return
    if isinstance(classes, str):
        raise ValueError(
            f'The {where} dataset\'s classes is the string {classes!r}; '
            "write a tuple, e.g. metainfo=dict(classes=('cat', )) - note "
            'the trailing comma for a single class.')
    if is_model_wrapper(model):
        model = model.module
    for name, module in model.named_modules():
        num_classes = getattr(module, 'num_classes', None)
        if (not name or not isinstance(num_classes, int)
                or type(module).__name__ == 'RPNHead'
                or name.endswith('rpn_head')):
            continue
        if num_classes != len(classes):
            raise ValueError(
                f'model.{name}.num_classes is {num_classes}, but the {where} '
                f'dataset has {len(classes)} classes {tuple(classes)}. Set '
                f'model.{name}.num_classes={len(classes)} in the config (or '
                'change the dataset\'s metainfo classes).')


@HOOKS.register_module()
class NumClassCheckHook(Hook):
    """Check ``num_classes`` of every head against the dataset before
    training, validation and testing start."""

    def before_train(self, runner) -> None:
        check_num_classes(runner.model,
                          _classes_of(runner.train_dataloader.dataset),
                          'training')

    def before_val(self, runner) -> None:
        check_num_classes(runner.model,
                          _classes_of(runner.val_dataloader.dataset),
                          'validation')

    def before_test(self, runner) -> None:
        check_num_classes(runner.model,
                          _classes_of(runner.test_dataloader.dataset), 'test')
