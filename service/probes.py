"""The fixed locality probe set: prompts unrelated to any particular edit.

Locality on these is the agreement of the edited model's argmax answer tokens
with the unedited ones (teacher forced on the answers below), so an edit that
leaks into general knowledge shows up even when a request brings no locality
pairs of its own. Plain facts across several relations, chosen so that a small
model such as SmolLM2-135M knows most of them.
"""

from __future__ import annotations

from editor_core.records import Probe

PROBES: tuple[Probe, ...] = (
    Probe("The capital of France is", "Paris"),
    Probe("The capital of Japan is", "Tokyo"),
    Probe("The largest planet in the solar system is", "Jupiter"),
    Probe("Water is made of hydrogen and", "oxygen"),
    Probe("The author of Romeo and Juliet is William", "Shakespeare"),
    Probe("The chemical symbol for gold is", "Au"),
    Probe("The first man to walk on the Moon was Neil", "Armstrong"),
    Probe("The Great Wall is located in", "China"),
    Probe("The currency of the United Kingdom is the pound", "sterling"),
    Probe("Mount Everest is the highest mountain in the", "world"),
    Probe("The theory of relativity was developed by Albert", "Einstein"),
    Probe("The official language of Brazil is", "Portuguese"),
    Probe("A week has seven", "days"),
    Probe("The Mona Lisa was painted by Leonardo da", "Vinci"),
    Probe("The boiling point of water at sea level is 100 degrees", "Celsius"),
    Probe("The river that flows through Cairo is the", "Nile"),
)
