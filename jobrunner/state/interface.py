"""`State`: the one interface to everything jobrunner keeps outside the project.

Its domain methods (runs, slots, budgets, pauses, ledger, approvals, alerts, outbox) are
the mixins' portable SQL; a backend adds connections, its schema, locks and traces. To add
a backend: subclass `State`, implement the `Backend` surface and `lock`, and run
`tests/state_contract.py` against it.
"""

from __future__ import annotations

from jobrunner.state.effects import EffectsMixin
from jobrunner.state.outbox import OutboxMixin
from jobrunner.state.runs import RunsMixin


class State(RunsMixin, EffectsMixin, OutboxMixin):
    """The state of one project, as every backend provides it."""
