"""Tests of the chart area (a package, so module names never collide with other folders)."""
