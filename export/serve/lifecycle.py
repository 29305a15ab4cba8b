"""The version lifecycle, as TF Serving's: the states a version goes through, the aspired-version
policy as a pure function of what the manager sees, and when a failed load may be tried again.

Nothing here holds a lock, a thread or a file: the manager (``zoo.export.serve.manager``) gathers
what it sees into :class:`Seen` values, asks :func:`next_actions` what to do, does it, and asks again
until the answer is nothing. TF Serving splits the same way (``AspiredVersionPolicy::GetNextAction``
beside the ``AspiredVersionsManager`` that carries the actions out).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence


class State(enum.StrEnum):
    """``ModelVersionStatus.State`` of TF Serving's GetModelStatus (the names are the wire's)."""

    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


@dataclasses.dataclass(frozen=True)
class Seen:
    """One version known to the manager, as the policy needs it."""

    state: State
    failed: bool = False  # END because its load failed (not because it was unloaded)
    retry_due: bool = False  # failed, and allowed to be loaded again now
    on_disk: bool = True  # its directory is still there


@dataclasses.dataclass(frozen=True)
class Action:
    kind: str  # "load" or "unload"
    version: int


def next_actions(aspired: Sequence[int], current: Mapping[int, Seen]) -> list[Action]:
    """What to do now, availability first.

    * Load every aspired version that is not known yet, that was unloaded and is aspired again (a
      rollback: the newer version's directory was deleted), or that failed and is due for a retry;
      newest first, as TF Serving loads the highest new version first.
    * Unload a version that is no longer aspired once some aspired version is AVAILABLE, so a model
      is never left without a version while its replacement loads or after the replacement failed;
      a version whose directory is gone is unloaded at once.
    * Versions LOADING or UNLOADING are left to finish; END versions need nothing.

    Unloads are judged on the states as they are now: a version loaded by this round's actions
    retires the one it replaces in the next round.
    """
    wanted = set(aspired)
    loads = [Action("load", n) for n in sorted(wanted, reverse=True)
             if n not in current or (current[n].state == State.END and (current[n].retry_due or not current[n].failed))]
    replaced = any(current[n].state == State.AVAILABLE for n in wanted if n in current)
    unloads = [Action("unload", n) for n, seen in sorted(current.items())
               if n not in wanted and seen.state == State.AVAILABLE and (replaced or not seen.on_disk)]
    return loads + unloads


def retry_due(failures: int, failed_at: float, now: float, max_retries: int, interval: float) -> bool:
    """Whether a version whose loads failed ``failures`` times (the last at ``failed_at``) may be tried
    again at ``now``: at most ``max_retries`` retries (TF Serving's ``--max_num_load_retries``), the
    k-th one ``interval * 2**(k-1)`` seconds after the failure before it (``--load_retry_interval_micros``
    is the first wait)."""
    if failures < 1 or failures > max_retries:
        return False
    return now >= failed_at + interval * 2 ** (failures - 1)
