"""The runtools data model: pure values, no I/O."""

from runtools.model.run import RunRecord
from runtools.model.status import Outcome, Stage, State, Status

__all__ = ["Outcome", "RunRecord", "Stage", "State", "Status"]
