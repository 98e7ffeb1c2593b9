"""instructedit's science: models, the MEND/InstructEdit editor, deltas, data, metrics.

No HTTP and no Redis here: `service` builds on this package, never the reverse.
"""

__version__ = "0.1.0"
