"""Test-time augmentation: several views of one image in one sample."""
import copy
import itertools
from typing import List, Optional

from detkit.registry import TRANSFORMS
from .base import BaseTransform


@TRANSFORMS.register_module()
class TestTimeAug(BaseTransform):
    """Run every combination of one transform per group on a copy of the
    results, and pack the views together.

    Args:
        transforms: a list of groups, each a list of transform configs (or
            callables). The views are the cartesian product of the groups,
            the first group varying slowest: ``[[Resize(s1), Resize(s2)],
            [RandomFlip(prob=1.), RandomFlip(prob=0.)], [PackDetInputs]]``
            gives ``(s1, flip), (s1, no flip), (s2, flip), (s2, no flip)``.
        allow_empty: drop a view whose transforms return ``None`` (by
            default that is an error).

    Returns a dict with, for each key of a view's results, the list of its
    values over the views: after ``PackDetInputs``, ``inputs`` is a list of
    ``(C, H, W)`` tensors and ``data_samples`` a list of ``DetDataSample``.
    Batched by the dataloader's ``pseudo_collate``, ``inputs[v][i]`` is view
    ``v`` of image ``i``, which is what ``DetTTAModel`` reads.
    """

    def __init__(self, transforms: List[list], allow_empty: bool = False):
        if (not isinstance(transforms, (list, tuple)) or not transforms
                or not all(isinstance(g, (list, tuple)) and g
                           for g in transforms)):
            raise TypeError(
                'TestTimeAug: transforms must be a non-empty list of '
                'non-empty lists of transforms, one list per choice (e.g. '
                "[[dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', "
                "prob=0.)], [dict(type='PackDetInputs')]]), got "
                f'{transforms!r}')
        groups = []
        for group in transforms:
            built = []
            for step in group:
                if isinstance(step, dict):
                    step = TRANSFORMS.build(step)
                elif not callable(step):
                    raise TypeError('TestTimeAug: each transform must be a '
                                    'config dict or a callable, got '
                                    f'{step!r}')
                built.append(step)
            groups.append(built)
        self.transforms = transforms
        self.allow_empty = allow_empty
        self._views = list(itertools.product(*groups))

    def __len__(self) -> int:
        """The number of views."""
        return len(self._views)

    def transform(self, results: dict) -> Optional[dict]:
        views = []
        for num, steps in enumerate(self._views):
            view = copy.deepcopy(results)
            for step in steps:
                view = step(view)
                if view is None:
                    break
            if view is None:
                if self.allow_empty:
                    continue
                names = [type(s).__name__ for s in steps]
                raise ValueError(
                    f'TestTimeAug: view {num} ({names}) dropped the sample '
                    f'of {results.get("img_path")}; set allow_empty=True to '
                    'skip such views')
            views.append(view)
        if not views:
            return None
        return {key: [view[key] for view in views] for key in views[0]}
