"""nspvend's controller: vending logic, stock, ledger, hub link, control socket and CLI."""

__version__ = "0.1.0"
