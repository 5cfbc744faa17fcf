"""The end-user sample wallet: keystore, coin selection, CLI and a small local web page."""
