"""Tests of the e2e area (a package, so module names never collide with other folders)."""
