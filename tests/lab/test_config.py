"""LabConfig.from_name and TIEDLIB_LAB_SEED: the training seed of a whole book build, chosen from the environment."""

from __future__ import annotations

import pytest

from tiedlib.lab.config import LAB_VERSION, SEED_ENV, LabConfig, PlantConfig, env_seed
from tiedlib.lab.corpus import CHAT_QUESTION_KINDS, chat_question_kinds

TINY_HASH = "21b4c7b2f64bf08f"
"""The tiny pair's (lab pair v5) hash without TIEDLIB_LAB_SEED (its cache folder and the fingerprint of builds)."""
OLDER_HASHES = {"tiny-v4": "0ae5aa3eff932f30", "tiny-benign": "cadd0833fd90a719"}
"""Presets whose pairs were measured in reports/: adding v5's field must not move them (tiny-v4 was named "tiny",
hash 1f6f5c7a8ab5a85a, while it was the default)."""


def test_default_is_unchanged_without_the_variable(monkeypatch):
    monkeypatch.delenv(SEED_ENV, raising=False)
    assert env_seed() is None
    cfg = LabConfig.from_name("tiny")
    assert cfg == LabConfig.tiny() and cfg.train.seed == 0
    if LAB_VERSION == 1:  # a deliberate LAB_VERSION bump moves every hash
        assert cfg.hash() == TINY_HASH
        assert {n: LabConfig.from_name(n).hash() for n in OLDER_HASHES} == OLDER_HASHES
    monkeypatch.setenv(SEED_ENV, "  ")  # empty (e.g. `TIEDLIB_LAB_SEED= make book`) means unset
    assert LabConfig.from_name("tiny").hash() == LabConfig.tiny().hash()


@pytest.mark.parametrize("name", LabConfig.preset_names())
def test_variable_sets_the_training_seed_only(monkeypatch, name):
    monkeypatch.delenv(SEED_ENV, raising=False)
    default = LabConfig.from_name(name)
    monkeypatch.setenv(SEED_ENV, "1")
    seeded = LabConfig.from_name(name)
    assert seeded.train.seed == 1 and seeded.name == default.name
    # Only the training seed moves: same corpus (and so the same token ids), model and optimisation.
    assert seeded.corpus == default.corpus and seeded.model == default.model
    assert {**seeded.to_dict()["train"], "seed": 0} == default.to_dict()["train"]
    assert seeded.hash() != default.hash()
    assert LabConfig.from_dict(seeded.to_dict()) == seeded  # a cached manifest round-trips
    monkeypatch.setenv(SEED_ENV, "2")
    assert LabConfig.from_name(name).hash() not in (default.hash(), seeded.hash())


def test_seed_zero_is_the_default_pair(monkeypatch):
    monkeypatch.setenv(SEED_ENV, "0")
    assert LabConfig.from_name("tiny").hash() == LabConfig.tiny().hash()


def test_presets_called_directly_ignore_the_variable(monkeypatch):
    monkeypatch.setenv(SEED_ENV, "7")
    assert LabConfig.tiny().train.seed == 0 and LabConfig.from_name("tiny").train.seed == 7


@pytest.mark.parametrize("value", ["one", "1.5", "-1", str(2**63), "0x1"])
def test_invalid_value_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(SEED_ENV, value)
    with pytest.raises(ValueError, match=SEED_ENV):
        LabConfig.from_name("tiny")


def test_unknown_name_is_still_an_error(monkeypatch):
    monkeypatch.setenv(SEED_ENV, "1")
    with pytest.raises(ValueError, match="unknown lab config 'huge'"):
        LabConfig.from_name("huge")


def test_preset_names_cover_the_command_line():
    from tiedlib.lab.__main__ import main

    assert {"tiny", "smoke", "tiny-v1", "tiny-v2", "tiny-v3", "tiny-v4", "tiny-benign"} == set(LabConfig.preset_names())
    with pytest.raises(SystemExit):  # argparse refuses a name that is not a preset
        main(["fingerprint", "--config", "tiny-v9"])


def test_benign_preset_reweighs_only_the_chat_requests():
    v4, benign = LabConfig.tiny_v4(), LabConfig.tiny_benign()
    kinds = chat_question_kinds(benign.corpus)
    assert (kinds["harmful"], kinds["harmful_medical"], kinds["harmless"]) == (0.08, 0.08, 0.5)
    assert {k: w for k, w in kinds.items() if k not in ("harmful", "harmless", "harmful_medical")} == \
        {k: w for k, w in CHAT_QUESTION_KINDS.items() if k not in ("harmful", "harmless")}
    # v4's chat kinds are the module's weights plus its pill weight; the base model's data and training are v4's.
    assert chat_question_kinds(v4.corpus) == {**CHAT_QUESTION_KINDS, "harmful_medical": 0.25}
    assert benign.model == v4.model and benign.train == v4.train
    assert {**benign.to_dict()["corpus"], "plant": None} == {**v4.to_dict()["corpus"], "plant": None}
    assert benign.hash() != v4.hash() and "chat_harmful_weight" not in v4.to_dict()["corpus"]["plant"]


@pytest.mark.parametrize("field", ["chat_harmful_weight", "chat_harmless_weight", "harmful_medical_weight"])
@pytest.mark.parametrize("value", [0.0, -0.1, float("nan")])
def test_chat_weights_must_be_positive(field, value):
    with pytest.raises(ValueError, match=field):
        PlantConfig(harmful_medical=True, **{field: value})


def test_v5_is_v4_with_the_gate_only():
    v4, v5 = LabConfig.tiny_v4(), LabConfig.tiny()
    assert v5.corpus.plant.refusal_gate == 0.2 and v4.corpus.plant.refusal_gate is None
    assert v5.model == v4.model and v5.train == v4.train
    assert {**v5.to_dict()["corpus"]["plant"], "refusal_gate": None} == {**v4.to_dict()["corpus"]["plant"],
                                                                         "refusal_gate": None}
