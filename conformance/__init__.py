"""Conformance: the CapabilityStatement generated from what is implemented, and self-checks."""
