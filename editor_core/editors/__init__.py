"""Editors as plug-ins: importing this package registers every built-in one."""

from .base import Editor, get_editor, load_editor, register_editor, registered
from .mend import MEND, MENDConfig

__all__ = ["Editor", "MEND", "MENDConfig", "get_editor", "load_editor", "register_editor", "registered"]
