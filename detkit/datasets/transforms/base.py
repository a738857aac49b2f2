"""The base class of every data transform.

A transform maps one *results* dict (the keys are listed in
:mod:`detkit.datasets.transforms`) to the next. Returning ``None`` drops the
sample: a training dataset then fetches another index. This is the same
contract as mmcv's ``BaseTransform``, which detkit does not depend on.
"""
from typing import Optional


class BaseTransform:
    """Subclasses implement :meth:`transform`; call the object itself."""

    def transform(self, results: dict) -> Optional[dict]:
        raise NotImplementedError(
            f'{type(self).__name__} must implement transform(results)')

    def __call__(self, results: dict) -> Optional[dict]:
        return self.transform(results)

    def __repr__(self) -> str:
        # Show the constructor arguments, which is what a config holds.
        args = ', '.join(f'{k}={v!r}' for k, v in vars(self).items()
                         if not k.startswith('_'))
        return f'{type(self).__name__}({args})'


def require_keys(results: dict, keys, transform: str) -> None:
    """Raise a KeyError naming the transform and the missing keys.

    A transform placed before the one that produces its input (Resize
    before LoadImageFromFile) then says so instead of failing with a bare
    ``KeyError: 'img'``.
    """
    missing = [k for k in keys if k not in results]
    if missing:
        raise KeyError(
            f'{transform} needs {missing} in the results dict but it only '
            f'has {sorted(results)}; check the order of the pipeline '
            '(LoadImageFromFile and LoadAnnotations must come before it).')
