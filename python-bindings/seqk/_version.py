"""The package's version: always the version of the C library it binds.

The import checks that the loaded libseqk reports the same
SEQK_VERSION_NUMBER (MAJOR*10000 + MINOR*100 + PATCH)."""

__version__ = "0.1.0"


def version_number(version=__version__):
    """'MAJOR.MINOR.PATCH' -> MAJOR*10000 + MINOR*100 + PATCH (as in seqk.h)."""
    major, minor, patch = (int(p) for p in version.split(".")[:3])
    return major * 10000 + minor * 100 + patch
