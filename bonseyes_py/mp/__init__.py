"""The Marketplace (MP): artefact registration (step 1 of the paper), the OCI registry it pushes to,
and the catalogue of registered artefacts with their SM-signed artefact and image IDs."""
