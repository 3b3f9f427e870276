"""Test support: real server processes and the backends they run on."""
