"""The artifact zoo (tests/runtime/zoo.py), built once for the runtime tests."""

import pytest


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    from runtime.zoo import build_zoo

    return build_zoo(tmp_path_factory.mktemp("zoo"))
