"""accuracy / Accuracy: top-k hit rate in percent."""
import pytest
import torch

from detkit.models.losses import Accuracy, accuracy
from detkit.registry import MODELS

PRED = torch.tensor([[0.1, 0.7, 0.2],
                     [0.5, 0.3, 0.2],
                     [0.2, 0.3, 0.5],
                     [0.6, 0.3, 0.1]])
TARGET = torch.tensor([1, 1, 2, 2])


def test_top1_and_topk():
    top1 = accuracy(PRED, TARGET)
    assert top1.shape == (1, ) and top1.item() == 50.0
    top1, top2, top3 = accuracy(PRED, TARGET, topk=(1, 2, 3))
    assert (top1.item(), top2.item(), top3.item()) == (50.0, 75.0, 100.0)


def test_threshold_and_empty():
    # Correct rows 0 (score .7) and 2 (score .5): only row 0 beats .6.
    assert accuracy(PRED, TARGET, thresh=0.6).item() == 25.0
    empty = accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0
    assert accuracy(torch.zeros(0, 3), torch.zeros(0), topk=(1, 2)) == [0, 0]


def test_module_and_errors():
    module = MODELS.build(dict(type='Accuracy', topk=(1, 2)))
    assert isinstance(module, Accuracy)
    assert [v.item() for v in module(PRED, TARGET)] == [50.0, 75.0]
    with pytest.raises(ValueError, match='C >= 4'):
        accuracy(PRED, TARGET, topk=4)
