import pytest

from core.registry import MODELS, Registry, build


def test_unknown_name_names_registry_and_suggests_closest():
    reg = Registry("WIDGETS")

    @reg.register()
    class UNetBaseline:
        def __init__(self, width=1):
            self.width = width

    with pytest.raises(KeyError) as e:
        reg.get("UNetBaselin")
    msg = str(e.value)
    assert "WIDGETS" in msg and "'UNetBaselin'" in msg and "did you mean 'UNetBaseline'" in msg


def test_build_passes_kwargs_and_requires_name():
    reg = Registry("THINGS")

    @reg.register()
    class Thing:
        def __init__(self, a, b=2):
            self.a, self.b = a, b

    t = build(reg, {"name": "Thing", "a": 5}, b=7)
    assert (t.a, t.b) == (5, 7)
    with pytest.raises(KeyError, match="no 'name'"):
        build(reg, {"a": 1})


def test_duplicate_registration_is_refused():
    reg = Registry("DUPS")

    @reg.register()
    class A:
        pass

    with pytest.raises(AssertionError):
        reg.register(A)


def test_models_registry_holds_baseline_after_import():
    import models  # noqa: F401

    assert "UNetBaseline" in MODELS.names()
