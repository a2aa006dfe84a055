"""The diffusion tests run tiny networks: all of them use one torch thread (see ``one_thread``)."""

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread: None) -> None:
    """Applies the shared ``one_thread`` fixture to every test in this folder."""
