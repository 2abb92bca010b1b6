"""Deployable artifacts from a fitted run: TF Serving SavedModels and LiteRT edge bundles."""
