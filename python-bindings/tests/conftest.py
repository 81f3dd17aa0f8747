"""pytest configuration for the seqk bindings.

The C library is found through $SEQK_LIBRARY only (this file builds nothing).
When SEQK_LIBRARY is unset, or the library it names cannot be loaded, every
test is skipped with the reason.
"""

import os

import numpy as np
import pytest

_SKIP_REASON = None
if not os.environ.get("SEQK_LIBRARY"):
    _SKIP_REASON = (
        "SEQK_LIBRARY is not set: point it at a built libseqk.so, e.g. "
        "SEQK_LIBRARY=build/libseqk.so pytest python-bindings/tests "
        "(or run python-bindings/run_tests.sh build/libseqk.so)"
    )
else:
    try:
        import seqk  # noqa: F401
    except ImportError as e:
        _SKIP_REASON = "cannot import seqk with SEQK_LIBRARY=%s: %s" % (os.environ["SEQK_LIBRARY"], e)


def pytest_report_header(config):
    if _SKIP_REASON:
        return "seqk: SKIPPING EVERYTHING: " + _SKIP_REASON
    import seqk

    return "seqk %s from %s, library %s (version %s), backends %s" % (
        seqk.__version__,
        seqk.__file__,
        seqk.library_path,
        seqk.version(),
        seqk.backends(),
    )


def pytest_collection_modifyitems(config, items):
    if _SKIP_REASON:
        mark = pytest.mark.skip(reason=_SKIP_REASON)
        for item in items:
            item.add_marker(mark)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
