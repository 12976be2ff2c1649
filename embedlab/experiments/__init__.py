"""Experiments that take a store or an encoder and return tidy tables: sweeps, compression tiers."""
