"""Optional progress bars (tqdm to stderr when installed, a silent stand-in otherwise).

tqdm is an optional dependency (extra ``progress``). Nothing in the package requires it: with
``progress=False`` or without tqdm installed, :func:`progress_bar` returns an object with the
same small interface (``update``, ``set_postfix_str``, ``close``, context manager) that does
nothing.
"""

from __future__ import annotations

import sys

__all__ = ["progress_bar", "have_tqdm", "fmt_time"]


def fmt_time(s: float) -> str:
    """A duration for a progress line: ``1.23 s``, ``2.5 min`` from 100 s on."""
    return f"{s:.2f} s" if s < 100 else f"{s / 60:.1f} min"


class _NullBar:
    """Stand-in for a tqdm bar that prints nothing."""

    def __init__(self, total=None, initial=0):
        self.total = total
        self.n = initial

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, s="", refresh=True):
        pass

    def set_description(self, desc=None, refresh=True):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def have_tqdm() -> bool:
    """Whether tqdm can be imported."""
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def progress_bar(total=None, *, desc=None, enable=True, unit="it", initial=0):
    """A progress bar on stderr, or a silent stand-in.

    Parameters
    ----------
    total : int or None
        Number of steps expected.
    desc : str, optional
        Label shown before the bar.
    enable : bool, default=True
        ``False`` returns the silent stand-in.
    unit : str, default="it"
        Unit name shown by tqdm.
    initial : int, default=0
        Steps already done (for a resumed job).

    Returns
    -------
    bar
        A ``tqdm.tqdm`` instance or a silent object with the same basic methods.
    """
    if not enable:
        return _NullBar(total, initial)
    try:
        from tqdm import tqdm
    except ImportError:
        return _NullBar(total, initial)
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )
