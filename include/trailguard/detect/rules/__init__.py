"""The per-event detections, one module per ATT&CK tactic. Importing this package registers every rule.

Each rule is declared with :func:`trailguard.detect.registry.rule` next to its code: id, title, ATT&CK
technique, score, reason template, triage line, where it can fire and its test cases. A rule goes in the
module of its technique's tactic (a technique under several tactics: the one the rule is about). The
order of the imports below is the catalogue's order (ATT&CK's tactic order); labels do not depend on it.
"""

from trailguard.detect.rules import initial_access  # noqa: F401, I001  (imported for its registrations)
from trailguard.detect.rules import execution  # noqa: F401
from trailguard.detect.rules import persistence  # noqa: F401
from trailguard.detect.rules import defense_evasion  # noqa: F401
from trailguard.detect.rules import credential_access  # noqa: F401
from trailguard.detect.rules import discovery  # noqa: F401
from trailguard.detect.rules import lateral_movement  # noqa: F401
from trailguard.detect.rules import collection  # noqa: F401
from trailguard.detect.rules import exfiltration  # noqa: F401
from trailguard.detect.rules import impact  # noqa: F401
