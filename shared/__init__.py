"""The protocol and plumbing both tiers use. Never imports a service package."""
