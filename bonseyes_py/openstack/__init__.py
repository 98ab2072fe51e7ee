"""OpenStack provisioning of virtual premises (the paper's HPCaaS deployment), for ``bonseyes deploy``."""
