"""Editors as plug-ins: importing this package registers every built-in one
(`mend`, `ft-l`, `locft-bf`). Build one by tag with `build_editor`, read a saved one with
`load_editor` (see base.py for how to add an editor)."""

from .base import Editor, build_editor, get_editor, load_editor, register_editor, registered
from .ftl import FTL, FTLConfig
from .locft import LocFT, LocFTConfig
from .mend import MEND, MENDConfig

# What runs when there is no trained editor (`--editor untrained`, a service with
# allow_untrained_editor): MEND at initialization, with MENDConfig's defaults,
# instructed like the shipped editor, so requests are checked the same way.
UNTRAINED = "mend"


def untrained_editor(model) -> Editor:
    """The editor to use when no trained one is at hand (its edits barely move the model)."""
    return build_editor(UNTRAINED, model)


__all__ = [
    "FTL", "MEND", "UNTRAINED", "Editor", "FTLConfig", "LocFT", "LocFTConfig", "MENDConfig", "build_editor", "get_editor",
    "load_editor", "register_editor", "registered", "untrained_editor",
]
