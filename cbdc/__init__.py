"""The `cbdc` operator CLI: run, demo, audit and benchmark the system."""
