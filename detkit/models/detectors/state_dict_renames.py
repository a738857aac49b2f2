"""Checkpoint-key renaming between detectors that hold the same head under
different names.

mmdetection's RPN keeps its head as ``bbox_head.*`` and Faster R-CNN as
``rpn_head.*``; either checkpoint loads into the other detector (with
``strict=True``) because loading renames the keys first
(``revise_state_dict`` for whole checkpoints, ``_load_from_state_dict``
for ``load_state_dict`` calls). A state_dict that already has keys under
the new name is left as it is.
"""
import collections


def rename_prefix(state_dict, old: str, new: str):
    """A copy of ``state_dict`` with keys ``old.*`` renamed ``new.*`` when it
    has ``old.*`` keys but no ``new.*`` key (also in ``_metadata``)."""
    old_keys = [k for k in state_dict if k.startswith(old + '.')]
    if not old_keys or any(k.startswith(new + '.') for k in state_dict):
        return state_dict

    def rename(mapping):
        renamed = collections.OrderedDict()
        for key, value in mapping.items():
            if key == old or key.startswith(old + '.'):
                key = new + key[len(old):]
            renamed[key] = value
        return renamed

    result = rename(state_dict)
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        result._metadata = rename(metadata)
    return result


def rename_prefix_in_place(state_dict: dict, prefix: str, old: str,
                           new: str) -> None:
    """``rename_prefix`` for keys under ``prefix`` of a (sub)state_dict that
    ``nn.Module._load_from_state_dict`` is about to read."""
    local = {k[len(prefix):]: v for k, v in state_dict.items()
             if k.startswith(prefix)}
    renamed = rename_prefix(local, old, new)
    if renamed is local:
        return
    for key in local:
        del state_dict[prefix + key]
    for key, value in renamed.items():
        state_dict[prefix + key] = value
