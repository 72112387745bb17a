"""`State`: the one interface to everything jobrunner keeps outside the project.

Its domain methods (runs, slots, budgets, pauses, ledger, approvals, alerts, outbox,
shared memory versions) are
the mixins' portable SQL; a backend adds connections, its schema, locks and traces. To add
a backend: subclass `State`, implement the `Backend` surface and `lock`, and run
`tests/state_contract.py` against it.
"""

from __future__ import annotations

from jobrunner.state.effects import EffectsMixin
from jobrunner.state.memories import MemoriesMixin
from jobrunner.state.outbox import OutboxMixin
from jobrunner.state.runs import RunsMixin


class State(RunsMixin, EffectsMixin, OutboxMixin, MemoriesMixin):
    """The state of one project, as every backend provides it."""
