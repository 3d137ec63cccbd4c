"""The engine's gRPC surface: `EngineService`, split by concern into mixins composed in `servicer.py`."""
