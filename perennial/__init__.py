"""perennial"""


def package_version() -> str:
    """The installed distribution's version (pyproject.toml), or "unknown" when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("perennial")
    except PackageNotFoundError:
        return "unknown"
