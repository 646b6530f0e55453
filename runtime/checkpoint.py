"""Checkpoints: atomic writes, safe reads (`weights_only=True`, each zip record's CRC-32 checked, a checksum of
the contents), and what a run's checkpoint restores (the model, optimiser, random streams), checked to belong
to the run.

Nothing here pickles project classes: a checkpoint holds tensors, numbers, strings, lists and dicts, so any
of them loads with `torch.load(weights_only=True)`, which refuses to run code.
"""
import hashlib
import os
import random
import sys
import tempfile
import zipfile
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from runtime.stopping import fault_point
from utils import UserError, reason

MapLocation = Union[str, torch.device, None]  # torch.load's map_location


def _atomic_write(path: str, write, fault_tag: int = -1) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`: a crash at any
    moment leaves either the old file or the new one, never a mixture. A failed write (disk full, read-only
    directory) is a UserError, and the old file is untouched."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=directory)
        # mkstemp makes the file 0600; a run's files should be as readable as log.txt (the umask decides),
        # so that a colleague on a shared machine can load them.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            fault_point('write', fault_tag)  # tests kill the process here, mid-write
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}; the previous version of the file, if any, "
                        f"is intact") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


CHECKSUM_KEY = 'sha256'


def checksum(obj: Any) -> str:
    """SHA-256 over a checkpoint's structure and every tensor's bytes. torch.load does not notice flipped
    bytes inside tensor data; this does."""
    digest = hashlib.sha256()

    def visit(value):
        if torch.is_tensor(value):
            t = value.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, Mapping):
            digest.update(b'{')
            for key, item in value.items():
                digest.update(repr(key).encode())
                visit(item)
            digest.update(b'}')
        elif isinstance(value, (list, tuple)):
            digest.update(b'[')
            for item in value:
                visit(item)
            digest.update(b']')
        else:
            digest.update(repr(value).encode())
    visit(obj)
    return digest.hexdigest()


def atomic_save(obj: Any, path: str, with_checksum: bool = True, fault_tag: int = -1) -> None:
    """torch.save, atomically. A dict gets a checksum entry that load_checkpoint verifies (leave it out for
    files that must stay bare state_dicts, such as weights.pt). `fault_tag` (the generation or epoch) lets
    the fault-injection tests pick which write to interrupt."""
    if with_checksum and isinstance(obj, dict):
        obj = {**obj, CHECKSUM_KEY: checksum(obj)}
    _atomic_write(path, lambda f: torch.save(obj, f), fault_tag)


def atomic_write_text(path: str, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_bytes(path: str, content: bytes) -> None:
    _atomic_write(path, lambda f: f.write(content))


def load_checkpoint(path: str, map_location: MapLocation = None) -> Any:
    """torch.load(weights_only=True) with one clear error line for a missing, damaged or foreign file."""
    if os.path.isdir(path):
        raise UserError(f"{path} is a directory, not a checkpoint file")
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} does not exist")
    if os.path.getsize(path) == 0:
        raise UserError(f"checkpoint {path} is empty")
    has_crcs = _check_zip_records(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, damaged headers, a pickle with code in it, ...
        # The first sentence: torch's messages run on for paragraphs, and a cut would end mid-sentence.
        reason = str(e).strip().splitlines()[0].split('. ')[0].rstrip('.') if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load checkpoint {path}: not a readable PyTorch checkpoint, or one that holds "
                        f"more than weights ({reason})") from None
    if isinstance(state, dict) and CHECKSUM_KEY in state:
        expected = state.pop(CHECKSUM_KEY)
        if checksum(state) != expected:
            raise UserError(f"checkpoint {path} is damaged: its contents do not match the checksum written with it")
    elif not has_crcs:
        print(f"note: {path} is in PyTorch's legacy (pre-1.6) format, which carries no checksum: damage inside its "
              f"tensors cannot be detected", file=sys.stderr)
    return state


def _check_zip_records(path: str) -> bool:
    """Check every record of a zip-format torch file against the CRC-32 stored with it (torch.load does not,
    so a flipped byte inside a tensor would load silently); False for PyTorch's legacy format, which has none.
    A damaged record is a UserError. A stored CRC of 0 on a non-empty record means that none was written
    (torch.save can skip computing them), and that record is not checked."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            for record in archive.infolist():
                if record.CRC == 0 and record.file_size:
                    continue
                try:
                    with archive.open(record) as f:  # zipfile compares the CRC once the record is read whole
                        while f.read(1 << 24):
                            pass
                except zipfile.BadZipFile as e:
                    what = ('does not match the CRC-32 written with it' if 'CRC' in str(e)
                            else f"cannot be read ({str(e).rstrip('.')})")
                    raise UserError(f"checkpoint {path} is damaged: its record {record.filename} {what}") from None
                except Exception as e:  # a damaged local header: wrong name encoding, sizes, compression, ...
                    raise UserError(f"checkpoint {path} is damaged: its record {record.filename} cannot be read "
                                    f"({reason(e)})") from None
    except (zipfile.BadZipFile, OSError):
        return False  # not a readable zip after all: torch.load names the problem
    return True


def rng_state() -> Dict[str, Any]:
    """Every global random stream (Python, NumPy, torch CPU and CUDA) in a weights_only-safe form."""
    py_version, py_internal, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        'python': [py_version, list(py_internal), py_gauss],
        'numpy': {'keys': torch.from_numpy(np_state[1].astype(np.int64)), 'pos': int(np_state[2]),
                  'has_gauss': int(np_state[3]), 'cached_gaussian': float(np_state[4])},
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    py_version, py_internal, py_gauss = state['python']
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_state = state['numpy']
    np.random.set_state(('MT19937', np_state['keys'].numpy().astype(np.uint32), np_state['pos'],
                         np_state['has_gauss'], np_state['cached_gaussian']))
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])


def restore_run(state: Dict[str, Any], rank: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                scaler: Optional[torch.amp.GradScaler] = None, model_key: str = 'model', **stateful: Any) -> None:
    """Put a run checkpoint back: the model, the optimizer, the gradient scaler (when the run has one), each
    further stateful object under its key (a scheduler, a torch.Generator), and this rank's random streams."""
    model.load_state_dict(state[model_key])
    optimizer.load_state_dict(state['optimizer'])
    if scaler is not None and state.get('scaler'):
        scaler.load_state_dict(state['scaler'])
    for key, obj in stateful.items():
        (obj.set_state if isinstance(obj, torch.Generator) else obj.load_state_dict)(state[key])
    set_rng_state(state['rng'][min(rank, len(state['rng']) - 1)])  # one state per rank


def load_run_checkpoint(run_dir: str, fmt: str, run_args: Dict[str, Any], may_change: Iterable[str],
                        map_location: MapLocation = 'cpu',
                        checkpoint_name: str = 'checkpoint.pt') -> Dict[str, Any]:
    """RUN_DIR/checkpoint.pt, checked to be of format `fmt` and made with the same run-defining arguments as
    `run_args` (the run's args.json, as `vars(args)`), except those in `may_change`."""
    path = os.path.join(run_dir, checkpoint_name)
    state = load_checkpoint(path, map_location=map_location)
    if not isinstance(state, dict) or state.get('format') != fmt:
        raise UserError(f"{path} is not a {fmt.split('/')[0]} checkpoint")
    for name, value in run_args.items():
        if name not in may_change and name in state.get('args', {}) and state['args'][name] != value:
            raise UserError(f"{path} was made with --{name} {state['args'][name]}, not {value} as args.json says")
    return state


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
