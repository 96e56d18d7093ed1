"""runcue: an embedded asyncio scheduler for rate-limited work with artifact checks.

`runtools.cue` is the engine; the `runcue` package re-exports it unchanged.
"""

from runtools.cue.engine import Cue
from runtools.cue.models import PriorityContext, TaskType, WorkState, WorkUnit
from runtools.cue.rates import parse_rate

__all__ = ["Cue", "PriorityContext", "TaskType", "WorkState", "WorkUnit", "parse_rate"]
