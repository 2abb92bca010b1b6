"""The stand-alone LiteRT edge runner, shipped inside every edge bundle (``autodl_edge.py``).

Installed as ``autodl.edge`` so that autodl copies the very file it tests; the
runner itself imports nothing from autodl.
"""
