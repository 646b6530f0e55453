"""What a run shows while it runs: its log (the terminal and RUN_DIR/log.txt), TensorBoard scalars when
tensorboard is installed, and the elapsed and remaining time."""
import logging
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:  # tensorboard is optional
    from torch.utils.tensorboard import SummaryWriter


def format_duration(seconds: float) -> str:
    """7s, 3m05s, 2h07m; from two days up in days (what --plan projects for a whole run)."""
    if not math.isfinite(seconds):
        return '?'
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def setup_logger(name: str, run_dir: Optional[str] = None, enabled: bool = True) -> logging.Logger:
    """A named logger writing to stdout and, with a run directory, to run_dir/log.txt (appending on resume)."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if enabled else logging.WARNING)
    logger.propagate = False
    formatter = logging.Formatter('%(asctime)s %(message)s', datefmt='%m/%d %H:%M:%S')
    handlers = [logging.StreamHandler(sys.stdout)]
    if run_dir is not None and enabled:
        handlers.append(logging.FileHandler(os.path.join(run_dir, 'log.txt')))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


def close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        handler.flush()
        logger.removeHandler(handler)
        handler.close()


class Timer:
    """Elapsed time and a linear estimate of the time remaining."""

    def __init__(self):
        self.start = time.time()

    def elapsed(self) -> float:
        return time.time() - self.start

    def remaining(self, done: float, total: float) -> float:
        return self.elapsed() / done * (total - done) if done > 0 else float('nan')


def summary_writer(log_dir: str, logger: logging.Logger) -> Optional['SummaryWriter']:
    """A TensorBoard SummaryWriter when tensorboard is installed, else None (and one line in the log)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed, so no TensorBoard scalars are written (pip install tensorboard); "
                    "log.txt and the run's JSON files hold the same numbers")
        return None
    return SummaryWriter(log_dir)


def add_scalars(writer: Optional['SummaryWriter'], row: dict, keys: Sequence[str], step: int) -> None:
    """row[key] for each key to TensorBoard as 'train_loss' -> train/loss (nothing without a writer)."""
    if writer is None:
        return
    for key in keys:
        if not (isinstance(row[key], float) and math.isnan(row[key])):  # top-5 of fewer than 6 classes
            writer.add_scalar(key.replace('_', '/', 1), row[key], step)
    writer.flush()
