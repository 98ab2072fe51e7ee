"""The Bonseyes Layer (BL): the entrypoint the MP injects into every artefact image (step 5)."""
