"""Load generation: the benchmark driver behind `cbdc bench`, and locustfiles."""
