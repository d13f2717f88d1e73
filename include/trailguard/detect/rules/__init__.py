"""The per-event detections, one module per ATT&CK tactic. Importing this package registers every rule.

Each rule is declared with :func:`trailguard.detect.registry.rule` next to its code: id, ATT&CK technique,
score, title, runbook line, where it can fire. The order of the imports below is the catalogue's order.
"""

from trailguard.detect.rules import initial_access  # noqa: F401, I001  (imported for its registrations)
from trailguard.detect.rules import defense_evasion  # noqa: F401
from trailguard.detect.rules import persistence  # noqa: F401
from trailguard.detect.rules import exposure  # noqa: F401
from trailguard.detect.rules import credential_access  # noqa: F401
from trailguard.detect.rules import execution  # noqa: F401
from trailguard.detect.rules import impact  # noqa: F401
