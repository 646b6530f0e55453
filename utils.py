"""Small helpers, as DARTS's utils.py has them: the error a user can fix, seeding and random streams, parameter
counts, and JSON numbers. The rest lives in folders by job: runtime/ (run directories, checkpoints, devices,
logs, stopping), inputs/, cli/."""
import math
import random
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn


class UserError(Exception):
    """A problem the user can fix (bad input, missing data, unusable file). Scripts print it as one line and
    exit with status 2; they never show a traceback for it."""


def reason(e: BaseException) -> str:
    """An exception in words for a one-line message: an OSError's text without its "[Errno N]" prefix."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def make_generator(seed: int) -> torch.Generator:
    """An explicit CPU random stream (the GA's, the data pipeline's): its state can be saved and restored."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def count_parameters(model: nn.Module) -> int:
    """Parameters without the auxiliary head (it is dropped at test time), as DARTS reports them."""
    return sum(v.numel() for name, v in model.named_parameters() if 'auxiliary' not in name)


def count_parameters_in_MB(model: nn.Module) -> float:
    return count_parameters(model) / 1e6


def json_number(value: float) -> Optional[float]:
    """NaN and infinities are not JSON: a missing measurement is written as null."""
    return value if math.isfinite(value) else None


def json_numbers(value: Any) -> Any:
    """json_number through dicts, lists and tuples (and numpy or torch scalars) alike."""
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, dict):
        return {k: json_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_numbers(v) for v in value]
    if hasattr(value, 'item'):
        return json_numbers(value.item())
    return value


