"""The REST feature server: ``create_app(store)`` builds the FastAPI app; ``FeatureClient`` calls it.

Nothing here is imported by ``featurestore`` itself, so the SDK and the CLI start without FastAPI.
"""
