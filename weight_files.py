"""Weights of a trained network: the state_dict inside any accepted file (the published CIFAR and ImageNet
files, this project's runs), loaded strictly, with one line naming the keys that do not match."""
import os
from typing import Any, Dict, Mapping, Sequence

import torch
import torch.nn as nn

from checkpoint import load_checkpoint
from utils import UserError


def clean_state_dict(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """Strip the `module.` prefix of DataParallel/DDP and the `_orig_mod.` prefix of torch.compile."""
    cleaned = {}
    for key, value in state_dict.items():
        for prefix in ('module.', '_orig_mod.'):
            while key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    return cleaned


def extract_state_dict(checkpoint: Any, path: str) -> Dict[str, torch.Tensor]:
    """The weights inside any accepted checkpoint form: a bare state_dict (the published CIFAR files), a dict
    holding `state_dict` (the published ImageNet `.pth.tar`), or this project's checkpoints (`model`)."""
    if isinstance(checkpoint, Mapping):
        for key in ('state_dict', 'model'):
            if isinstance(checkpoint.get(key), Mapping):
                checkpoint = checkpoint[key]
                break
        if checkpoint and all(isinstance(k, str) and torch.is_tensor(v) for k, v in checkpoint.items()):
            return clean_state_dict(checkpoint)
    raise UserError(f"{path} holds no state_dict (expected a dict of tensors, or a dict with a 'state_dict' "
                    f"or 'model' entry)")


def _shape(value) -> str:
    return 'x'.join(str(s) for s in value.shape) or 'scalar'


def load_weights_strict(model: nn.Module, state_dict: Dict[str, torch.Tensor], expected: str,
                        drop_prefixes: Sequence[str] = ()) -> None:
    """Load with strict key and shape checks, reporting the first offending keys and what was expected.

    Keys under `drop_prefixes` are ignored when the model has none of them (e.g. the auxiliary head of a
    published checkpoint evaluated without --auxiliary).
    """
    own = model.state_dict()
    state_dict = {k: v for k, v in state_dict.items()
                  if not (k.startswith(tuple(drop_prefixes)) and k not in own)} if drop_prefixes else state_dict
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f"{k} (file {_shape(state_dict[k])}, model {_shape(own[k])})"
                  for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    problems = []
    for label, keys in (('missing keys', missing), ('unexpected keys', unexpected),
                        ('mis-shaped keys', mismatched)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ''
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{more}")
    if problems:
        raise UserError(f"checkpoint does not match {expected}: " + '; '.join(problems))
    model.load_state_dict(state_dict, strict=True)


def read_weights_file(path: str) -> Dict[str, torch.Tensor]:
    """The state_dict in the checkpoint at `path`, in any accepted form; a search checkpoint is named as such
    (it holds a supernet, not a network that can be evaluated)."""
    state = load_checkpoint(path, map_location='cpu')
    if isinstance(state, Mapping) and str(state.get('format', '')).startswith('evnas-search'):
        raise UserError(f"{path} is a supernet checkpoint of train_search.py, not a trained network; train the "
                        f"architecture it found first: python train.py --dir {os.path.dirname(path) or '.'}")
    return extract_state_dict(state, path)


def load_weights_file(model: nn.Module, state_dict: Dict[str, torch.Tensor], expected: str) -> None:
    """Weights read by read_weights_file into `model`, strictly (load_weights_strict; the auxiliary head's
    keys are dropped when the model has none)."""
    load_weights_strict(model, state_dict, expected, drop_prefixes=('auxiliary_head.',))
