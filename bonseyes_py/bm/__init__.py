"""The Bonseyes Module (BM): the agent on every host of a virtual premise (steps 2 to 6 of the paper).

It authenticates the host to the SM (heartbeat over mutual TLS), fetches and digests images for
the SM (step 3), asks for host licences (step 4), starts artefact containers with the licence and
runtime key handed to BL through a private read-only mount (step 5), and accepts the artefact
licence BL forwards only when it binds to the very runtime BM started (step 6).
"""
