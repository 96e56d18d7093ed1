"""The runtools data model: pure values, no I/O."""

from runtools.model.status import Outcome, Stage, State, Status
from runtools.model.run import RunRecord

__all__ = ["Outcome", "RunRecord", "Stage", "State", "Status"]
