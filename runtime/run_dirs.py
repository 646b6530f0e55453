"""Run directories: making one (never over another run's work), the lock that keeps a second process out, and
the files that describe a run (args.json, summary.json; dataset.json is inputs/data.py's), which --resume,
--dir, the evaluation scripts and the reports read back."""
import fcntl
import glob
import json
import os
from typing import Any, Dict, Optional

from runtime.checkpoint import atomic_write_text
from utils import UserError, json_number, reason


def read_run_args(run_dir: str, program: str) -> Dict[str, Any]:
    """The args.json of a run directory made by `program`, with a one-line error for anything else."""
    path = os.path.join(run_dir, 'args.json')
    if not os.path.isdir(run_dir):
        raise UserError(f"{run_dir} is not a directory")
    try:
        with open(path) as f:
            saved = json.load(f)
    except OSError:
        raise UserError(f"{run_dir} is not a {program}.py run directory (no args.json there)") from None
    except ValueError as e:
        raise UserError(f"cannot read {path}: {reason(e)}") from None
    found = saved.get('program') if isinstance(saved, dict) else None
    if found != program:
        hint = {'train_search': f"; train its architecture first: python train.py --dir {run_dir}",
                'train': f"; evaluate it with: python test_cifar.py --dir {run_dir}",
                'train_imagenet': f"; evaluate it with: python test_imagenet.py --dir {run_dir}"}.get(found, '')
        made_by = f"a {found}.py run" if found else "a directory whose args.json names no script"
        raise UserError(f"{run_dir} is {made_by}, not a {program}.py run{hint}")
    return saved




class RunLock:
    """An exclusive lock on a run directory, so two processes never write the same run at once.

    It is an advisory lock (fcntl.flock) on RUN_DIR/.lock, released by the OS when the process dies, so a
    crashed run never leaves a stale lock behind.
    """

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, '.lock')
        self.file = None

    def __enter__(self) -> 'RunLock':
        self.file = open(self.path, 'a+')
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            owner = self.file.read().strip() or 'another process'
            self.file.close()
            self.file = None
            raise UserError(f"{os.path.dirname(self.path)} is in use by {owner}; wait for it to finish or "
                            f"stop it first") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}\n")
        self.file.flush()
        # Temporary files of an atomic write that a crash interrupted: holding the lock, nobody writes them.
        for stale in glob.glob(os.path.join(os.path.dirname(self.path), '.*.tmp')):
            os.unlink(stale)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def new_run_dir(path: str, program: str, checkpoint_name: str = 'checkpoint.pt', reuse: bool = False) -> str:
    """Create the directory of a new run. An existing one is reused when it holds no checkpoint and is a
    start of the same script (one that failed before its first generation or epoch completed, so that the
    same command can simply be run again); with a checkpoint it is an error (continue it with --resume), and
    so is any other non-empty directory. `reuse` skips the checks (a restarted job before its first
    checkpoint)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{path} exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path) and not reuse:
        if os.path.exists(os.path.join(path, checkpoint_name)):
            raise UserError(f"run directory {path} already holds a run with completed work; continue it with "
                            f"--resume {path} or choose another directory")
        if run_program(path) != program:
            raise UserError(f"{path} exists and is not a run directory of {program}.py; choose another directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create run directory {path}: {e.strerror}") from None
    return path


def save_args(run_dir: str, program: str, values: Dict[str, Any]) -> None:
    """The resolved arguments of a run (`vars(args)`), as RUN_DIR/args.json (read back by --resume)."""
    atomic_write_text(os.path.join(run_dir, 'args.json'), json.dumps({'program': program, **values}, indent=1) + '\n')




def save_summary(run_dir: str, summary: Dict[str, Any]) -> None:
    """RUN_DIR/summary.json: what a finished training run reached. NaN (top-5 of fewer than 6 classes) is
    not JSON, so it is written as null."""
    summary = {k: json_number(v) if isinstance(v, float) else v for k, v in summary.items()}
    atomic_write_text(os.path.join(run_dir, 'summary.json'), json.dumps(summary, indent=1, allow_nan=False) + '\n')


def run_program(run_dir: str) -> Optional[str]:
    """The script that made a run directory, from its args.json (None without a readable one)."""
    try:
        with open(os.path.join(run_dir, 'args.json')) as f:
            program = json.load(f).get('program')
    except (OSError, ValueError, AttributeError):
        return None
    return program if isinstance(program, str) else None
