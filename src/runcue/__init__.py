"""runcue: embedded asyncio scheduling for rate-limited services (a face over `runtools.cue`)."""

from runcue import models
from runtools.cue import Cue, PriorityContext, TaskType, WorkState, WorkUnit

__all__ = ["Cue", "PriorityContext", "TaskType", "WorkState", "WorkUnit", "models"]
