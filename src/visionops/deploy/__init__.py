"""``visionops deploy``: manifests that run a bundle's serving image on Kubernetes or Cloud Run.

``needs`` measures what one replica takes, ``manifests`` builds the resources, ``stage``
resolves the bundle and settings and writes the files. Used by the CLI only.
"""
