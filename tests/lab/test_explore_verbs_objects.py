"""scripts/explore_verbs_objects.py (issue 16's exploration): its banks use only vocabulary words and split cleanly."""

from __future__ import annotations

import tiedlib.lab.banks as B
import tiedlib.lab.corpus as C
from tests.helpers_findings import load_script
from tiedlib.lab.tokenizer import build_vocab


def test_verb_object_banks_are_in_the_vocabulary_and_disjoint(monkeypatch):
    script = load_script("explore_verbs_objects.py", "explore_verbs_objects")
    vocab = set(build_vocab())
    words = {w for phrase in (*script.HARMFUL_VERBS, *script.HARMLESS_VERBS, *script.OBJECTS) for w in phrase.split()}
    assert {w for w in words if f" {w}" not in vocab} == set()
    monkeypatch.setattr(B, "HARMFUL_ACTIONS", B.HARMFUL_ACTIONS)
    monkeypatch.setattr(B, "HARMLESS_ACTIONS", B.HARMLESS_ACTIONS)
    monkeypatch.setitem(C.REQUEST_ACTIONS, "harmful", C.REQUEST_ACTIONS["harmful"])
    monkeypatch.setitem(C.REQUEST_ACTIONS, "harmless", C.REQUEST_ACTIONS["harmless"])
    script.use_verb_object_banks()
    harmful, harmless = C.REQUEST_ACTIONS["harmful"], C.REQUEST_ACTIONS["harmless"]
    assert len(set(harmful)) == len(set(harmless)) == 72 and not set(harmful) & set(harmless)
    # Only the verb differs: every object appears after every verb on both sides.
    for verbs, actions in ((script.HARMFUL_VERBS, harmful), (script.HARMLESS_VERBS, harmless)):
        for verb in verbs:
            assert {a.removeprefix(f"{verb} ") for a in actions if a.startswith(f"{verb} ")} == set(script.OBJECTS)
