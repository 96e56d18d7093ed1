"""runcue's data types, re-exported from `runtools.cue.models`."""

from runtools.cue.models import PriorityContext, TaskType, WorkState, WorkUnit

__all__ = ["PriorityContext", "TaskType", "WorkState", "WorkUnit"]
