"""Identities of the paper: hardware, host, artefact, image and runtime IDs."""
