"""nspvend's controller: vending logic, stock, ledger, hub link, control socket and CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nspvend")  # pyproject.toml's, as installed: one place to change it
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
